"""The one HTTP layer of tilekeeper's Python API: a requests session that retries what
the service marks as retryable (503 with Retry-After, connection errors) and turns
error answers into exceptions that carry the service's own message."""

from __future__ import annotations

import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from catalog_service.errors import TilekeeperError


class ApiError(TilekeeperError):
    """The service answered with an error status."""

    def __init__(self, status: int, method: str, url: str, body: Any) -> None:
        self.status = status
        self.body = body
        detail = body.get("description") if isinstance(body, dict) else None
        super().__init__(f"{method} {url} -> {status}: {detail or body}")


class ServiceUnreachable(TilekeeperError):
    """No answer from the service at all."""


class HttpSession:
    """Base URL + retries + JSON in and out."""

    def __init__(
        self,
        root_url: str,
        auth: requests.auth.AuthBase | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
    ) -> None:
        self.root_url = root_url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.auth = auth
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
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError as exc:
            raise ServiceUnreachable(
                f"Cannot reach the tilekeeper API at {self.root_url} ({exc.__class__.__name__}). "
                "Is it running? Start it with `tilekeeper serve`."
            ) from exc
        try:
            body: Any = response.json() if response.content else None
        except ValueError:
            body = response.text
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
