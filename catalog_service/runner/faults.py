"""What a failed request means: for the back-end (busy, down, at fault or not) and for
the tile (a short, inert message in its error history)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from openeo.rest import OpenEoApiError

from catalog_service.remote_text import inert
from catalog_service.runner.answers import fault_reason
from catalog_service.runner.logins import UNREACHABLE, BackendDown, BackendLink

logger = logging.getLogger(__name__)
# openEO error codes that mean "not now" rather than "never" (openeo-python-client#838).
BUSY_CODES = frozenset({"TooManyRequests", "ConcurrentJobLimit", "JobLimitExceeded"})
MAX_MESSAGE = 1000  # the catalogue takes 2,000 characters; a tile's error stays short
MAX_ERRORS = 20  # a tile's error history keeps the latest


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_busy(exc: OpenEoApiError) -> bool:
    return exc.http_status_code == 429 or exc.code in BUSY_CODES


def error_message(exc: BaseException) -> str:
    """``exc`` as a tile's error: its type and text, short and inert."""
    return inert(f"{type(exc).__name__}: {exc}", MAX_MESSAGE)


def blame(link: BackendLink, exc: BaseException) -> str:
    """Count ``exc`` against the back-end when it is its fault; returns why."""
    if isinstance(exc, BackendDown):  # link.get() has marked it down already
        return error_message(exc)
    reason = fault_reason(exc)
    if isinstance(exc, UNREACHABLE):
        link.mark_down(reason or error_message(exc))
    elif reason is not None:
        link.fault(reason)
    else:  # a 4xx about one job, or our own bug: logged, the back-end not blamed
        logger.warning("back-end %s: %s", link.name, error_message(exc))
    return reason or error_message(exc)


def errors_with(row: pd.Series, message: str) -> list[dict[str, Any]]:
    """The tile's error history with ``message`` added for its current attempt."""
    previous = row.get("errors")
    errors = list(previous) if isinstance(previous, list) else []
    errors.append(
        {
            "attempt": int(row.get("attempts") or 0) or None,
            "at": now(),
            "backend": row.get("backend_name"),
            "job": row.get("id"),
            "message": message,
        }
    )
    return errors[-MAX_ERRORS:]
