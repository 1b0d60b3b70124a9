"""What the Python client repeats behind a proxy: a runner's session (patience) repeats a
write that a proxy answered 502 or 504 (the API process behind it died mid-request; the
job store reports a repeated change as applied), a plain session does not (a CLI command
could be repeated behind the user's back). The proxy is a loopback server answering as
nginx does when its upstream dies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from support.servers import loopback_server, send_json

from catalog_service.client.http import ApiError, HttpSession


class FlakyProxy:
    """Answers ``failures`` times with ``status``, then 200."""

    def __init__(self, status: int, failures: int) -> None:
        self.status = status
        self.left = failures
        self.calls = 0
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.calls += 1
                    failing = proxy.left > 0
                    proxy.left -= 1
                if failing:
                    send_json(self, b'{"detail": "bad gateway"}', proxy.status)
                else:
                    send_json(self, b'{"applied": [1]}')

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(params=[502, 504])
def proxy(request: pytest.FixtureRequest) -> Iterator[tuple[FlakyProxy, str]]:
    flaky = FlakyProxy(int(request.param), failures=2)
    with loopback_server(flaky.handler()) as port:
        yield flaky, f"http://127.0.0.1:{port}"


def test_a_runners_write_is_repeated_after_a_gateway_error(
    proxy: tuple[FlakyProxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky, url = proxy
    monkeypatch.setattr("catalog_service.client.http.time.sleep", lambda s: None)
    session = HttpSession(url, api_key="tk_x", patience_s=60)
    assert session.post("campaigns/c/jobs/changes", json={}) == {"applied": [1]}
    assert flaky.calls == 3


def test_a_plain_write_is_not_repeated_after_a_gateway_error(
    proxy: tuple[FlakyProxy, str],
) -> None:
    flaky, url = proxy
    session = HttpSession(url, api_key="tk_x")
    with pytest.raises(ApiError) as raised:
        session.post("campaigns", json={})
    assert raised.value.status == flaky.status
    assert flaky.calls == 1
