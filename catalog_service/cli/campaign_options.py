"""What every campaign command shares: the API it talks to."""

from __future__ import annotations

import json
from typing import Any

import typer

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.settings import ClientSettings

ApiOption = typer.Option(None, "--api", help="tilekeeper API URL [TILEKEEPER_API_URL].")


def campaigns_at(api: str | None) -> Campaigns:
    """The campaigns of the API at ``api`` (default: TILEKEEPER_API_URL)."""
    return Campaigns(HttpSession(api or ClientSettings().api_url))


def pairs(values: list[str], what: str) -> dict[str, Any]:
    """key=value options; values are JSON when they parse as JSON, else strings."""
    out: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must look like key=value, got {value!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out
