"""The process document a campaign's namespace URL names, read through the egress policy
and within the runner's answer limits (the openEO client reads it with a bare
``requests.get``: no policy, no timeout and no size cap)."""

from __future__ import annotations

from typing import Any

import requests

from catalog_service.egress import AnswerLimits, EgressRefused, egress_session
from catalog_service.errors import TilekeeperError
from catalog_service.remote_text import inert
from catalog_service.settings import RunnerSettings


class NamespaceUnreadable(TilekeeperError):
    """The namespace URL gave no process document; the message says why."""


def read_namespace(url: str) -> dict[str, Any]:
    """The JSON object at ``url`` (a process, or a listing of processes)."""
    settings = RunnerSettings()
    limits = AnswerLimits(
        settings.connect_timeout_s, settings.request_timeout_s, settings.max_answer_bytes
    )
    try:
        with egress_session(limits=limits) as session:
            response = session.get(url, timeout=settings.request_timeout_s)
            response.raise_for_status()
            document = response.json()
    except (EgressRefused, requests.RequestException, ValueError) as exc:
        raise NamespaceUnreadable(
            f"process namespace {inert(url, 200)}: {inert(exc, 300)}"
        ) from exc
    if not isinstance(document, dict):
        raise NamespaceUnreadable(f"process namespace {inert(url, 200)}: not a JSON object")
    return document


def process_in(document: dict[str, Any], process_id: str, url: str) -> dict[str, Any]:
    """The process ``process_id`` of a namespace document (itself, or one of its listing,
    as openEO's remote process definition extension has it)."""
    listing = document.get("processes")
    if "id" not in document and isinstance(listing, list):
        found = [p for p in listing if isinstance(p, dict) and p.get("id") == process_id]
        if len(found) != 1:
            raise NamespaceUnreadable(
                f"process namespace {inert(url, 200)} lists no process {process_id!r}"
            )
        document = found[0]
    if document.get("id") != process_id:
        raise NamespaceUnreadable(
            f"process namespace {inert(url, 200)} holds {inert(document.get('id'), 100)}, "
            f"not {process_id!r}"
        )
    return document
