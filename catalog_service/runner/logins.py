"""Logging in to openEO back-ends the way openEO users already do.

No secret is stored in the catalogue: ``basic`` reads the openEO client's auth config
(``openeo-auth add-basic URL``), ``oidc`` uses client credentials from the
``OPENEO_AUTH_*`` variables or the client's refresh-token store (filled by one
interactive ``authenticate_oidc()``), and falls back to the device flow only on a
terminal. A back-end that offers no OIDC provider but has basic credentials in the auth
config is logged in with those (the local back-ends of the demo)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from openeo.rest import OpenEoApiError, OpenEoClientException
from openeo.rest.auth.config import AuthConfig
from openeo.rest.connection import Connection
from openeo.rest.connection import connect as openeo_connect
from openeo.utils.http import retry_configuration

from catalog_service.egress import AnswerLimits, EgressRefused, check_url, egress_session
from catalog_service.errors import TilekeeperError
from catalog_service.jobs.campaign import Backend
from catalog_service.remote_text import inert
from catalog_service.settings import RunnerSettings

logger = logging.getLogger(__name__)
# Network trouble: the back-end is down, not the login wrong.
UNREACHABLE = (requests.ConnectionError, requests.Timeout)
# One quick retry of a 502/503/504, none of a refused connection or a 429: the openEO
# client's default (3 retries, 2.5 s backoff, ~17 s per request) holds up a round for a
# back-end that is down or unhealthy; the runner instead counts the fault (see
# BackendLink) and polls it with backoff, and a 429 pauses its launches.
RUNNER_RETRY = retry_configuration(
    total=1, connect=0, backoff_factor=0.5, status_forcelist=(502, 503, 504)
)


class LoginFailed(TilekeeperError):
    """No usable credentials for a back-end; the message says what to do."""


class BackendDown(TilekeeperError):
    """The back-end does not answer; it gets no work until it does."""


def _basic_hint(backend: Backend) -> str:
    return (
        f"store them once with `openeo-auth add-basic {backend.url}` "
        "(the openEO client's auth config)"
    )


def _oidc_hint(backend: Backend) -> str:
    return (
        "log in once interactively so the openEO client stores a refresh token: "
        f"`python -c \"import openeo; openeo.connect('{backend.url}').authenticate_oidc()\"`, "
        "or set OPENEO_AUTH_METHOD=client_credentials with OPENEO_AUTH_CLIENT_ID and "
        "OPENEO_AUTH_CLIENT_SECRET"
    )


def has_basic_credentials(url: str) -> bool:
    username, _ = AuthConfig().get_basic_auth(backend=url)
    return username is not None


def login(backend: Backend, *, interactive: bool | None = None) -> Connection:
    """A connection to ``backend`` logged in as its ``auth`` says. Raises LoginFailed
    (credentials) or BackendDown (network)."""
    interactive = sys.stdin.isatty() if interactive is None else interactive
    settings = RunnerSettings()
    try:
        # Every request of the connection (its redirects, result downloads) goes through
        # the egress policy, and each answer has a deadline and a size cap.
        limits = AnswerLimits(
            settings.connect_timeout_s, settings.request_timeout_s, settings.max_answer_bytes
        )
        session = egress_session(retry=RUNNER_RETRY, limits=limits)
        connection = openeo_connect(
            backend.url,
            auto_validate=False,
            session=session,
            default_timeout=max(1, round(settings.request_timeout_s)),
        )
        # The client follows the back-end's version discovery (/.well-known/openeo)
        # wherever it points: credentials would then go to that host.
        if _origin(connection.root_url) != _origin(backend.url):
            raise BackendDown(
                f"back-end {backend.name} ({backend.url}): its version discovery points at "
                f"another host ({inert(_origin(connection.root_url), 200)}), not followed; "
                "give the back-end's versioned URL itself"
            )
        if backend.auth == "none":
            return connection
        if backend.auth == "basic":
            return _basic(connection, backend)
        return _oidc(connection, backend, interactive)
    except TilekeeperError:  # LoginFailed, BackendDown: said already
        raise
    except EgressRefused as exc:
        raise BackendDown(f"back-end {backend.name}: {exc}") from exc
    except UNREACHABLE as exc:
        raise BackendDown(
            f"back-end {backend.name} ({backend.url}) does not answer: {exc}"
        ) from exc
    except (requests.RequestException, ValueError) as exc:  # garbage, too large an answer
        raise BackendDown(
            f"back-end {backend.name} ({backend.url}) answers badly: {inert(exc, 300)}"
        ) from exc
    except OpenEoApiError as exc:
        if exc.http_status_code in (401, 403):
            raise LoginFailed(
                f"back-end {backend.name} ({backend.url}) refused the login: {inert(exc.message)}"
            ) from exc
        if exc.http_status_code and exc.http_status_code >= 500:
            # Not the message: a 5xx's body is whatever the server (or a proxy) sent.
            raise BackendDown(
                f"back-end {backend.name} ({backend.url}): {exc.http_status_code} "
                f"{inert(exc.code, 100)}"
            ) from exc
        raise LoginFailed(f"back-end {backend.name} ({backend.url}): {inert(exc)}") from exc
    except Exception as exc:  # capabilities or credentials answers of the wrong shape
        raise BackendDown(
            f"back-end {backend.name} ({backend.url}) answers badly: {_message(exc)}"
        ) from exc


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _message(exc: BaseException) -> str:
    return inert(f"{type(exc).__name__}: {exc}", 300)


def _basic(connection: Connection, backend: Backend) -> Connection:
    if not has_basic_credentials(backend.url):
        raise LoginFailed(
            f"back-end {backend.name} ({backend.url}) logs in with basic auth but the "
            f"openEO auth config has no credentials for it: {_basic_hint(backend)}"
        )
    return connection.authenticate_basic()


def _oidc(connection: Connection, backend: Backend, interactive: bool) -> Connection:
    providers = [p for p in connection.list_auth_providers() if p.get("type") == "oidc"]
    # The openEO client reads an issuer's discovery document with a session of its own,
    # outside the egress policy: the issuers the back-end names are checked here.
    for provider in providers:
        if provider.get("issuer"):
            check_url(str(provider["issuer"]))
    if os.environ.get("OPENEO_AUTH_METHOD"):
        return connection.authenticate_oidc()  # client credentials from the environment
    if not providers:
        if has_basic_credentials(backend.url):
            logger.info(
                "back-end %s offers no OIDC provider; using the basic credentials of the "
                "openEO auth config",
                backend.name,
            )
            return connection.authenticate_basic()
        raise LoginFailed(
            f"back-end {backend.name} ({backend.url}) offers no OIDC login and the openEO "
            f"auth config has no basic credentials for it: {_basic_hint(backend)}"
        )
    try:
        return connection.authenticate_oidc_refresh_token()
    except OpenEoClientException as exc:
        if interactive:
            return connection.authenticate_oidc()  # device flow, stores a refresh token
        raise LoginFailed(
            f"back-end {backend.name} ({backend.url}): no usable OIDC refresh token ({exc}); "
            + _oidc_hint(backend)
        ) from exc


@dataclass
class BackendLink:
    """One back-end as the runner sees it: a logged-in connection made on first use,
    and its health. A back-end that is down, or that answered with a fault (5xx,
    garbage, too slow) ``unhealthy_after`` times in a row, is unhealthy: it gets no
    work and is polled again after a backoff that doubles up to ``backoff_max_s``; a
    good answer makes it healthy again. Each change is logged once."""

    backend: Backend
    connect: Callable[[Backend], Connection]
    retry_s: float = 30.0
    unhealthy_after: int = 3
    backoff_max_s: float = 600.0
    connection: Connection | None = None
    down_until: float = 0.0
    reason: str = ""
    faults: int = 0  # in a row
    # When it stopped answering well (monotonic clock); None while it answers.
    down_since: float | None = None
    # Seconds from the back-end's last Retry-After header (openEO errors do not keep it).
    retry_after: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def configured(
        cls, backend: Backend, connect: Callable[[Backend], Connection], settings: RunnerSettings
    ) -> BackendLink:
        return cls(
            backend,
            connect,
            retry_s=min(30.0, settings.backoff_max_s),
            unhealthy_after=settings.unhealthy_after,
            backoff_max_s=settings.backoff_max_s,
        )

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def unhealthy(self) -> bool:
        return self.faults >= self.unhealthy_after

    def usable(self) -> bool:
        return time.monotonic() >= self.down_until

    def get(self) -> Connection:
        with self.lock:
            if not self.usable():
                raise BackendDown(f"back-end {self.name} is down ({self.reason})")
            if self.connection is None:
                try:
                    self.connection = self.connect(self.backend)
                except BackendDown as exc:
                    self.mark_down(str(exc))
                    raise
                self.connection.session.hooks["response"].append(self._note_retry_after)
            return self.connection

    def _note_retry_after(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        raw = response.headers.get("Retry-After", "") if response.status_code in (429, 503) else ""
        try:
            self.retry_after = min(self.backoff_max_s, max(1.0, float(raw)))
        except ValueError:
            self.retry_after = None  # none, or an HTTP date: the caller's default applies

    def pause(self, reason: str, wait_s: float) -> None:
        """The back-end asked to wait (429, concurrency limit): no new jobs meanwhile."""
        logger.warning(
            "back-end %s asks to wait (%s): no new jobs for %.0f s",
            self.name,
            inert(reason, 300),
            wait_s,
        )
        self.down_until = max(self.down_until, time.monotonic() + wait_s)
        self.reason = inert(reason, 300)

    def fault(self, reason: str) -> None:
        """An answer that is the back-end's fault (5xx, garbage, too slow or large)."""
        self.faults += 1
        self.reason = reason
        if not self.unhealthy:
            return
        wait = min(self.backoff_max_s, self.retry_s * 2 ** (self.faults - self.unhealthy_after))
        if self.faults == self.unhealthy_after:
            logger.warning(
                "back-end %s is unhealthy (%d faults in a row, the last: %s): no new tiles "
                "there; polled again after %.0f s, backing off up to %.0f s",
                self.name,
                self.faults,
                reason,
                wait,
                self.backoff_max_s,
            )
        self.down_until = time.monotonic() + wait
        if self.down_since is None:
            self.down_since = time.monotonic()

    def mark_down(self, reason: str) -> None:
        """It does not answer at all: unhealthy at once, and logged in again when back."""
        self.faults = max(self.faults, self.unhealthy_after - 1)
        self.fault(reason)
        self.connection = None

    def answered(self) -> None:
        """A good answer: healthy again."""
        if self.unhealthy:
            logger.warning("back-end %s answers well again", self.name)
        self.faults = 0
        self.reason = ""
        self.down_since = None
