"""The one place that subclasses openEO's MultiBackendJobManager (MBJM) and touches its
private parts.

MBJM's round (``_job_update_loop``) is kept: it reads the tiles to launch, deals them to
back-ends by free capacity, persists each launch and calls the job hooks. What it does
per job is replaced, through private methods that nothing in openEO promises to keep:

- ``_launch_job`` -> the campaign's launch (catalog_service/runner/launch.py);
- ``_track_statuses`` -> the campaign's tracking (catalog_service/runner/tracking.py);
- ``_get_connection`` -> our own logged-in connection: MBJM's "resilient" one retries
  POSTs on 5xx, which can create a job twice.

``WRITTEN_FOR`` holds the signatures of the MBJM methods this module overrides or calls,
as the adapter was written for them; tests/test_runner_adapter.py compares them with the
installed openeo, so an upgrade that changes one fails there, not silently in a run.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from openeo.extra.job_management import MultiBackendJobManager
from openeo.rest.connection import Connection
from openeo.rest.job import BatchJob

from catalog_service.jobs.campaign import Backend
from catalog_service.runner.jobdb import WorkerJobDatabase

# The signatures (str(inspect.signature(...)) of MultiBackendJobManager's methods) this
# adapter was written for: openeo 0.53.0.
WRITTEN_FOR: dict[str, str] = {
    "__init__": (
        "(self, poll_sleep: int = 60, root_dir: Union[str, pathlib.Path, NoneType] = '.', *, "
        "download_results: bool = True, cancel_running_job_after: Optional[int] = None)"
    ),
    "_get_connection": (
        "(self, backend_name: str, resilient: bool = True) -> openeo.rest.connection.Connection"
    ),
    "_launch_job": "(self, start_job, df, i, backend_name, stats: Optional[dict] = None)",
    "_track_statuses": (
        "(self, job_db: openeo.extra.job_management._interface.JobDatabaseInterface, "
        "stats: Optional[dict] = None) -> Tuple[List, List, List]"
    ),
    "_job_update_loop": (
        "(self, job_db: openeo.extra.job_management._interface.JobDatabaseInterface, "
        "start_job: Callable[[], openeo.rest.job.BatchJob], stats: Optional[dict] = None)"
    ),
    "on_job_error": "(self, job: openeo.rest.job.BatchJob, row)",
}
# What MBJM hears of a round's ended jobs: (job, row) pairs done, failed, canceled.
Ended = tuple[list[Any], list[Any], list[Any]]
# MBJM's ``start_job``: called with the row, a connection and the back-end's name.
StartJob = Callable[..., BatchJob | None]
ConnectionProvider = Callable[..., Connection]


class Launches(Protocol):
    """Launches one tile's job; MBJM dealt the tile in row ``i`` of ``df`` to
    ``backend_name``."""

    def __call__(
        self,
        start_job: StartJob,
        df: pd.DataFrame,
        i: Any,
        backend_name: str,
        stats: dict[str, int],
        connection_provider: ConnectionProvider,
    ) -> None: ...


class Tracks(Protocol):
    """Asks the back-ends about the active jobs and writes what they said; returns the
    jobs that ended in this round."""

    def __call__(self, stats: dict[str, int]) -> Ended: ...


class MultiBackendAdapter(MultiBackendJobManager):
    """MBJM whose per-job work is the campaign's (``launch``, ``track``), over the
    runner's own connections (``connection_for``)."""

    def __init__(
        self,
        backends: Sequence[Backend],
        connection_for: Callable[[str], Connection],
        launch: Launches,
        track: Tracks,
        *,
        root_dir: str | Path | None = None,
    ) -> None:
        # Results are harvested (ingest/), not downloaded by MBJM; the runner's loop
        # sleeps itself, so MBJM's poll_sleep is never used.
        super().__init__(root_dir=root_dir, download_results=False)
        self._connection_for = connection_for
        self._launch = launch
        self._track = track
        for backend in backends:
            self.add_backend(
                backend.name,
                connection=functools.partial(connection_for, backend.name),
                parallel_jobs=backend.parallel_jobs,
            )

    def run_round(
        self, job_db: WorkerJobDatabase, start_job: StartJob, stats: dict[str, int]
    ) -> None:
        """One round of MBJM's loop: track, then launch into the free capacity."""
        # MBJM's thread pool (threaded starts, downloads) is never used: without it the
        # round skips the pool's updates.
        self._worker_pool = None
        # MBJM annotates start_job as taking no arguments, yet calls it with the row, the
        # connection and the back-end's name (our _launch_job passes them on).
        self._job_update_loop(job_db=job_db, start_job=start_job, stats=stats)  # type: ignore[arg-type]

    def set_capacity(self, backend_name: str, parallel_jobs: int) -> None:
        """How many jobs MBJM deals to a back-end in the next rounds (0: none)."""
        self.backends[backend_name] = self.backends[backend_name]._replace(
            parallel_jobs=parallel_jobs
        )

    # -- MBJM's private methods, overridden (signatures pinned in WRITTEN_FOR) ----------

    def _get_connection(self, backend_name: str, resilient: bool = True) -> Connection:
        # Our own logged-in connection: MBJM's "resilient" one retries POSTs on 5xx,
        # which can create a job twice.
        return self._connection_for(backend_name)

    def _launch_job(
        self,
        start_job: StartJob,
        df: pd.DataFrame,
        i: Any,
        backend_name: str,
        stats: dict[str, int] | None = None,
    ) -> None:
        counts: dict[str, int] = stats if stats is not None else collections.defaultdict(int)
        self._launch(start_job, df, i, backend_name, counts, self._get_connection)

    def _track_statuses(self, job_db: Any, stats: dict[str, int] | None = None) -> Ended:
        # The job store is the campaign's own (the tracker holds it); MBJM passes the same.
        return self._track(stats if stats is not None else collections.defaultdict(int))

    def on_job_error(self, job: BatchJob, row: pd.Series) -> None:
        pass  # MBJM writes the error logs to a file; the tracker stores the message instead
