"""Tracking the active jobs: every back-end asked on its own thread, what each says
written as soon as it has answered, and nothing a back-end answers raised out of here.

``finished`` is written together with the results link, ``error`` with the message of
the job's error log; a job no back-end says anything valid about (or that cannot be
started) for ``silent_job_timeout_s`` ends in error instead of waiting for ever."""

from __future__ import annotations

import collections
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from openeo.rest import OpenEoApiError
from openeo.rest.connection import Connection
from openeo.rest.job import BatchJob

from catalog_service.client.jobdb import JobDatabaseError, stored_names
from catalog_service.jobs import status
from catalog_service.remote_text import inert
from catalog_service.runner.answers import (
    BadAnswer,
    JobDescription,
    checked_job_id,
    job_description,
)
from catalog_service.runner.faults import MAX_MESSAGE, blame, errors_with, now
from catalog_service.runner.harvest import Harvest
from catalog_service.runner.jobdb import WorkerJobDatabase
from catalog_service.runner.launch import JobStarter
from catalog_service.runner.logins import BackendLink
from catalog_service.settings import RunnerSettings

logger = logging.getLogger(__name__)


def results_link(connection: Connection, job_id: str) -> dict[str, Any]:
    return {
        "rel": "results",
        "href": f"{connection.root_url.rstrip('/')}/jobs/{job_id}/results",
        "type": "application/json",
        "title": "openEO job results",
    }


def _plain(row: pd.Series) -> dict[str, Any]:
    """A manager row as JSON-able properties (pandas' NaN for missing values dropped)."""
    return {k: v for k, v in row.items() if isinstance(v, str | int | float) and v == v}


@dataclass
class Seen:
    """What a back-end said about one tile's job in a round: a valid description
    (with the status after a start, and the error log's message), a ``problem`` that
    fails the tile, or a ``fault`` (no valid answer this round)."""

    index: Any
    row: pd.Series
    job: BatchJob | None = None
    described: JobDescription | None = None
    status: str | None = None
    error_message: str | None = None
    problem: str | None = None
    fault: str | None = None
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class Endings:
    """The jobs that ended in a round, as MultiBackendJobManager hears of them."""

    done: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)
    canceled: list[Any] = field(default_factory=list)
    finished: set[Any] = field(default_factory=set)


