"""The one HTTP layer of tilekeeper's Python API: a requests session that retries what
the service marks as retryable (503 with Retry-After, connection errors) and turns
error answers into exceptions that carry the service's own message."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from catalog_service.client.credentials import auth_for
from catalog_service.errors import TilekeeperError

logger = logging.getLogger(__name__)
# Longest wait between two attempts of a patient session.
MAX_BACKOFF_S = 30.0


class ApiError(TilekeeperError):
    """The service answered with an error status."""

    def __init__(self, status: int, method: str, url: str, body: Any) -> None:
        self.status = status
        self.body = body
        detail = body.get("description") if isinstance(body, dict) else None
        super().__init__(f"{method} {url} -> {status}: {detail or body}")


class ServiceUnreachable(TilekeeperError):
    """No answer from the service at all."""


class BrokenAnswer(TilekeeperError):
    """A success whose JSON body does not parse (cut short on the way)."""


class HttpSession:
    """Base URL + retries + JSON in and out.

    ``patience_s`` makes the session wait out an outage of the service (no answer, or
    503 from a database that is down) for that long, with backoff and one log line per
    attempt, instead of raising after a few seconds: the runner's setting, for which
    every write is safe to repeat (the job store reports a repeated change as applied).

    Without ``auth``, the session sends ``api_key`` or the configured credential
    (see :mod:`catalog_service.client.credentials`).
    """

    def __init__(
        self,
        root_url: str,
        auth: requests.auth.AuthBase | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
        patience_s: float = 0.0,
    ) -> None:
        self.root_url = root_url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.patience_s = patience_s
        self.session = requests.Session()
        self.session.auth = auth or auth_for(self.root_url, api_key)
        # Not brotli: urllib3 2.8 with Brotli 1.2 silently cuts some large brotli bodies.
        self.session.headers["Accept-Encoding"] = "gzip, deflate"
        retry = Retry(
            total=retries,
            connect=retries,
            read=0,  # a read timeout on a write may have been applied: do not repeat it
            status=retries,
            status_forcelist=(503,),
            allowed_methods=None,  # 503 from tilekeeper means nothing was changed
            backoff_factor=0.2,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def url(self, path: str) -> str:
        return self.root_url + path.lstrip("/")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.url(path)
        kwargs.setdefault("timeout", self.timeout_s)
        deadline = time.monotonic() + self.patience_s
        # 503: the service says nothing was changed. With patience (the runner's writes,
        # each safe to repeat) also a proxy's 502/504: the API process behind it died or
        # hung mid-request, and another one answers the repeat (docs/operations.md).
        waits_out = (502, 503, 504) if self.patience_s else (503,)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.request(method, url, **kwargs)
                status = response.status_code
                problem = f"{method} {path} -> {status}" if status in waits_out else None
            except (requests.ConnectionError, requests.Timeout) as exc:
                response, problem = None, f"{method} {path}: {exc.__class__.__name__}"
            if problem is None or time.monotonic() >= deadline:
                break
            wait = min(MAX_BACKOFF_S, 0.5 * 2 ** min(attempt, 8))
            logger.warning(
                "tilekeeper API at %s unavailable (%s); retrying in %.0f s (attempt %d)",
                self.root_url,
                problem,
                wait,
                attempt,
            )
            time.sleep(wait)
        if response is None:
            raise ServiceUnreachable(
                f"Cannot reach the tilekeeper API at {self.root_url} ({problem}). "
                "Is it running? Start it with `tilekeeper serve`."
            )
        if attempt > 1:
            logger.warning("tilekeeper API at %s answers again", self.root_url)
        try:
            body: Any = response.json() if response.content else None
        except ValueError as exc:
            body = response.text
            if response.status_code < 400 and "json" in response.headers.get("content-type", ""):
                raise BrokenAnswer(
                    f"{method} {url} -> {response.status_code} with {len(response.content):,} "
                    f"bytes of JSON that do not parse ({exc}); the answer was cut short on "
                    "the way. Nothing is lost on the service: ask again."
                ) from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, method, url, body)
        return body

    def exists(self, path: str) -> bool:
        """True if GET ``path`` answers, False on 404; other errors raise."""
        try:
            self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Block until the service reports its database up."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                health: dict[str, Any] = self.session.get(
                    self.url("_mgmt/health"), timeout=5
                ).json()
                if health.get("status") == "UP":
                    return health
            except (requests.RequestException, ValueError) as exc:
                last = exc
            time.sleep(0.2)
        raise ServiceUnreachable(
            f"The tilekeeper API at {self.root_url} was not ready within {timeout_s:.0f}s"
            + (f" (last error: {last})" if last else "")
        )
