"""Reconciling tiles whose launch was interrupted with what the back-ends hold.

A tile in ``creating`` names its back-end and its job's title (``{campaign} {tile}``).
Whatever stopped the launch (kill -9, a lost answer, a back-end gone down), the
back-end's job list tells what happened: a job with that title is adopted (and started
if it never was), extra copies are deleted, and a tile whose job never reached the
back-end goes back to not_started, so it is created once more and only once."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from openeo.rest.job import BatchJob

from catalog_service.jobs import status
from catalog_service.remote_text import inert
from catalog_service.runner.creator import job_title
from catalog_service.runner.jobdb import WorkerJobDatabase
from catalog_service.runner.listing import list_jobs
from catalog_service.runner.logins import BackendLink

logger = logging.getLogger(__name__)
# How far the back-end's clock may be behind ours when matching a job to an intent.
CLOCK_SKEW = timedelta(minutes=10)
# Duplicates of one tile's job deleted at most (each delete is a request to a back-end
# that has just misbehaved; the loop must not wait on thousands of them).
MAX_DISCARDS = 10
# Most advanced first: the copy to keep.
_PREFERENCE = {
    status.FINISHED: 0,
    status.RUNNING: 1,
    status.QUEUED: 2,
    status.CREATED: 3,
    status.ERROR: 4,
    status.CANCELED: 5,
}


class StartsJobs(Protocol):
    """Starts an adopted job that was created but never started (launch.JobStarter);
    returns the tile's new status, ``created`` when the start has to wait."""

    def __call__(self, job: BatchJob, tile: str, stats: MutableMapping[str, int]) -> str: ...


def rank(job: dict[str, Any]) -> int:
    """Where a listed job stands in the preference above (lower: keep it)."""
    return _PREFERENCE.get(str(job.get("status")), 9)


def when(value: Any) -> datetime | None:
    """A timestamp, in UTC when it names no offset (a back-end's may not)."""
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def candidates(
    listing: list[dict[str, Any]], title: str, since: Any, earlier_jobs: set[str]
) -> list[dict[str, Any]]:
    """Jobs of ``listing`` made for the launch that started at ``since``."""
    start = when(since)
    found = []
    for job in listing:
        if job.get("title") != title or job.get("id") in earlier_jobs:
            continue
        created = when(job.get("created"))
        if start is not None and created is not None and created < start - CLOCK_SKEW:
            continue  # an earlier attempt's job
        found.append(job)
    return sorted(found, key=lambda j: (rank(j), j.get("id")))


def reconcile_creating(
    job_db: WorkerJobDatabase,
    links: dict[str, BackendLink],
    campaign_id: str,
    start: StartsJobs,
    stats: dict[str, int],
) -> None:
    """Settle this worker's tiles left ``creating`` with what their back-ends hold."""
    frame = job_db.claim_active(frozenset({status.CREATING}))
    if frame.empty:
        return
    listings: dict[str, list[dict[str, Any]] | None] = {}
    for i in frame.index:
        row = frame.loc[i]
        order, tile, backend = int(i), str(row["item_id"]), str(row.get("backend_name"))
        link = links.get(backend)
        if link is None:
            job_db.update(order, status.NOT_STARTED, {})
            continue
        if backend not in listings:
            listings[backend] = _listing(link)
        listing = listings[backend]
        if listing is None:
            continue  # the back-end is down: the tile waits, still `creating`
        earlier = {str(e.get("job")) for e in row.get("errors") or [] if isinstance(e, dict)}
        found = candidates(listing, job_title(campaign_id, tile), row.get("start_time"), earlier)
        if not found:
            logger.info(
                "tile %s: its job never reached %s; it will be created again", tile, backend
            )
            job_db.update(order, status.NOT_STARTED, {})
            stats["reconcile: re-create"] += 1
            continue
        keep, extra = found[0], found[1:]
        connection = link.get()
        for job in extra[:MAX_DISCARDS]:
            _discard(connection, job, tile)
            stats["reconcile: duplicate removed"] += 1
        if len(extra) > MAX_DISCARDS:
            logger.warning(
                "tile %s: %d more copies of its job on %s left there (a back-end that keeps "
                "creating them is not ours to clean up)",
                tile,
                len(extra) - MAX_DISCARDS,
                backend,
            )
        job_id = str(keep["id"])
        logger.info(
            "tile %s: adopting job %s on %s (%s)",
            tile,
            job_id,
            backend,
            inert(keep.get("status"), 50),
        )
        job_db.update(order, status.CREATED, {"id": job_id})
        stats["reconcile: adopted"] += 1
        if keep.get("status") == status.CREATED:
            new = start(connection.job(job_id), tile, stats)
            if new != status.CREATED:
                job_db.update(order, new, {})
        # Later statuses (queued, running, finished, error) come with the next round of
        # tracking, with their side effects (results link, error message).


def _listing(link: BackendLink) -> list[dict[str, Any]] | None:
    """The back-end's jobs (entries that do not parse, or have an unusable id, left
    out), or None when it cannot tell now."""
    listing = list_jobs(link)
    return None if listing is None else listing.jobs


def _discard(connection: Any, job: dict[str, Any], tile: str) -> None:
    """Remove a second job of one tile: stop it if it runs, then delete it."""
    handle = connection.job(str(job["id"]))
    try:
        if job.get("status") in (status.QUEUED, status.RUNNING):
            handle.stop()
        handle.delete()
        logger.warning("tile %s: deleted duplicate job %s", tile, job["id"])
    except Exception as exc:  # left on the back-end; the tile has its one job
        logger.warning(
            "tile %s: could not delete duplicate job %s: %s", tile, job["id"], inert(exc)
        )
