"""What the runner needs of a harvest: finished tiles handed over as they finish, the
tiles whose results expired on their back-end handed back (the runner may run them
again), and the outcomes waited for at the end. ingest.harvest.Harvester is one; the runner package
does not import ingest (so a runner can be built, and tested, without the raster stack):
whoever starts a run composes the two (catalog_service/campaign_run.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from openeo.rest.connection import Connection


class HarvestOutcome(Protocol):
    @property
    def result(self) -> str:
        """created, updated, unchanged, failed, ..."""
        ...


class Harvest(Protocol):
    """Turns finished tiles of one campaign into products, on threads of its own (the
    runner's loop never waits for a download)."""

    def catch_up(self) -> int:
        """Queue the finished tiles without a product (left by earlier runs, or out of
        tries in this one), but those this run's harvest ended for good; returns how
        many."""
        ...

    def submit(self, tile: str, properties: dict[str, Any]) -> None:
        """Queue one finished tile (its properties by their stored names)."""
        ...

    def take_expired(self) -> dict[str, str]:
        """Tiles whose results their back-end no longer had, since the last call, with
        the job whose results they were: their harvest failed for good; only another
        job of the tile can bring a product."""
        ...

    def wait(self) -> Sequence[HarvestOutcome]:
        """Wait for every queued tile and its retries; returns the latest outcomes of
        every tile harvested so far (a tile harvested twice counts once)."""
        ...

    def close(self) -> None: ...


# Makes a campaign's harvest: given the campaign's id and a logged-in connection to
# each of its back-ends by name.
HarvestFactory = Callable[[str, Callable[[str], Connection]], Harvest]
