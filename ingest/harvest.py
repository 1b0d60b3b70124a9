"""Harvesting a campaign: each finished tile's openEO results (read with the back-end's
login, assets downloaded through their signed URLs) become products, on a worker pool
so the manager's polling loop never waits for a download.

Each job item carries its harvest state in ``tilekeeper:product`` (pending, ingested,
failed with the error); tiles never harvested, pending or failed are picked up again by
the next run (``catch_up``) and by ``tilekeeper ingest --campaign``."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from openeo.rest.connection import Connection

from catalog_service.client.http import HttpSession
from catalog_service.errors import TilekeeperError
from catalog_service.products import campaign_products_id
from ingest.engine import Ingester, Outcome
from ingest.errors import IngestError
from ingest.sources import (
    Raster,
    date_of,
    expected_of,
    group_by_date,
    is_raster,
    provenance_of,
)
from ingest.store import ProductStore

logger = logging.getLogger(__name__)
HARVEST_WORKERS = 2


class Harvester:
    """Turns finished tiles of one campaign into products."""

    def __init__(
        self,
        http: HttpSession,
        campaign: str,
        store: ProductStore,
        connect: Callable[[str], Connection],
        workers: int = HARVEST_WORKERS,
    ) -> None:
        self.http = http
        self.campaign = campaign
        self.connect = connect
        self.ingester = Ingester(http, store, campaign_products_id(campaign), campaign=campaign)
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="harvest")
        self.futures: list[Future[list[Outcome]]] = []
        self.lock = threading.Lock()
        self.queued: set[str] = set()

    def tiles(self, states: list[str], limit: int = 10_000) -> list[dict[str, Any]]:
        answer = self.http.get(
            f"campaigns/{self.campaign}/harvest", params={"state": states, "limit": limit}
        )
        tiles: list[dict[str, Any]] = answer["tiles"]
        return tiles

    def catch_up(self) -> int:
        """Queue every finished tile not yet ingested (never tried, pending or failed)."""
        tiles = self.tiles(["missing", "pending", "failed"])
        for tile in tiles:
            self.submit(tile["tile"], tile["properties"])
        return len(tiles)

    def submit(self, tile: str, properties: dict[str, Any]) -> None:
        with self.lock:
            if tile in self.queued:
                return
            self.queued.add(tile)
            self.futures.append(self.pool.submit(self._guarded, tile, properties))

    def _guarded(self, tile: str, properties: dict[str, Any]) -> list[Outcome]:
        try:
            self._state(tile, "pending", None)
            outcomes = self.harvest(tile, properties)
        except Exception as exc:  # whatever it was, it stays on the tile and the run goes on
            outcomes = [Outcome(tile, tile, "failed", error=f"{type(exc).__name__}: {exc}")]
        failures = [o.error for o in outcomes if o.failed]
        if failures:
            logger.warning("tile %s: harvest failed: %s", tile, "; ".join(map(str, failures)))
            try:
                self._state(tile, "failed", "; ".join(map(str, failures)))
            except TilekeeperError as exc:
                logger.warning("tile %s: could not record the failed harvest: %s", tile, exc)
        else:
            logger.info("tile %s: harvested (%s)", tile, ", ".join(o.result for o in outcomes))
        with self.lock:
            self.queued.discard(tile)
        return outcomes

    def _state(self, tile: str, state: str, error: str | None) -> None:
        self.http.put(
            f"campaigns/{self.campaign}/jobs/{tile}/product", json={"state": state, "error": error}
        )

    def harvest(self, tile: str, properties: dict[str, Any]) -> list[Outcome]:
        backend, job_id = properties.get("backend_name"), properties.get("id")
        if not backend or not job_id:
            raise IngestError(f"tile {tile} has no back-end job")
        connection = self.connect(str(backend))
        job = connection.job(str(job_id))
        results = job.get_results()
        doc = results.get_metadata()
        provenance = provenance_of(doc, job.describe())
        with tempfile.TemporaryDirectory(prefix=f"tilekeeper-harvest-{tile}-") as tmp:
            rasters = []
            for asset in results.get_assets():
                if not is_raster(asset.key, asset.metadata):
                    continue
                target = Path(tmp) / Path(asset.key).name
                try:
                    asset.download(target)
                except Exception as exc:  # expired signed URL, back-end gone, ...
                    raise IngestError(f"asset {asset.key}: download failed ({exc})") from exc
                title, expected = asset.metadata.get("title"), expected_of(asset.metadata)
                raster = Raster(target, Path(asset.key).stem, title, expected)
                rasters.append((raster, date_of(asset.metadata, asset.key)))
            products = group_by_date(
                tile,
                rasters,
                f"tile {tile} (job {job_id} on {backend})",
                tile=tile,
                grid_code=properties.get("grid:code"),
                provenance=provenance,
                via=f"{connection.root_url.rstrip('/')}/jobs/{job_id}",
                job_item=self.http.url(f"collections/{self.campaign}/items/{tile}"),
            )
            return [self.ingester.ingest(p, job=(self.campaign, tile)) for p in products]

    def wait(self, on_tile: Callable[[list[Outcome]], None] | None = None) -> list[Outcome]:
        """Wait for every queued harvest (``on_tile`` hears of each tile as it ends);
        returns their outcomes."""
        outcomes: list[Outcome] = []
        while True:
            with self.lock:
                pending, self.futures = self.futures, []
            if not pending:
                return outcomes
            for future in pending:
                tile_outcomes = future.result()
                if on_tile is not None:
                    on_tile(tile_outcomes)
                outcomes.extend(tile_outcomes)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