class Tracker:
    """Tracks the active jobs of one worker's tiles."""

    def __init__(
        self,
        job_db: WorkerJobDatabase,
        links: dict[str, BackendLink],
        starter: JobStarter,
        harvest: Harvest | None,
        settings: RunnerSettings,
    ) -> None:
        self.job_db = job_db
        self.links = links
        self.starter = starter
        # Finished tiles become products on the harvest's own threads (see ingest/).
        self.harvest = harvest
        self.settings = settings
        # One tracking thread per back-end, and per tile the time since its back-end
        # last said something valid about its job.
        self._threads = ThreadPoolExecutor(max(1, len(links)), thread_name_prefix="track")
        self._silent_since: dict[Any, float] = {}

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def track(self, stats: dict[str, int]) -> Endings:
        """Ask every back-end about its active jobs, each back-end on its own thread (a
        slow one delays only itself), and write what each said as soon as it has
        answered. Nothing a back-end answers raises out of here."""
        active = self.job_db.claim_active().copy()
        for column in ("running_start_time", "last_error", "errors", "costs"):
            if column not in active.columns:
                active[column] = pd.Series([None] * len(active), index=active.index, dtype=object)
        by_backend: dict[str, list[tuple[Any, pd.Series]]] = {}
        for i in active.index:
            row = active.loc[i]
            link = self.links.get(str(row.get("backend_name")))
            if link is not None and row.get("id"):
                by_backend.setdefault(link.name, []).append((i, row))
        ended = Endings()
        futures = {
            self._threads.submit(self._observe, self.links[name], rows): name
            for name, rows in by_backend.items()
        }
        for future in as_completed(futures):
            observed = future.result()
            for seen in observed:
                self._apply(active, seen, ended)
                for key, n in seen.counts.items():
                    stats[key] += n
            self._persist(active.loc[[seen.index for seen in observed]])
            if self.harvest is not None:
                for seen in observed:
                    if seen.index in ended.finished:
                        # The tile's properties by their stored names (a frame's
                        # job id column `id` is openeo:job_id).
                        self.harvest.submit(str(active.at[seen.index, "item_id"]),
                                            stored_names(_plain(active.loc[seen.index])))  # fmt: skip
        return ended

    def _observe(self, link: BackendLink, rows: list[tuple[Any, pd.Series]]) -> list[Seen]:
        """What ``link``'s back-end says about each of ``rows``' jobs (on its thread).
        A round spends at most twice the request timeout on one back-end; the order is
        shuffled so that a slow one still gets to every job over a few rounds."""
        rows = random.sample(rows, len(rows))
        budget_end = time.monotonic() + 2 * self.settings.request_timeout_s
        observed = []
        for i, row in rows:
            if not link.usable():
                observed.append(Seen(i, row, fault=link.reason or "back-end unavailable"))
                continue
            if time.monotonic() > budget_end:
                observed.append(Seen(i, row, fault="not asked this round (a slow back-end)"))
                continue
            observed.append(self._ask(link, i, row))
        return observed

    def _ask(self, link: BackendLink, i: Any, row: pd.Series) -> Seen:
        seen = Seen(i, row)
        job_id, tile = str(row.get("id")), str(row["item_id"])
        try:
            checked_job_id(row.get("id"))
            job = link.get().job(job_id)
            seen.described = job_description(job.describe(), job_id)
        except BadAnswer as exc:
            seen.problem = str(exc)
            return seen
        except OpenEoApiError as exc:
            if exc.http_status_code == 404:
                seen.problem = f"job {job_id} no longer exists on back-end {link.name}"
                return seen
            seen.fault = blame(link, exc)
            return seen
        except Exception as exc:  # whatever a back-end does, it stays on its tiles
            seen.fault = blame(link, exc)
            return seen
        link.answered()
        seen.job, seen.status = job, seen.described.status
        if seen.status == status.CREATED:
            # Created but not started: the start was lost (a crash) or deferred (429).
            seen.status = self.starter.start(job, tile, seen.counts, link)
            if seen.status == status.CREATED:
                seen.fault = self.starter.fault_of(job_id)
        if seen.status == status.ERROR and row.get("status") != status.ERROR:
            seen.error_message = _error_message(job)
        seen.counts["job describe"] += 1
        return seen

    def _apply(self, active: pd.DataFrame, seen: Seen, ended: Endings) -> None:
        """Write what a back-end said about one job into the round's frame."""
        i, row = seen.index, seen.row
        backend, job_id, previous = row.get("backend_name"), row.get("id"), row.get("status")
        if seen.problem is not None:
            self._fail(active, i, row, f"back-end {backend}: {seen.problem}")
            ended.failed.append((seen.job, row))
            return
        if seen.described is None:
            self._silence(active, i, row, seen.fault or "no answer")
            return
        if seen.fault is None:
            self._silent_since.pop(i, None)
        elif self._silence(active, i, row, seen.fault):
            return
        new = str(seen.status)
        if new == status.RUNNING and previous != status.RUNNING:
            active.loc[i, "running_start_time"] = now()
        if new == status.FINISHED and previous != status.FINISHED:
            assert seen.job is not None
            self.job_db.attach_links(int(i), [results_link(seen.job.connection, str(job_id))])
            ended.done.append((seen.job, row))
            ended.finished.add(i)
        if new == status.ERROR and previous != status.ERROR:
            message = seen.error_message or "job ended in error (no log message)"
            active.loc[i, "last_error"] = message
            active.at[i, "errors"] = errors_with(row, message)
            ended.failed.append((seen.job, row))
        if new == status.CANCELED and previous != status.CANCELED:
            ended.canceled.append((seen.job, row))
        if new != previous:
            logger.info(
                "tile %s: %s -> %s (job %s on %s)", row["item_id"], previous, new, job_id, backend
            )
        active.loc[i, "status"] = new
        for key, value in seen.described.usage_texts().items():
            if key not in active.columns:
                active[key] = pd.Series([None] * len(active), index=active.index, dtype=object)
            active.loc[i, key] = value
        if seen.described.costs is not None:
            active.loc[i, "costs"] = seen.described.costs

    def _silence(self, active: pd.DataFrame, i: Any, row: pd.Series, reason: str) -> bool:
        """No valid answer about a job this round, or no start: after
        ``silent_job_timeout_s`` of them the tile ends in error (retried as the campaign
        says) instead of waiting for a back-end that may never answer again. True when
        the tile ended so."""
        since = self._silent_since.setdefault(i, time.monotonic())
        silent_s = time.monotonic() - since
        if silent_s < self.settings.silent_job_timeout_s:
            return False
        self._silent_since.pop(i, None)
        self.starter.forget(str(row.get("id")))
        self._fail(
            active,
            i,
            row,
            f"no progress from back-end {row.get('backend_name')} with job "
            f"{row.get('id')} for {silent_s:.0f} s (the last: {reason}); "
            "TILEKEEPER_RUNNER_SILENT_JOB_TIMEOUT_S sets how long to wait",
        )
        return True

    def _fail(self, active: pd.DataFrame, i: Any, row: pd.Series, message: str) -> None:
        message = inert(message, MAX_MESSAGE)
        logger.warning("tile %s: %s", row["item_id"], message)
        active.loc[i, "status"] = status.ERROR
        active.loc[i, "last_error"] = message
        active.at[i, "errors"] = errors_with(row, message)

    def _persist(self, frame: pd.DataFrame) -> None:
        """Write a back-end's changes; when the catalogue refuses them together, each
        alone, so one refused value (logged) holds up no other tile."""
        try:
            self.job_db.persist(frame)
        except JobDatabaseError as exc:
            if len(frame) <= 1:
                logger.warning("a job change was refused: %s", inert(exc))
                return
            for index in frame.index:
                self._persist(frame.loc[[index]])


def _error_message(job: BatchJob) -> str:
    """The job's last error log message, truncated and inert (it is shown to everyone
    who may read the campaign)."""
    try:
        logs = job.logs(level="error")
        if logs and isinstance(logs[-1], dict):
            return inert(logs[-1].get("message"))
    except Exception as exc:  # the back-end may not serve logs, or serve garbage
        logger.info("no error logs for job %s: %s", job.job_id, inert(exc))
        return f"job ended in error (its error log could not be read: {inert(exc, 300)})"
    return "job ended in error (no log message)"
