"""Which credential the CLI and the Python API send: an explicit key or token, else
``TILEKEEPER_API_KEY``, else the file named by ``TILEKEEPER_API_KEY_FILE``, else, for a
service on this machine only, the admin key `tilekeeper db up` keeps (mode 0600).

A token is an API key (``tk_...``), an OIDC access token, or an openEO bearer
(``oidc/<provider>/<token>``); all go as ``Authorization: Bearer <token>``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from catalog_service.auth.keys import admin_key_path
from catalog_service.errors import TilekeeperError
from catalog_service.settings import ClientSettings, DatabaseSettings


class BearerToken(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def is_local(url: str) -> bool:
    """True when ``url`` names this machine (loopback)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def api_token(root_url: str, explicit: str | None = None) -> str | None:
    """The token to send to the service at ``root_url``, or None (anonymous)."""
    if explicit:
        return explicit
    settings = ClientSettings()
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if settings.api_key_file is not None:
        return _read(settings.api_key_file)
    # The installation's own admin key never leaves this machine.
    path = admin_key_path(DatabaseSettings())
    return _read(path) if path is not None and is_local(root_url) else None


def auth_for(root_url: str, explicit: str | None = None) -> BearerToken | None:
    token = api_token(root_url, explicit)
    return BearerToken(token) if token else None


class OpenEOSession(requests.auth.AuthBase):
    """Sends the bearer of a logged-in openEO connection (``oidc/<provider>/<token>``),
    so a script that logged in to openEO needs no other credential; when the service
    refuses it (expired), the connection refreshes its token once and the request is
    sent again."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def _bearer(self) -> str:
        bearer = getattr(self.connection.auth, "bearer", None)
        if not isinstance(bearer, str) or not bearer.startswith("oidc/"):
            raise TilekeeperError(
                "the openEO connection is not logged in with OIDC: "
                "call connection.authenticate_oidc() first, or use an API key"
            )
        return bearer

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._bearer()}"
        request.register_hook("response", self._retry_refreshed)  # type: ignore[no-untyped-call]
        return request

    def _retry_refreshed(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or response.request.headers.get(_RETRIED):
            return response
        if not self.connection.try_access_token_refresh():
            return response
        retry = response.request.copy()
        retry.headers[_RETRIED] = "1"
        retry.headers["Authorization"] = f"Bearer {self._bearer()}"
        response.close()
        again: requests.Response = response.connection.send(retry, **kwargs)
        again.history.append(response)
        return again


_RETRIED = "X-Tilekeeper-Token-Refreshed"
