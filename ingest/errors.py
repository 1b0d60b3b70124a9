"""The ingest engine's error: one input that cannot become a product, and why."""

from __future__ import annotations

from catalog_service.errors import TilekeeperError


class IngestError(TilekeeperError):
    """An input refused; the message names it and says what is wrong."""
