"""The job database of one runner worker: CampaignJobDatabase plus claims.

MultiBackendJobManager reads "not started" and "active" jobs from its database; here
those reads claim tiles through the job store, so several workers share a campaign and
never take the same tile: a worker gets the not_started tiles it has capacity for, and
tracks the active jobs it holds or that a dead worker left."""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd
import requests

from catalog_service.client.jobdb import CampaignJobDatabase
from catalog_service.jobs import status

logger = logging.getLogger(__name__)


class WorkerJobDatabase(CampaignJobDatabase):
    def __init__(
        self,
        collection_id: str,
        stac_root_url: str,
        *,
        worker: str,
        lease_s: float,
        auth: requests.auth.AuthBase | None = None,
    ) -> None:
        super().__init__(collection_id, stac_root_url, auth=auth, actor=f"runner:{worker}")
        # Outages of the API or its database are waited out, however long.
        self.http.patience_s = math.inf
        self.worker = self.worker_id = worker
        self.auth = auth
        self.lease_s = lease_s
        # How many not_started tiles to claim at most per loop (the back-ends' slots).
        self.launch_capacity = 200
        # A pilot run: only these tiles are launched (None: every tile).
        self.only_tiles: list[str] | None = None
        self._links: dict[int, list[dict[str, Any]]] = {}

    def get_by_status(self, statuses: list[str], max: int | None = None) -> pd.DataFrame:
        wanted = set(statuses) or {status.NOT_STARTED}
        if wanted == {status.NOT_STARTED}:
            limit = min(max or self.launch_capacity, self.launch_capacity)
            return self._frame(self._claim([status.NOT_STARTED], limit))
        if wanted <= status.TRACKED:
            # The manager's view of back-end load: every worker's jobs, and the tiles
            # whose job is being created count as taking a slot.
            jobs = list(
                self.campaigns.iter_jobs(
                    self.collection_id, sorted(wanted | {status.CREATING}), self.page_size
                )
            )
            return self._frame(jobs)
        return super().get_by_status(statuses, max)

    def claim_active(self, statuses: frozenset[str] = status.TRACKED) -> pd.DataFrame:
        """The active jobs this worker tracks: its own and those of dead workers."""
        return self._frame(self._claim(sorted(statuses), 100_000))

    def _claim(self, statuses: list[str], limit: int) -> list[dict[str, Any]]:
        return self.campaigns.claim(
            self.collection_id, self.worker_id, statuses, limit, self.lease_s, self.only_tiles
        )

    def count_by_status(self, statuses: Iterable[str] = ()) -> dict[str, int]:
        if self.only_tiles is None:
            return super().count_by_status(statuses)
        jobs = self.campaigns.jobs_by_tile(self.collection_id, self.only_tiles)
        counts = collections.Counter(str(j["properties"]["status"]) for j in jobs)
        wanted = set(statuses)
        return {s: n for s, n in counts.items() if not wanted or s in wanted}

    def record_intent(self, order: int, backend: str, title: str, when: str) -> bool:
        """Tile ``order`` is about to get a job on ``backend``; False when another
        worker holds it or it is no longer not_started."""
        change = {
            "tile": self._tiles[order],
            "status": status.CREATING,
            "expect_status": status.NOT_STARTED,
            "set": {"backend_name": backend, "title": title, "start_time": when},
        }
        result = self._send([change], [order])
        if result["conflicts"]:
            logger.info("tile %s: %s", change["tile"], result["conflicts"][0]["reason"])
        return bool(result["applied"])

    def update(self, order: int, new_status: str | None, values: dict[str, Any]) -> bool:
        """One tile's change, from what this database knows of it."""
        change: dict[str, Any] = {"tile": self._tiles[order], "set": values}
        known = self._known.get(order, {})
        if new_status is not None:
            change["status"] = new_status
        if "status" in known:
            change["expect_status"] = known["status"]
        result = self._send([change], [order])
        if result["conflicts"]:
            logger.warning("tile %s: %s", change["tile"], result["conflicts"][0]["reason"])
        return bool(result["applied"])

    def attach_links(self, order: int, links: list[dict[str, Any]]) -> None:
        """Links written with the tile's next change (e.g. results with `finished`, in
        the same transaction, so no crash can separate them)."""
        self._links.setdefault(order, []).extend(links)

    def _change(self, index: Any, row: pd.Series) -> dict[str, Any] | None:
        change = super()._change(index, row)
        links = self._links.pop(int(index), None)
        if links:
            if change is None:
                change = {"tile": self._tiles[int(index)], "set": {}}
            change["links"] = links
        return change

    def known(self, order: int) -> dict[str, Any]:
        """What the catalogue holds of the tile, as far as this database knows."""
        return dict(self._known.get(order, {}))

    def tile_of(self, order: int) -> str:
        return self._tiles[order]
