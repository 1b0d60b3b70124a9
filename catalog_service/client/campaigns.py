"""Campaigns through the service's HTTP API: create, register tiles, read and change jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import orjson

from catalog_service.client.http import HttpSession
from catalog_service.grids import TileSet
from catalog_service.jobs.campaign import STORED, CampaignDefinition

# Big enough to amortise a request, small enough to keep each all-or-nothing write short.
REGISTER_BATCH = 20_000
# The API's limit per request: one call is one all-or-nothing request in practice.
CHANGE_BATCH = 100_000


def tile_records(tiles: TileSet) -> Iterator[dict[str, Any]]:
    """Tiles as the registration endpoint takes them."""
    for tile_id, (geometry, bbox), props in zip(
        tiles.ids.tolist(), tiles.geometries(), tiles.properties(), strict=True
    ):
        yield {"id": tile_id, "geometry": geometry, "bbox": bbox, "properties": props}


def _batches(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


class Campaigns:
    """The campaign routes of a tilekeeper API."""

    def __init__(self, http: HttpSession) -> None:
        self.http = http

    def exists(self, campaign_id: str) -> bool:
        return self.http.exists(f"campaigns/{campaign_id}")

    def create(self, definition: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.http.post("campaigns", json=definition)
        return result

    def update(self, campaign_id: str, **changes: Any) -> dict[str, Any]:
        """Change what may change (title, description, visibility, owners, back-ends,
        process, job options, retry policy, order)."""
        result: dict[str, Any] = self.http.request(
            "PATCH", f"campaigns/{campaign_id}", json=changes
        )
        return result

    def delete(self, campaign_id: str, products: bool = False) -> None:
        """Remove the campaign with its tile jobs and history (and, with ``products``,
        its products' catalogue records)."""
        self.http.delete(f"campaigns/{campaign_id}", params={"products": str(products).lower()})

    def get(self, campaign_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get(f"campaigns/{campaign_id}")
        return result

    def definition(self, campaign_id: str) -> CampaignDefinition:
        raw = self.get(campaign_id)
        stored = {k: v for k, v in raw.items() if k != "links"}
        return CampaignDefinition.model_validate(stored, context=STORED)

    def all(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.get("campaigns")["campaigns"]
        return result

    def register(
        self,
        campaign_id: str,
        tiles: Iterable[dict[str, Any]],
        batch_size: int = REGISTER_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Register tiles in processing order; returns how many were new. Re-registering
        the same tiles changes nothing, so an interrupted registration can be repeated."""
        new = 0
        for batch in _batches(tiles, batch_size):
            # orjson: ~10x the standard encoder, and it embeds pre-encoded footprints
            # (orjson.Fragment) as they are.
            result = self.http.post(
                f"campaigns/{campaign_id}/tiles",
                data=orjson.dumps({"tiles": batch}, option=orjson.OPT_SERIALIZE_NUMPY),
                headers={"Content-Type": "application/json"},
            )
            new += int(result["registered"])
            if progress:
                progress(len(batch))
        return new

    def jobs_by_status(
        self, campaign_id: str, statuses: Sequence[str], limit: int = 1000, after: int = -1
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.get(
            f"campaigns/{campaign_id}/jobs",
            params={"status": ",".join(statuses), "limit": limit, "after": after},
        )["jobs"]
        return result

    def iter_jobs(
        self, campaign_id: str, statuses: Sequence[str], page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every job in ``statuses``, page by page in processing order."""
        after = -1
        while True:
            page = self.jobs_by_status(campaign_id, statuses, page_size, after)
            yield from page
            if len(page) < page_size:
                return
            after = int(page[-1]["properties"]["tilekeeper:order"])

    def jobs_by_tile(self, campaign_id: str, tiles: Iterable[str]) -> list[dict[str, Any]]:
        """The named tiles' jobs; 404 (ApiError) when the campaign does not exist."""
        jobs: list[dict[str, Any]] = []
        for batch in _batches(tiles, 200):
            jobs.extend(
                self.http.get(f"campaigns/{campaign_id}/jobs", params={"tile": ",".join(batch)})[
                    "jobs"
                ]
            )
        return jobs

    def jobs_by_order(self, campaign_id: str, orders: Iterable[int]) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        for batch in _batches(orders, 500):
            jobs.extend(
                self.http.get(
                    f"campaigns/{campaign_id}/jobs", params={"order": ",".join(map(str, batch))}
                )["jobs"]
            )
        return jobs

    def change(
        self,
        campaign_id: str,
        changes: Sequence[dict[str, Any]],
        actor: str = "python-api",
        *,
        worker: str | None = None,
        partial: bool = False,
    ) -> dict[str, Any]:
        """Apply status changes; each request is all or nothing (409 on a broken rule)
        unless ``partial``, which applies what obeys the rules and returns the rest as
        ``conflicts``. ``worker`` names the runner worker making them."""
        out: dict[str, list[Any]] = {"applied": [], "stale": [], "conflicts": []}
        extra: dict[str, Any] = {"partial": partial}
        if worker is not None:
            extra["worker"] = worker
        for batch in _batches(changes, CHANGE_BATCH):
            result = self.http.post(
                f"campaigns/{campaign_id}/jobs/changes",
                json={"actor": actor, "changes": batch, **extra},
            )
            for key in out:
                out[key].extend(result.get(key, []))
        return out

    def counts(self, campaign_id: str) -> dict[str, int]:
        """Tiles per status (the job store's counters)."""
        result: dict[str, int] = self.http.get(f"campaigns/{campaign_id}/counts")["counts"]
        return result

    def claim(
        self,
        campaign_id: str,
        worker: str,
        statuses: Sequence[str],
        limit: int,
        lease_s: float,
        tiles: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Renew the worker's lease and claim its own or free tiles in ``statuses``
        (only ``tiles`` when given)."""
        body: dict[str, Any] = {"statuses": list(statuses), "limit": limit, "lease_s": lease_s}
        if tiles is not None:
            body["tiles"] = list(tiles)
        result: list[dict[str, Any]] = self.http.post(
            f"campaigns/{campaign_id}/workers/{worker}/claim", json=body
        )["jobs"]
        return result

    def heartbeat(
        self, campaign_id: str, worker: str, lease_s: float, info: dict[str, Any] | None = None
    ) -> None:
        self.http.put(
            f"campaigns/{campaign_id}/workers/{worker}", json={"lease_s": lease_s, "info": info}
        )

    def leave(self, campaign_id: str, worker: str) -> None:
        self.http.delete(f"campaigns/{campaign_id}/workers/{worker}")

    def workers(self, campaign_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.get(f"campaigns/{campaign_id}/workers")["workers"]
        return result

    def history(self, campaign_id: str, tile_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.get(
            f"campaigns/{campaign_id}/jobs/{tile_id}/history"
        )["history"]
        return result

    def reset(
        self,
        campaign_id: str,
        statuses: Sequence[str],
        set_properties: dict[str, Any] | None = None,
        actor: str = "python-api",
        *,
        tiles: Sequence[str] | None = None,
        below_attempts: int | None = None,
        reason: str | None = None,
    ) -> int:
        """Reset tiles that are over (in ``statuses``) to not_started for a retry: all,
        the ``tiles`` named, or those with fewer than ``below_attempts`` attempts;
        ``reason`` goes to each tile's history."""
        body: dict[str, Any] = {
            "statuses": list(statuses),
            "set": set_properties or {},
            "actor": actor,
        }
        if tiles:
            body["tiles"] = list(tiles)
        if below_attempts is not None:
            body["below_attempts"] = below_attempts
        if reason:
            body["reason"] = reason
        result = self.http.post(f"campaigns/{campaign_id}/reset", json=body)
        return int(result["reset"])

    def summary(self, campaign_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get(f"campaigns/{campaign_id}/summary")
        return result
