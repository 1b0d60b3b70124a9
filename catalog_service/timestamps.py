"""Timestamps as STAC and the catalogue write them: RFC 3339 in UTC, to the second, with
a ``Z`` (``2024-05-01T12:00:00Z``)."""

from __future__ import annotations

from datetime import UTC, datetime

RFC3339_UTC = "%Y-%m-%dT%H:%M:%SZ"


def utc_text(moment: datetime) -> str:
    """``moment`` (timezone-aware) in UTC, to the second, with a ``Z``."""
    return moment.astimezone(UTC).strftime(RFC3339_UTC)


def utc_now_text() -> str:
    """Now, in UTC, to the second, with a ``Z``."""
    return utc_text(datetime.now(UTC))
