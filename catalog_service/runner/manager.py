"""The campaign runner: MultiBackendJobManager with crash-safe launches, isolated
failures, outage tolerance and several workers.

What it adds to the manager's loop:
- a launch records the intent (``creating``, the back-end and the job title) before it
  creates the job, then starts it at once; a crash anywhere leaves a tile that says
  where to look, and ``reconcile`` adopts, starts or re-creates it;
- a launch or tracking failure stays on its tile (``start_failed`` with the message, or
  a back-end paused after 429 or marked down after a connection error), and the other
  back-ends go on;
- ``finished`` is written together with the results link, ``error`` with the message;
- failed tiles are retried up to the campaign's ``max_attempts`` with its escalation;
- tiles are claimed through the job store (``WorkerJobDatabase``), a heartbeat keeps
  the worker's lease.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from openeo.extra.job_management import MultiBackendJobManager
from openeo.rest import OpenEoApiError
from openeo.rest.connection import Connection
from openeo.rest.job import BatchJob

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.client.jobdb import JobDatabaseError, stored_names
from catalog_service.egress import EgressRefused, check_url
from catalog_service.errors import TilekeeperError
from catalog_service.jobs import budget, status
from catalog_service.jobs.campaign import Backend, CampaignDefinition
from catalog_service.remote_text import inert
from catalog_service.runner.answers import (
    BadAnswer,
    JobDescription,
    checked_job_id,
    fault_reason,
    job_description,
)
from catalog_service.runner.creator import CampaignJobCreator, job_title
from catalog_service.runner.fitness import allowed_backends, unfit_reason
from catalog_service.runner.jobdb import WorkerJobDatabase
from catalog_service.runner.logins import UNREACHABLE, BackendDown, BackendLink, login
from catalog_service.runner.notify import FailureWindow, Notifier
from catalog_service.runner.reconcile import reconcile_creating
from catalog_service.settings import ProductSettings, RunnerSettings
from ingest.harvest import Harvester
from ingest.store import open_store

logger = logging.getLogger(__name__)
# openEO error codes that mean "not now" rather than "never" (openeo-python-client#838).
BUSY_CODES = frozenset({"TooManyRequests", "ConcurrentJobLimit", "JobLimitExceeded"})
MAX_MESSAGE = 1000  # the catalogue takes 2,000 characters; a tile's error stays short
BUSY_WAIT_S = 60.0  # how long a back-end that said 429 without Retry-After gets no new jobs


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def is_busy(exc: OpenEoApiError) -> bool:
    return exc.http_status_code == 429 or exc.code in BUSY_CODES


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


def _message(exc: BaseException) -> str:
    return inert(f"{type(exc).__name__}: {exc}", MAX_MESSAGE)


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


class CampaignJobManager(MultiBackendJobManager):
    """MultiBackendJobManager for one worker of a campaign."""

    def __init__(
        self,
        definition: CampaignDefinition,
        job_db: WorkerJobDatabase,
        links: dict[str, BackendLink],
        *,
        poll_sleep: float = 60,
        root_dir: str | Path | None = None,
    ) -> None:
        super().__init__(poll_sleep=int(poll_sleep), root_dir=root_dir, download_results=False)
        self.poll_sleep = poll_sleep  # type: ignore[assignment]
        self.definition = definition
        self.job_db = job_db
        self.links = links
        self.campaigns = job_db.campaigns
        self.settings = RunnerSettings()
        # One tracking thread per back-end, and per tile the time since its back-end
        # last said something valid about its job.
        self._trackers = ThreadPoolExecutor(max(1, len(links)), thread_name_prefix="track")
        self._silent_since: dict[Any, float] = {}
        # Jobs whose last start failed (5xx, garbage), with why: a job that cannot be
        # started for as long as the silence timeout ends in error like a silent one.
        self._start_faults: dict[str, str] = {}
        self._stop = threading.Event()
        # Finished tiles become products on the harvester's own threads (see ingest/).
        self.harvester: Harvester | None = None
        self.notifier = Notifier(definition.id, definition.notify)
        policy = definition.notify
        self.failures = FailureWindow(
            policy.failure_window_s, policy.failure_rate, policy.min_failures
        )
        self.budget = BudgetGuard(self.campaigns, definition.id, self._budget_reached)
        # Back-ends that cannot run the process (see fitness.py): no tile goes there.
        self.unfit: dict[str, str] = {}
        # The back-ends' active jobs, read when a pinned tile first needs them in a round,
        # and the launches on each back-end since that read.
        self._taken: dict[str, int] = {}
        self._active_by_backend: dict[str, int] | None = None
        for backend in definition.backends:
            self.add_backend(
                backend.name,
                connection=links[backend.name].get,
                parallel_jobs=backend.parallel_jobs,
            )
        job_db.launch_capacity = sum(b.parallel_jobs for b in definition.backends)

    # -- connections ----------------------------------------------------------------

    def _get_connection(self, backend_name: str, resilient: bool = True) -> Connection:
        # Our own logged-in connection: MBJM's "resilient" one retries POSTs on 5xx,
        # which can create a job twice.
        return self.links[backend_name].get()

    # -- launching ------------------------------------------------------------------

    def _launch_job(
        self,
        start_job: Callable[..., BatchJob],
        df: pd.DataFrame,
        i: Any,
        backend_name: str,
        stats: dict[str, int] | None = None,
    ) -> None:
        stats = stats if stats is not None else collections.defaultdict(int)
        order = int(i)
        tile = self.job_db.tile_of(order)
        chosen = self._backend_for(df.loc[i], backend_name)
        if chosen is None:
            stats["launch deferred (no allowed back-end free)"] += 1
            return
        backend_name = chosen
        link = self.links[backend_name]
        if not link.usable():
            stats["launch deferred (back-end unavailable)"] += 1
            return
        if not self.budget.allows_one_more():
            stats["launch deferred (budget reached)"] += 1
            return
        title = job_title(self.definition.id, tile)
        if not self.job_db.record_intent(order, backend_name, title, now()):
            stats["launch skipped (tile taken)"] += 1
            self._sync_row(df, i)
            return
        self._taken[backend_name] = self._taken.get(backend_name, 0) + 1
        self._sync_row(df, i)
        try:
            connection = link.get()
            job = start_job(
                row=df.loc[i],
                connection_provider=self._get_connection,
                connection=connection,
                provider=backend_name,
            )
        except (BackendDown, *UNREACHABLE) as exc:
            # The job may or may not exist: the tile stays `creating` and is reconciled
            # when the back-end answers again.
            link.mark_down(_message(exc))
            stats["launch interrupted (back-end unreachable)"] += 1
            return
        except OpenEoApiError as exc:
            if is_busy(exc):
                link.pause(f"{exc.http_status_code} {exc.code}", link.retry_after or BUSY_WAIT_S)
                self.job_db.update(order, status.NOT_STARTED, {})
                self._sync_row(df, i)
                stats["launch deferred (back-end busy)"] += 1
                return
            self._fault(link, exc)
            self._start_failed(df, i, order, tile, exc, stats)
            return
        except Exception as exc:  # a bad tile (missing parameter, ...) or a bad answer
            self._fault(link, exc)
            self._start_failed(df, i, order, tile, exc, stats)
            return
        if job is None:
            self.job_db.update(order, status.SKIPPED, {})
            self._sync_row(df, i)
            return
        try:
            checked_job_id(job.job_id)
        except BadAnswer as exc:
            self._start_failed(df, i, order, tile, exc, stats)
            return
        link.answered()
        logger.info("tile %s: job %s created on %s", tile, job.job_id, backend_name)
        self.budget.launched()
        self.job_db.update(order, status.CREATED, {"id": job.job_id})
        new_status = self._start(job, tile, stats, link)
        if new_status != status.CREATED:
            self.job_db.update(order, new_status, {})
        self._sync_row(df, i)
        stats["job launched"] += 1

    def _start(
        self,
        job: BatchJob,
        tile: str,
        stats: collections.abc.MutableMapping[str, int],
        link: BackendLink | None = None,
    ) -> str:
        """Start a created job; returns the tile's new status (``created`` when the
        start has to wait: it is tried again on the next round)."""
        try:
            job.start()
        except OpenEoApiError as exc:
            if is_busy(exc):
                logger.info("tile %s: back-end busy, job %s starts later", tile, job.job_id)
                return status.CREATED
            if exc.http_status_code is not None and exc.http_status_code < 500:
                logger.warning("tile %s: start of job %s refused: %s", tile, job.job_id, inert(exc))
                return status.START_FAILED
            reason = self._fault(link, exc) if link is not None else inert(exc)
            self._start_faults[str(job.job_id)] = f"its start failed: {reason}"
            logger.warning(
                "tile %s: starting job %s failed (%s); retried later", tile, job.job_id, reason
            )
            return status.CREATED
        except Exception as exc:  # unreachable, garbage: the start is tried again later
            reason = self._fault(link, exc) if link is not None else _message(exc)
            self._start_faults[str(job.job_id)] = f"its start failed: {reason}"
            logger.warning(
                "tile %s: starting job %s failed (%s); retried later", tile, job.job_id, reason
            )
            return status.CREATED
        self._start_faults.pop(str(job.job_id), None)
        stats["job started"] += 1
        return status.QUEUED

    def _start_failed(
        self,
        df: pd.DataFrame,
        i: Any,
        order: int,
        tile: str,
        exc: BaseException,
        stats: dict[str, int],
    ) -> None:
        message = _message(exc)
        logger.warning("tile %s: job creation failed: %s", tile, message)
        errors = self._errors_with(df.loc[i], message)
        self.job_db.update(order, status.START_FAILED, {"last_error": message, "errors": errors})
        self._sync_row(df, i)
        stats["start_job error"] += 1

    def _errors_with(self, row: pd.Series, message: str) -> list[dict[str, Any]]:
        previous = row.get("errors")
        errors = list(previous) if isinstance(previous, list) else []
        errors.append(
            {
                "attempt": int(row.get("attempts") or 0) or None,
                "at": now(),
                "backend": row.get("backend_name"),
                "job": row.get("id"),
                "message": message,
            }
        )
        return errors[-20:]

    def _sync_row(self, df: pd.DataFrame, i: Any) -> None:
        """Make the manager's row what the catalogue now holds, so its persist sends
        nothing twice."""
        for key, value in self.job_db.known(int(i)).items():
            if key not in df.columns:
                df[key] = pd.Series([None] * len(df), index=df.index, dtype=object)
            elif df[key].dtype != object:
                df[key] = df[key].astype(object)
            df.at[i, key] = value

    # -- tracking -------------------------------------------------------------------

    def _track_statuses(
        self, job_db: Any, stats: dict[str, int] | None = None
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """Ask every back-end about its active jobs, each back-end on its own thread (a
        slow one delays only itself), and write what each said as soon as it has
        answered. Nothing a back-end answers raises out of here."""
        stats = stats if stats is not None else collections.defaultdict(int)
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
            self._trackers.submit(self._observe, self.links[name], rows): name
            for name, rows in by_backend.items()
        }
        for future in as_completed(futures):
            observed = future.result()
            for seen in observed:
                self._apply(active, seen, ended, stats)
                for key, n in seen.counts.items():
                    stats[key] += n
            self._persist(active.loc[[seen.index for seen in observed]])
            if self.harvester is not None:
                for seen in observed:
                    if seen.index in ended.finished:
                        # The tile's properties by their stored names (a frame's
                        # job id column `id` is openeo:job_id).
                        self.harvester.submit(str(active.at[seen.index, "item_id"]),
                                              stored_names(_plain(active.loc[seen.index])))  # fmt: skip
        self._count_endings(len(ended.done), len(ended.failed))
        # Between tracking and launching: the costs of jobs that just ended count.
        self.budget.refresh()
        return ended.done, ended.failed, ended.canceled

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
            seen.fault = self._fault(link, exc)
            return seen
        except Exception as exc:  # whatever a back-end does, it stays on its tiles
            seen.fault = self._fault(link, exc)
            return seen
        link.answered()
        seen.job, seen.status = job, seen.described.status
        if seen.status == status.CREATED:
            # Created but not started: the start was lost (a crash) or deferred (429).
            seen.status = self._start(job, tile, seen.counts, link)
            if seen.status == status.CREATED:
                seen.fault = self._start_faults.get(job_id)
        if seen.status == status.ERROR and row.get("status") != status.ERROR:
            seen.error_message = self._error_message(job)
        seen.counts["job describe"] += 1
        return seen

    def _fault(self, link: BackendLink, exc: BaseException) -> str:
        """Count ``exc`` against the back-end when it is its fault; returns why."""
        if isinstance(exc, BackendDown):  # link.get() has marked it down already
            return _message(exc)
        reason = fault_reason(exc)
        if isinstance(exc, UNREACHABLE):
            link.mark_down(reason or _message(exc))
        elif reason is not None:
            link.fault(reason)
        else:  # a 4xx about one job, or our own bug: logged, the back-end not blamed
            logger.warning("back-end %s: %s", link.name, _message(exc))
        return reason or _message(exc)

    def _apply(
        self, active: pd.DataFrame, seen: Seen, ended: Endings, stats: dict[str, int]
    ) -> None:
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
            active.at[i, "errors"] = self._errors_with(row, message)
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
        self._start_faults.pop(str(row.get("id")), None)
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
        active.at[i, "errors"] = self._errors_with(row, message)

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

    # -- events ---------------------------------------------------------------------

    def _count_endings(self, finished: int, failed: int) -> None:
        for _ in range(finished):
            self.failures.add(False)
        for _ in range(failed):
            self.failures.add(True)
        if failed and self.failures.over():
            failures, total = self.failures.rate()
            window = self.definition.notify.failure_window_s
            self.notifier.event(
                "campaign.failure_rate",
                str(int(time.time() // window)),
                f"{failures} of the last {total} tiles over failed within {window:.0f} s "
                f"(threshold {self.definition.notify.failure_rate:.0%})",
                failures=failures,
                tiles=total,
                window_s=window,
            )

    def _budget_reached(self, committed: float, credits: float) -> None:
        self.notifier.event(
            "campaign.budget_reached",
            f"{credits:g}",
            f"budget of {credits:g} credits reached ({committed:.4g} spent or committed): "
            "no new job starts",
            budget=credits,
            committed=committed,
        )

    def _check_unreachable(self) -> None:
        limit = self.definition.notify.unreachable_s
        for link in self.links.values():
            if link.down_since is None:
                continue
            down_for = time.monotonic() - link.down_since
            if down_for > limit:
                since = datetime.fromtimestamp(time.time() - down_for, UTC)
                self.notifier.event(
                    "backend.unreachable",
                    f"{link.name}:{since:%Y%m%dT%H%M}",
                    f"back-end {link.name} unreachable for {down_for:.0f} s ({link.reason})",
                    backend=link.name,
                    since=since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    reason=link.reason,
                )

    def _error_message(self, job: BatchJob) -> str:
        """The job's last error log message, truncated and inert (it is shown to
        everyone who may read the campaign)."""
        try:
            logs = job.logs(level="error")
            if logs and isinstance(logs[-1], dict):
                return inert(logs[-1].get("message"))
        except Exception as exc:  # the back-end may not serve logs, or serve garbage
            logger.info("no error logs for job %s: %s", job.job_id, inert(exc))
            return f"job ended in error (its error log could not be read: {inert(exc, 300)})"
        return "job ended in error (no log message)"

    def on_job_error(self, job: BatchJob, row: pd.Series) -> None:
        pass  # the message is written with the status (see _track_statuses)

    # -- the loop -------------------------------------------------------------------

    def _offer_capacity(self) -> None:
        """No capacity on a paused or down back-end: MBJM hands tiles to back-ends in
        order, and tiles dealt to one that cannot take them would wait for it while
        the others idle."""
        self._taken, self._active_by_backend = {}, None
        for backend in self.definition.backends:
            usable = self.links[backend.name].usable() and backend.name not in self.unfit
            capacity = backend.parallel_jobs if usable else 0
            self.backends[backend.name] = self.backends[backend.name]._replace(
                parallel_jobs=capacity
            )

    def _backend_for(self, row: pd.Series, dealt: str) -> str | None:
        """The back-end a tile's job goes to: the one MBJM dealt it to when the tile
        may run there, else the first allowed, fit back-end with a free slot."""
        names = [b.name for b in self.definition.backends if b.name not in self.unfit]
        allowed = allowed_backends(dict(row.items()), names)
        if dealt in allowed:
            return dealt
        if self._active_by_backend is None:
            self._taken = {}  # the launches so far are in the counts read now
            by_backend = self.campaigns.summary(self.definition.id)["by_backend"]
            self._active_by_backend = {
                b: sum(n for s, n in counts.items() if s in status.ACTIVE)
                for b, counts in by_backend.items()
            }
        for backend in self.definition.backends:
            if backend.name not in allowed or not self.links[backend.name].usable():
                continue
            busy = self._active_by_backend.get(backend.name, 0) + self._taken.get(backend.name, 0)
            if busy < backend.parallel_jobs:
                return backend.name
        return None

    def retry_failed(self) -> int:
        """Reset failed tiles that have attempts left, with the escalated options."""
        policy = self.definition.retry
        if policy.max_attempts <= 1:
            return 0
        props = {"job_options": policy.escalation} if policy.escalation else {}
        count = self.campaigns.reset(
            self.definition.id,
            sorted(status.FAILED),
            props,
            actor=self.job_db.actor,
            below_attempts=policy.max_attempts,
            tiles=self.job_db.only_tiles,
        )
        if count:
            logger.info("%d failed tile(s) reset for another attempt", count)
        return count

    def run(self) -> dict[str, int]:
        """Run (or resume) until no tile waits or is active; returns the run's stats."""
        creator = CampaignJobCreator(self.definition)
        stats: dict[str, int] = collections.defaultdict(int)
        self._worker_pool = None
        heartbeat = Heartbeat(self.job_db, self._stop)
        heartbeat.start()
        self.notifier.start()
        if self.harvester is not None:
            caught = self.harvester.catch_up()
            if caught:
                logger.info("%d finished tile(s) to harvest from earlier runs", caught)
        try:
            while not self._stop.is_set():
                reconcile_creating(self, stats)
                self.retry_failed()
                self._offer_capacity()
                self._job_update_loop(job_db=self.job_db, start_job=creator, stats=stats)
                stats["run_jobs loop"] += 1
                self._check_unreachable()
                counts = self.job_db.count_by_status()
                logger.info("tiles: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
                active = sum(counts.get(s, 0) for s in status.ACTIVE)
                if self.budget.blocked and not active:
                    logger.warning(
                        "stopping: the budget is reached and no job is active; %d tile(s) "
                        "not started. Raise it with `tilekeeper campaign budget %s CREDITS` "
                        "and run again.",
                        counts.get(status.NOT_STARTED, 0),
                        self.definition.id,
                    )
                    stats["stopped: budget reached"] = 1
                    self._finish_harvest(stats)
                    break
                pending = active + counts.get(status.NOT_STARTED, 0)
                # The last active tile may have failed in this very round: retry it
                # before calling the campaign done.
                if pending == 0 and not self.retry_failed():
                    self._finish_harvest(stats)
                    if self.job_db.only_tiles is None:
                        self.notifier.event(
                            "campaign.finished",
                            json.dumps(counts, sort_keys=True),
                            f"campaign {self.definition.id} is over: "
                            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                            counts=counts,
                        )
                    break
                self._stop.wait(self.poll_sleep)
        finally:
            self._stop.set()
            self._trackers.shutdown(wait=False, cancel_futures=True)
            heartbeat.join(5)
            self.notifier.close()
            try:
                self.campaigns.leave(self.definition.id, self.job_db.worker_id)
            except TilekeeperError as exc:
                logger.warning("could not end the worker's lease: %s", exc)
        return dict(stats)

    def _finish_harvest(self, stats: dict[str, int]) -> None:
        if self.harvester is None:
            return
        logger.info("waiting for the last harvests")
        for outcome in self.harvester.wait():
            stats[f"product {outcome.result}"] += 1
        self.harvester.close()

    def stop(self) -> None:
        self._stop.set()


class BudgetGuard:
    """The campaign's credit budget as the runner applies it: refreshed from the
    catalogue every round (a budget raised meanwhile counts at once), with the jobs this
    worker launched since counted at the projected cost of a tile."""

    def __init__(
        self,
        campaigns: Campaigns,
        campaign_id: str,
        on_reached: Callable[[float, float], None] | None = None,
    ) -> None:
        self.campaigns = campaigns
        self.on_reached = on_reached
        self.campaign_id = campaign_id
        self.credits: float | None = None
        self.committed = 0.0
        self.mean_cost: float | None = None
        self.blocked = False

    def refresh(self) -> None:
        self.credits = self.campaigns.definition(self.campaign_id).budget
        if self.credits is None:  # no budget: spare the service the summary's scans
            self.blocked = False
            return
        summary = self.campaigns.summary(self.campaign_id)
        figures = summary["budget"]
        self.credits = figures["credits"]
        self.committed = float(figures["committed"])
        self.mean_cost = summary["finished"]["mean_costs"]
        self._update_blocked()

    def launched(self) -> None:
        self.committed += self.mean_cost or 0.0
        self._update_blocked()

    def allows_one_more(self) -> bool:
        return not self.blocked

    def _update_blocked(self) -> None:
        blocked = not budget.may_start(self.credits, self.committed, self.mean_cost)
        if blocked and not self.blocked:
            logger.warning(
                "budget reached: %.4g credits spent or committed to active jobs of %.4g "
                "(a tile costs %.4g on average); no new job starts",
                self.committed,
                self.credits or 0.0,
                self.mean_cost or 0.0,
            )
            if self.on_reached is not None and self.credits is not None:
                self.on_reached(self.committed, self.credits)
        elif self.blocked and not blocked:
            logger.info("budget allows new jobs again (%.4g of %.4g)", self.committed, self.credits)
        self.blocked = blocked


class Heartbeat(threading.Thread):
    """Renews the worker's lease while the loop sleeps or waits on a back-end."""

    def __init__(self, job_db: WorkerJobDatabase, stop: threading.Event) -> None:
        super().__init__(name="tilekeeper-heartbeat", daemon=True)
        self.http = HttpSession(job_db.http.root_url, auth=job_db.auth)
        self.campaigns = Campaigns(self.http)
        self.job_db = job_db
        self.stop = stop
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started": now()}

    def run(self) -> None:
        interval = max(1.0, self.job_db.lease_s / 4)
        while not self.stop.is_set():
            try:
                self.campaigns.heartbeat(
                    self.job_db.collection_id, self.job_db.worker_id, self.job_db.lease_s, self.info
                )
            except TilekeeperError as exc:
                logger.warning("heartbeat failed: %s", exc)
            self.stop.wait(interval)


def build_manager(
    root_url: str,
    campaign_id: str,
    *,
    worker: str | None = None,
    poll_sleep: float = 60,
    lease_s: float | None = None,
    root_dir: str | Path | None = None,
    connect: Callable[[Backend], Connection] = login,
    auth: requests.auth.AuthBase | None = None,
    harvest: bool = True,
    only_tiles: list[str] | None = None,
) -> CampaignJobManager:
    lease = lease_s or max(60.0, 4 * poll_sleep)
    job_db = WorkerJobDatabase(
        campaign_id, root_url, worker=worker or default_worker_id(), lease_s=lease, auth=auth
    )
    job_db.only_tiles = only_tiles
    definition = job_db.campaigns.definition(campaign_id)
    if not definition.backends:
        raise TilekeeperError(
            f"campaign {definition.id} has no back-ends: give them at creation "
            "(`--backend name=URL[@parallel_jobs]`)"
        )
    CampaignJobCreator(definition)  # fails early when the campaign has no process
    settings = RunnerSettings()
    links = {b.name: BackendLink.configured(b, connect, settings) for b in definition.backends}
    refused = refused_backends(definition.backends)
    for name, link in links.items():
        if name not in refused:
            with contextlib.suppress(BackendDown):
                link.get()  # a missing login fails now, with what to do; a down one waits
    manager = CampaignJobManager(
        definition, job_db, links, poll_sleep=poll_sleep, root_dir=root_dir
    )
    manager.unfit = check_fitness(definition, links, refused)
    if harvest:
        store = open_store(ProductSettings())
        manager.harvester = Harvester(
            HttpSession(root_url, auth=auth), campaign_id, store, lambda name: links[name].get()
        )
    return manager


def refused_backends(backends: list[Backend]) -> dict[str, str]:
    """Back-ends whose URL the egress policy refuses (catalog_service/egress.py), with why."""
    refused: dict[str, str] = {}
    for backend in backends:
        try:
            check_url(backend.url)
        except EgressRefused as exc:
            refused[backend.name] = str(exc)
    return refused


def check_fitness(
    definition: CampaignDefinition,
    links: dict[str, BackendLink],
    refused: dict[str, str] | None = None,
) -> dict[str, str]:
    """Back-ends that cannot run the campaign's process, or that the egress policy
    ``refused``, with why; each is logged. A back-end that cannot be asked now (down)
    is not held against it."""
    unfit = dict(refused or {})
    for name, why in unfit.items():
        logger.warning("back-end %s gets no tiles: %s", name, why)
    for name, link in links.items():
        if definition.process is None or name in unfit:
            continue
        try:
            reason = unfit_reason(link.get(), definition.process)
        except Exception as exc:  # down, or answering garbage: not held against it now
            logger.warning(
                "back-end %s: its fitness could not be checked (%s)", name, _message(exc)
            )
            continue
        if reason:
            unfit[name] = reason
            logger.warning("back-end %s gets no tiles: %s", name, reason)
    if unfit and len(unfit) == len(links):
        raise TilekeeperError(
            "no back-end of the campaign can run it: "
            + "; ".join(f"{name}: {reason}" for name, reason in unfit.items())
        )
    return unfit


def run_campaign(root_url: str, campaign_id: str, **kwargs: Any) -> dict[str, int]:
    """Run (or resume) a campaign until no tile waits or is active."""
    manager = build_manager(root_url, campaign_id, **kwargs)
    logger.info(
        "worker %s runs campaign %s on %s",
        manager.job_db.worker_id,
        campaign_id,
        ", ".join(manager.links),
    )
    return manager.run()
