"""The job store's refusals, each with what it means in HTTP.

Every error carries its HTTP status and the STAC API error ``code``, and ``extra``
holds the fields its answer adds (the tiles not found, the conflicts), so the API
answers all of them with one handler instead of a table of cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar

from catalog_service.jobs.changes import Conflict


class StoreError(Exception):
    """Base of the job store's refusals: input that cannot be stored (400) unless a
    subclass says otherwise."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "BadRequest"

    def extra(self) -> dict[str, Any]:
        """Fields the error's answer carries besides ``code`` and ``description``."""
        return {}


class InvalidChange(StoreError):
    pass


class InvalidTiles(StoreError):
    """Tiles the database refused to store (e.g. a geometry PostGIS cannot read)."""


class CampaignNotFound(StoreError):
    status = 404
    code = "NotFoundError"


class TilesNotFound(StoreError):
    status = 404
    code = "NotFoundError"

    def __init__(self, campaign: str, tiles: Sequence[str]) -> None:
        self.tiles = list(tiles)
        shown = ", ".join(self.tiles[:10]) + (" ..." if len(self.tiles) > 10 else "")
        super().__init__(f"campaign {campaign} has no tile(s) {shown}")

    def extra(self) -> dict[str, Any]:
        return {"tiles": self.tiles}


class CampaignExists(StoreError):
    status = 409
    code = "ConflictError"


class CampaignInUse(StoreError):
    """A campaign that cannot be removed as asked (it has products)."""

    status = 409
    code = "ConflictError"


class ChangesRejected(StoreError):
    """At least one change broke a rule; nothing was written."""

    status = 409
    code = "TransitionRejected"

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        first = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        super().__init__(f"tile {first.tile}: {first.reason}{more}; nothing was changed")

    def extra(self) -> dict[str, Any]:
        return {"conflicts": [asdict(c) for c in self.conflicts]}
