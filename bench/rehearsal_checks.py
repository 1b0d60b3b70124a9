"""What the rehearsal measures and checks once the campaign is over (bench/rehearsal.py):
the back-ends' own job records (their folders), the catalogue's tiles and products (the
API, as a user reads them) and the product store's files.

The invariants (issue 27):
- every tile finished, or failed with a reason;
- no tile ever had two live back-end jobs (queued or running at the same time);
- every finished tile has a product whose file in the store has the checksum its item
  states, made from the very file the tile's back-end job wrote (its checksum, which the
  simulated back-end kept, is the product's source checksum);
- nothing lost: every back-end job the runner started is a tile's attempt, and every job
  that finished is harvested or was superseded by a later attempt of its tile.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from catalog_service.ids import campaign_products_id

PRODUCT_KEY = "tilekeeper:product"
SOURCE_KEY = "tilekeeper:source_checksums"
JOB_ID_KEY = "openeo:job_id"


@dataclass
class BackendJob:
    backend: str
    id: str
    tile: str
    status: str
    queued: datetime | None
    started: datetime | None
    finished: datetime | None
    credits: float
    wall_s: float
    memory: str
    checksum: str | None  # of the result file the job wrote

    @classmethod
    def read(cls, backend: str, path: Path) -> BackendJob:
        state = json.loads(path.read_text())
        results = path.with_name("results.json")
        checksum = None
        if results.exists():
            assets = json.loads(results.read_text()).get("assets", [])
            checksum = assets[0].get("file:checksum") if assets else None
        usage = state.get("usage") or {}
        return cls(
            backend=backend,
            id=state["id"],
            tile=str(state.get("title") or "").split(" ", 1)[-1],
            status=state["status"],
            queued=_time(state.get("queued")),
            started=_time(state.get("started")),
            finished=_time(state.get("finished")),
            credits=float(state.get("costs") or 0.0),
            wall_s=float((usage.get("duration") or {}).get("value") or 0.0),
            memory=str((state.get("job_options") or {}).get("executor-memory", "")),
            checksum=checksum,
        )


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def backend_jobs(jobs_dirs: dict[str, Path], campaign: str) -> list[BackendJob]:
    """Every job of the campaign the back-ends ever had, those the runner deleted (a
    duplicate it discarded) included: the simulated back-end keeps their tombstone."""
    jobs = []
    for backend, folder in jobs_dirs.items():
        for path in [*folder.glob("j-*/job.json"), *folder.glob("j-*/deleted.json")]:
            if json.loads(path.read_text()).get("title", "").startswith(campaign + " "):
                jobs.append(BackendJob.read(backend, path))
    return jobs


def items(api: str, collection: str) -> list[dict[str, Any]]:
    """Every item of a collection, page by page as a STAC client reads them."""
    found: list[dict[str, Any]] = []
    url: str | None = f"{api}/collections/{collection}/items?limit=1000"
    session = requests.Session()
    while url:
        page = session.get(url, timeout=120)
        page.raise_for_status()
        body = page.json()
        found.extend(body.get("features", []))
        url = next((link["href"] for link in body.get("links", []) if link["rel"] == "next"), None)
    return found


def _multihash(content: bytes) -> str:
    """sha2-256 as a multihash in hex: how STAC's file extension writes checksums."""
    return "1220" + hashlib.sha256(content).hexdigest()


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Findings:
    tiles: int
    statuses: dict[str, int]
    jobs: int
    jobs_by_status: dict[str, int]
    attempts: dict[int, int]  # tiles by back-end jobs started for them
    escalated: int  # jobs run with more memory than the campaign's default
    credits: float  # over every back-end job, failed ones included
    slot_s: float  # seconds of back-end slots the jobs used
    mean_job_s: float  # a job's mean runtime (a started job, any outcome)
    products: int
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _live_overlaps(jobs: list[BackendJob], now: datetime) -> list[str]:
    """Tiles with two jobs queued or running at the same time."""
    by_tile: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for job in jobs:
        start = job.queued or job.started
        if start is None:
            continue  # created, never started: not live
        by_tile[job.tile].append((start, job.finished or now))
    bad = []
    for tile, spans in by_tile.items():
        spans.sort()
        if any(b[0] < a[1] for a, b in itertools.pairwise(spans)):
            bad.append(tile)
    return sorted(bad)


