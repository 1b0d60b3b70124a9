"""Adopting the jobs the catalogue does not know, before any new job is created.

A catalogue restored from an older backup forgets the jobs created since: their tiles
read not_started again, or an older attempt's status. The back-ends still hold those
jobs, titled ``{campaign} {tile}`` (creator.job_title). Before this worker creates any
job, each back-end's listing is read once (listing.py, one listing per back-end); a job
titled like one of the campaign's tiles whose id the tile does not know (not its job,
not in its errors, not in its history) is adopted onto its tile when the tile has no
live job, the most advanced copy first (reconcile.rank), through the job store's moves
(a reset first when the tile holds an older attempt's outcome), so its history says so.
Tracking then follows it like any job: started if it never was, harvested when finished.

A tile whose own job still lives is left alone; the newer job is remembered and
adopted instead of a retry should the tile's job fail. No job is created while a
back-end could not be listed yet (down, busy): any tile may have a lost job there.
After ``wait_s`` launches go on without it (logged); its jobs are adopted when it
answers, onto the tiles that have no live job by then."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from catalog_service.client.http import ApiError
from catalog_service.ids import id_problem
from catalog_service.jobs import status
from catalog_service.jobs.campaign import JOB_ID_KEY, CampaignDefinition
from catalog_service.remote_text import inert
from catalog_service.runner.creator import job_title
from catalog_service.runner.jobdb import WorkerJobDatabase
from catalog_service.runner.listing import list_jobs
from catalog_service.runner.logins import BackendLink
from catalog_service.runner.reconcile import CLOCK_SKEW, rank, when

logger = logging.getLogger(__name__)
# How long launches wait for a back-end that cannot be listed (down, busy).
WAIT_S = 900.0
# Tiles whose history is read per pass (one request each, only for tiles with a job
# that is neither their own nor in their errors); the rest wait for the next pass.
MAX_LOOKUPS = 500
ADOPTED = "adopted after a restore"


def tile_of(campaign_id: str, title: Any) -> str | None:
    """The tile a job's title names, when it is one of this campaign's titles."""
    prefix = job_title(campaign_id, "")
    if not isinstance(title, str) or not title.startswith(prefix):
        return None
    tile = title[len(prefix) :]
    # A tile id is plain (ids.py): anything else is no tile of ours, and stays out of URLs.
    return tile if id_problem(tile) is None else None


def known_ids(props: dict[str, Any], history: Iterable[dict[str, Any]] = ()) -> set[str]:
    """The job ids the catalogue knows for a tile: its job, its errors', its history's."""
    ids = {str(props[JOB_ID_KEY])} if props.get(JOB_ID_KEY) else set()
    for error in props.get("errors") or []:
        if isinstance(error, dict) and error.get("job"):
            ids.add(str(error["job"]))
    for entry in history:
        details = entry.get("details")
        if not isinstance(details, dict):
            continue
        changed = details.get("set")
        if isinstance(changed, dict) and changed.get(JOB_ID_KEY):
            ids.add(str(changed[JOB_ID_KEY]))
    return ids


def _newest_first(job: dict[str, Any]) -> float:
    created = when(job.get("created"))
    return -created.timestamp() if created is not None else 0.0


def best(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The copy to adopt: the most advanced, then the newest."""
    return sorted(jobs, key=lambda j: (rank(j), _newest_first(j), str(j.get("id"))))[0]


def refusal(props: dict[str, Any], job: dict[str, Any]) -> str | None:
    """Why ``job`` is not adopted onto the tile ``props`` describe now; None: adopt."""
    current = str(props.get("status", status.NOT_STARTED))
    if current == status.NOT_STARTED:
        return None
    if current == status.CREATING:
        return "its launch is being reconciled"
    if current == status.FINISHED:
        return f"it is finished with job {props.get(JOB_ID_KEY)}"
    if current in status.ACTIVE:
        return f"its job {props.get(JOB_ID_KEY)} is {current}"
    since, created = when(props.get("start_time")), when(job.get("created"))
    if since is not None and created is not None and created < since - CLOCK_SKEW:
        return "the job is older than the tile's last attempt"
    return None


