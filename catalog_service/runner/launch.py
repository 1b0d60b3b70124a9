"""Launching tiles' jobs: crash-safe creation, then an immediate start.

A launch records the intent (``creating``, the back-end and the job title) before it
creates the job, then starts it at once; a crash anywhere leaves a tile that says where
to look, and ``reconcile`` adopts, starts or re-creates it. A launch failure stays on its
tile (``start_failed`` with the message, or a back-end paused after 429 or marked down
after a connection error), and the other back-ends go on."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import pandas as pd
from openeo.rest import OpenEoApiError
from openeo.rest.job import BatchJob

from catalog_service.jobs import status
from catalog_service.jobs.campaign import CampaignDefinition
from catalog_service.remote_text import inert
from catalog_service.runner.adapter import ConnectionProvider, StartJob
from catalog_service.runner.answers import BadAnswer, checked_job_id
from catalog_service.runner.budget_guard import BudgetGuard
from catalog_service.runner.creator import job_title
from catalog_service.runner.faults import blame, error_message, errors_with, is_busy, now
from catalog_service.runner.fitness import allowed_backends
from catalog_service.runner.jobdb import WorkerJobDatabase
from catalog_service.runner.logins import UNREACHABLE, BackendDown, BackendLink
from catalog_service.runner.report import LAUNCHED, STARTED

logger = logging.getLogger(__name__)
BUSY_WAIT_S = 60.0  # how long a back-end that said 429 without Retry-After gets no new jobs


class JobStarter:
    """Starts created jobs, and remembers why a start failed (5xx, garbage): a job that
    cannot be started for as long as the silence timeout ends in error like a silent
    one (see tracking.py)."""

    def __init__(self) -> None:
        self._faults: dict[str, str] = {}

    def start(
        self,
        job: BatchJob,
        tile: str,
        stats: MutableMapping[str, int],
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
            reason = blame(link, exc) if link is not None else inert(exc)
            self._faults[str(job.job_id)] = f"its start failed: {reason}"
            logger.warning(
                "tile %s: starting job %s failed (%s); retried later", tile, job.job_id, reason
            )
            return status.CREATED
        except Exception as exc:  # unreachable, garbage: the start is tried again later
            reason = blame(link, exc) if link is not None else error_message(exc)
            self._faults[str(job.job_id)] = f"its start failed: {reason}"
            logger.warning(
                "tile %s: starting job %s failed (%s); retried later", tile, job.job_id, reason
            )
            return status.CREATED
        self._faults.pop(str(job.job_id), None)
        stats[STARTED] += 1
        return status.QUEUED

    def fault_of(self, job_id: str) -> str | None:
        """Why the job's last start failed, if it did."""
        return self._faults.get(job_id)

    def forget(self, job_id: str) -> None:
        self._faults.pop(job_id, None)


class Launcher:
    """Launches the tiles MultiBackendJobManager deals to the back-ends, onto the
    back-ends they may run on (see fitness.py), within the budget."""

    def __init__(
        self,
        definition: CampaignDefinition,
        job_db: WorkerJobDatabase,
        links: dict[str, BackendLink],
        budget: BudgetGuard,
        starter: JobStarter,
        unfit: dict[str, str],
    ) -> None:
        self.definition = definition
        self.job_db = job_db
        self.links = links
        self.budget = budget
        self.starter = starter
        # Back-ends that cannot run the process (see fitness.py): no tile goes there.
        self.unfit = unfit
        # The back-ends' active jobs, read when a pinned tile first needs them in a round,
        # and the launches on each back-end since that read.
        self._taken: dict[str, int] = {}
        self._active_by_backend: dict[str, int] | None = None

    def capacities(self) -> dict[str, int]:
        """Each back-end's capacity for the coming round. None on a paused or down
        back-end: MBJM hands tiles to back-ends in order, and tiles dealt to one that
        cannot take them would wait for it while the others idle."""
        self._taken, self._active_by_backend = {}, None
        capacities = {}
        for backend in self.definition.backends:
            usable = self.links[backend.name].usable() and backend.name not in self.unfit
            capacities[backend.name] = backend.parallel_jobs if usable else 0
        return capacities

    def __call__(
        self,
        start_job: StartJob,
        df: pd.DataFrame,
        i: Any,
        backend_name: str,
        stats: dict[str, int],
        connection_provider: ConnectionProvider,
    ) -> None:
        order = int(i)
        tile = self.job_db.tile_of(order)
        chosen = self.backend_for(df.loc[i], backend_name)
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
            self.sync_row(df, i)
            return
        self._taken[backend_name] = self._taken.get(backend_name, 0) + 1
        self.sync_row(df, i)
        try:
            connection = link.get()
            job = start_job(
                row=df.loc[i],
                connection_provider=connection_provider,
                connection=connection,
                provider=backend_name,
            )
        except (BackendDown, *UNREACHABLE) as exc:
            # The job may or may not exist: the tile stays `creating` and is reconciled
            # when the back-end answers again.
            link.mark_down(error_message(exc))
            stats["launch interrupted (back-end unreachable)"] += 1
            return
        except OpenEoApiError as exc:
            if is_busy(exc):
                link.pause(f"{exc.http_status_code} {exc.code}", link.retry_after or BUSY_WAIT_S)
                self.job_db.update(order, status.NOT_STARTED, {})
                self.sync_row(df, i)
                stats["launch deferred (back-end busy)"] += 1
                return
            blame(link, exc)
            self._start_failed(df, i, order, tile, exc, stats)
            return
        except Exception as exc:  # a bad tile (missing parameter, ...) or a bad answer
            blame(link, exc)
            self._start_failed(df, i, order, tile, exc, stats)
            return
        if job is None:
            self.job_db.update(order, status.SKIPPED, {})
            self.sync_row(df, i)
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
        new_status = self.starter.start(job, tile, stats, link)
        if new_status != status.CREATED:
            self.job_db.update(order, new_status, {})
        self.sync_row(df, i)
        stats[LAUNCHED] += 1

    def backend_for(self, row: pd.Series, dealt: str) -> str | None:
        """The back-end a tile's job goes to: the one MBJM dealt it to when the tile
        may run there, else the first allowed, fit back-end with a free slot."""
        names = [b.name for b in self.definition.backends if b.name not in self.unfit]
        allowed = allowed_backends(dict(row.items()), names)
        if dealt in allowed:
            return dealt
        if self._active_by_backend is None:
            self._taken = {}  # the launches so far are in the counts read now
            by_backend = self.job_db.campaigns.summary(self.definition.id)["by_backend"]
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

    def _start_failed(
        self,
        df: pd.DataFrame,
        i: Any,
        order: int,
        tile: str,
        exc: BaseException,
        stats: dict[str, int],
    ) -> None:
        message = error_message(exc)
        logger.warning("tile %s: job creation failed: %s", tile, message)
        errors = errors_with(df.loc[i], message)
        self.job_db.update(order, status.START_FAILED, {"last_error": message, "errors": errors})
        self.sync_row(df, i)
        stats["start_job error"] += 1

    def sync_row(self, df: pd.DataFrame, i: Any) -> None:
        """Make the manager's row what the catalogue now holds, so its persist sends
        nothing twice."""
        for key, value in self.job_db.known(int(i)).items():
            if key not in df.columns:
                df[key] = pd.Series([None] * len(df), index=df.index, dtype=object)
            elif df[key].dtype != object:
                df[key] = df[key].astype(object)
            df.at[i, key] = value