def examine(
    api: str,
    campaign: str,
    jobs_dirs: dict[str, Path],
    default_memory: str,
    now: datetime,
) -> Findings:
    tiles = {item["id"]: item["properties"] for item in items(api, campaign)}
    products = items(api, campaign_products_id(campaign))
    jobs = backend_jobs(jobs_dirs, campaign)
    started = [j for j in jobs if j.queued or j.started]
    per_tile = Counter(j.tile for j in started)
    statuses = Counter(str(p.get("status")) for p in tiles.values())
    checks = []

    unexplained = [
        t
        for t, p in tiles.items()
        if p.get("status") != "finished"
        and not (p.get("status") in ("error", "start_failed", "skipped") and p.get("last_error"))
    ]
    checks.append(
        Check(
            "every tile finished or failed with a reason",
            not unexplained,
            f"{len(unexplained)} not: "
            + ", ".join(f"{t} {tiles[t].get('status')}" for t in unexplained[:5])
            if unexplained
            else f"{len(tiles)} tiles",
        )
    )

    overlaps = _live_overlaps(jobs, now)
    live = [j for j in jobs if j.status in ("queued", "running")]
    checks.append(
        Check(
            "no tile with two live back-end jobs",
            not overlaps and not live,
            f"{len(overlaps)} tiles overlapped {overlaps[:5]}, {len(live)} jobs still live"
            if overlaps or live
            else f"{len(started)} jobs started, none overlapping, none left live",
        )
    )

    by_job = {(j.backend, j.id): j for j in jobs}
    by_tile_product: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for product in products:
        tile = product["properties"].get("tilekeeper:tile") or product["id"]
        by_tile_product[str(tile)].append(product)
    problems: list[str] = []
    session = requests.Session()
    for tile, props in tiles.items():
        if props.get("status") != "finished":
            continue
        job = by_job.get((str(props.get("backend_name")), str(props.get(JOB_ID_KEY))))
        mine = by_tile_product.get(tile, [])
        if not mine:
            problems.append(f"{tile}: no product")
            continue
        for product in mine:
            sources = product["properties"].get(SOURCE_KEY) or {}
            source_values = set(sources.values()) if isinstance(sources, dict) else set(sources)
            if job is None or job.checksum not in source_values:
                problems.append(f"{tile}: product not made from its job's file ({sources})")
            for asset in product.get("assets", {}).values():
                if "data" not in asset.get("roles", []):
                    continue
                # As a user gets it: downloaded from where the item says.
                answer = session.get(asset["href"], timeout=60)
                if answer.status_code != 200:
                    problems.append(f"{tile}: {asset['href']} answered {answer.status_code}")
                elif _multihash(answer.content) != asset.get("file:checksum"):
                    problems.append(f"{tile}: {asset['href']} does not match its checksum")
    finished = statuses.get("finished", 0)
    checks.append(
        Check(
            "every finished tile harvested, checksums matching",
            not problems,
            f"{len(problems)} problems: {problems[:5]}"
            if problems
            else f"{finished} tiles, {len(products)} products",
        )
    )

    tile_ids = set(tiles)
    strays = [j for j in started if j.tile not in tile_ids]
    # A job that finished is its tile's current job, or an attempt superseded by a later
    # one of the same tile (its results expired before the harvest got them).
    current = {(str(p.get("backend_name")), str(p.get(JOB_ID_KEY))) for p in tiles.values()}
    later: dict[str, list[datetime]] = defaultdict(list)
    for job in started:
        later[job.tile].append(job.queued or job.started or now)
    forgotten = [
        j
        for j in started
        if j.status == "finished"
        and (j.backend, j.id) not in current
        and not any(t > (j.finished or now) for t in later[j.tile])
    ]
    checks.append(
        Check(
            "nothing lost across the restarts",
            not strays and not forgotten,
            f"{len(strays)} jobs of no tile, {len(forgotten)} finished jobs no tile knows: "
            + ", ".join(
                f"{j.tile} {j.backend} {j.id} (tile: {_job_of(tiles, j.tile)})"
                for j in forgotten[:5]
            )
            if strays or forgotten
            else f"all {len(started)} started jobs are attempts of the campaign's tiles",
        )
    )
    ran = [j for j in started if j.status in ("finished", "error")]
    return Findings(
        tiles=len(tiles),
        statuses=dict(statuses),
        jobs=len(jobs),
        jobs_by_status=dict(Counter(j.status for j in jobs)),
        attempts=dict(sorted(Counter(per_tile.values()).items())),
        escalated=sum(1 for j in started if j.memory and j.memory != default_memory),
        credits=round(sum(j.credits for j in jobs), 1),
        slot_s=sum(j.wall_s for j in ran),
        mean_job_s=sum(j.wall_s for j in ran) / len(ran) if ran else 0.0,
        products=len(products),
        checks=checks,
    )


def _job_of(tiles: dict[str, dict[str, Any]], tile: str) -> str:
    props = tiles.get(tile, {})
    return f"{props.get('status')} {props.get('backend_name')} {props.get(JOB_ID_KEY)}"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
