"""Which credential the CLI and the Python API send: an explicit key or token, else
``TILEKEEPER_API_KEY``, else the file named by ``TILEKEEPER_API_KEY_FILE``, else, for a
service on this machine only, the admin key `tilekeeper db up` keeps (mode 0600).

A token is an API key (``tk_...``), an OIDC access token, or an openEO bearer
(``oidc/<provider>/<token>``); all go as ``Authorization: Bearer <token>``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import requests

from catalog_service.auth.keys import admin_key_path
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
