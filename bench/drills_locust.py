"""The fault drills' readers (bench/drills.py runs this through locust's command line).

bench/locustfile.py's readers, map viewers and dashboards, talking HTTPS to the cluster's
proxy and verifying its certificate against the cluster's CA (LOAD_CA): locust's
FastHttpUser verifies nothing by default (``insecure = True``); with ``insecure = False``
and an ``ssl_context_factory`` it checks the chain and the host name (127.0.0.1 is in
the server certificate). geventhttpclient calls the factory with ``cafile=`` its own
bundle (certifi), which is ignored here: only the cluster's CA is trusted."""

from __future__ import annotations

import os
from typing import Any

import gevent.ssl
import locustfile as base

CA = os.environ.get("LOAD_CA", "")


def cluster_tls(**_: Any) -> gevent.ssl.SSLContext:
    return gevent.ssl.create_default_context(cafile=CA)


class Reader(base.Reader):
    insecure = not CA
    ssl_context_factory = staticmethod(cluster_tls) if CA else None


class MapViewer(base.MapViewer):
    insecure = not CA
    ssl_context_factory = staticmethod(cluster_tls) if CA else None


class Dashboard(base.Dashboard):
    insecure = not CA
    ssl_context_factory = staticmethod(cluster_tls) if CA else None