class Adoption:
    """Finds and adopts the jobs this worker's campaign lost, once per back-end per
    run, and says whether new jobs may be created yet."""

    def __init__(
        self,
        definition: CampaignDefinition,
        job_db: WorkerJobDatabase,
        links: dict[str, BackendLink],
        *,
        skip: Iterable[str] = (),
        wait_s: float = WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.campaign = definition.id
        self.since: datetime = definition.created - CLOCK_SKEW
        self.job_db = job_db
        self.links = links
        # A pilot adopts onto its own tiles only: it tracks no other.
        self.only = set(job_db.only_tiles) if job_db.only_tiles is not None else None
        # Back-ends not listed yet in this run (those the egress policy refuses never are).
        self.unlisted = set(links) - set(skip)
        self.wait_s = wait_s
        self.clock = clock
        self.started = clock()
        # Tiles with lost jobs: waiting for a history lookup, or for their live job to end.
        self.waiting: dict[str, list[dict[str, Any]]] = {}
        self._history: dict[str, set[str]] = {}
        self._gave_up = False
        self._told: set[str] = set()

    def launches_allowed(self) -> bool:
        """True when every back-end was listed and every lost job settled, or after
        ``wait_s`` (then logged once)."""
        lookups = [t for t in self.waiting if t not in self._history]
        if not self.unlisted and not lookups:
            return True
        if self.clock() - self.started < self.wait_s:
            return False
        if not self._gave_up:
            self._gave_up = True
            logger.warning(
                "new jobs are created although %s could not be listed for %.0f s: a tile "
                "whose lost job is there may get a second job",
                ", ".join(sorted(self.unlisted)) or "some tiles' histories",
                self.wait_s,
            )
        return True

    def step(self, stats: dict[str, int]) -> None:
        """List the back-ends not listed yet, then settle every tile with lost jobs."""
        for name in sorted(self.unlisted):
            listing = list_jobs(self.links[name])
            if listing is None:
                continue
            self.unlisted.discard(name)
            for job in listing.jobs:
                tile = tile_of(self.campaign, job.get("title"))
                created = when(job.get("created"))
                if tile is None or (created is not None and created < self.since):
                    continue  # another campaign's, or a deleted campaign's of this name
                if self.only is not None and tile not in self.only:
                    continue
                self.waiting.setdefault(tile, []).append({**job, "backend": name})
        if self.waiting:
            self._settle(stats)

    def _settle(self, stats: dict[str, int]) -> None:
        rows = self.job_db.campaigns.jobs_by_tile(self.campaign, sorted(self.waiting))
        lookups = 0
        for row in rows:
            tile, props = str(row["tile"]), row["properties"]
            lost = [j for j in self.waiting.get(tile, []) if j["id"] not in known_ids(props)]
            if lost and tile not in self._history:
                if lookups >= MAX_LOOKUPS:
                    continue  # the next pass
                lookups += 1
                history = self.job_db.campaigns.history(self.campaign, tile)
                self._history[tile] = known_ids(props, history)
            lost = [j for j in lost if j["id"] not in self._history.get(tile, set())]
            if not lost:
                self.waiting.pop(tile, None)
                continue
            self.waiting[tile] = lost
            self._adopt(tile, props, best(lost), stats)
        for tile in set(self.waiting) - {str(r["tile"]) for r in rows}:
            self.waiting.pop(tile)  # no such tile (any longer)

    def _adopt(
        self, tile: str, props: dict[str, Any], job: dict[str, Any], stats: dict[str, int]
    ) -> None:
        where = f"job {job['id']} on {job['backend']} ({inert(job.get('status'), 50)})"
        why = refusal(props, job)
        current = str(props.get("status", status.NOT_STARTED))
        if why is not None:
            if current in status.ACTIVE - {status.CREATING}:
                if job["id"] not in self._told:  # once, not every round
                    self._told.add(job["id"])
                    logger.info("tile %s: %s left alone for now: %s", tile, where, why)
                return  # kept waiting: adopted instead of a retry if its job fails
            logger.info("tile %s: %s not adopted: %s", tile, where, why)
            stats["adopt: left alone"] += 1
            self.waiting.pop(tile, None)
            return
        details = {"adopted": ADOPTED, "job": job["id"], "backend": job["backend"],
                   "listed_status": inert(job.get("status"), 50)}  # fmt: skip
        changes: list[dict[str, Any]] = []
        if current != status.NOT_STARTED:
            changes.append({"tile": tile, "reset": True, "expect_status": current,
                            "details": {**details, "replaces": props.get(JOB_ID_KEY)}})  # fmt: skip
        changes.append(
            {
                "tile": tile,
                "status": status.CREATED,
                "expect_status": status.NOT_STARTED,
                "set": {
                    JOB_ID_KEY: job["id"],
                    "backend_name": job["backend"],
                    "title": job_title(self.campaign, tile),
                    "start_time": job.get("created") or props.get("start_time"),
                },
                "details": details,
            }
        )
        try:
            self.job_db.campaigns.change(
                self.campaign, changes, actor=self.job_db.actor, worker=self.job_db.worker_id
            )
        except ApiError as exc:  # changed meanwhile (another worker): looked at again
            logger.info("tile %s: %s not adopted now: %s", tile, where, inert(exc))
            return
        logger.warning("tile %s: %s %s (the catalogue did not know it)", tile, ADOPTED, where)
        stats["adopt: adopted"] += 1
        self.waiting.pop(tile, None)
