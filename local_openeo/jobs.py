"""Batch jobs kept on disk, one folder per job, run one subprocess each.

``JOBS_DIR/<job id>/job.json`` holds a job's state and is rewritten atomically on each
change, so a restarted back-end finds every job as it was; jobs that were queued or
running when it stopped are queued again. At most ``max_running`` jobs run at once;
the others wait as ``queued``, as on a real back-end.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openeo_driver.backend import BatchJobMetadata, BatchJobs, JobListing
from openeo_driver.errors import (
    JobNotFinishedException,
    JobNotFoundException,
    OpenEOApiException,
)
from openeo_driver.users import User

from local_openeo.simulation import SimulatedRun, Simulation, Simulator

log = logging.getLogger("local_openeo.jobs")

CREATED, QUEUED, RUNNING = "created", "queued", "running"
FINISHED, ERROR, CANCELED = "finished", "error", "canceled"
ACTIVE = (QUEUED, RUNNING)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class JobKnobs:
    """What makes the demo realistic: jobs that take a while, and failures on demand."""

    max_running: int = 1
    min_runtime_s: float = 0.0
    # Jobs whose process (arguments, title, description) mention one of these fail, the
    # first time each one is seen only (a retry then succeeds).
    fail_tiles: list[str] = field(default_factory=list)
    # Where "failed once" is remembered; back-ends sharing it fail a tile once in all.
    fail_state_dir: Path | None = None
    failure_rate: float = 0.0
    credits_per_cpu_second: float = 0.05
    seed: int = 1
    # Jobs simulated rather than run (local_openeo/simulation.py), and this back-end's
    # name (it seeds the draws).
    simulation: Simulation | None = None
    name: str = "local"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class LocalBatchJobs(BatchJobs):  # type: ignore[misc]
    """openeo-driver's batch-jobs contract on the local disk."""

    def __init__(self, jobs_dir: Path, stac_url: str, knobs: JobKnobs, udps: Any) -> None:
        super().__init__()
        self.jobs_dir = jobs_dir
        self.stac_url = stac_url
        self.knobs = knobs
        self.udps = udps
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=knobs.max_running, thread_name_prefix="job")
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._random = random.Random(knobs.seed)
        self.simulator = Simulator(knobs.simulation, knobs.name) if knobs.simulation else None
        self._cancels: dict[str, threading.Event] = {}
        self._active: dict[str, set[str]] = {}  # user id -> its queued and running jobs
        self._resume()

    # --- state on disk ---------------------------------------------------------------

    def _dir(self, job_id: str) -> Path:
        if not job_id.startswith("j-") or "/" in job_id or ".." in job_id:
            raise JobNotFoundException(job_id=job_id)
        return self.jobs_dir / job_id

    def _read(self, job_id: str, user_id: str | None = None) -> dict[str, Any]:
        path = self._dir(job_id) / "job.json"
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise JobNotFoundException(job_id=job_id) from None
        if user_id is not None and state["user_id"] != user_id:
            raise JobNotFoundException(job_id=job_id)
        return state

    def _write(self, state: dict[str, Any]) -> None:
        folder = self._dir(state["id"])
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, folder / "job.json")

    def _update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            state = self._read(job_id)
            state.update(changes)
            state["updated"] = _iso(_now())
            self._write(state)
            return state

    def _resume(self) -> None:
        """Queue again what was queued or running when the back-end stopped."""
        for path in sorted(self.jobs_dir.glob("j-*/job.json")):
            state = json.loads(path.read_text())
            if state["status"] in ACTIVE:
                log.info("resuming job %s (was %s)", state["id"], state["status"])
                self._update(state["id"], status=QUEUED, started=None)
                self._active.setdefault(state["user_id"], set()).add(state["id"])
                self._pool.submit(self._run, state["id"])

    @staticmethod
    def _metadata(state: dict[str, Any]) -> BatchJobMetadata:
        usage = state.get("usage")
        return BatchJobMetadata(
            id=state["id"],
            status=state["status"],
            created=_parse(state["created"]) or _now(),
            process=state["process"],
            job_options=state.get("job_options"),
            title=state.get("title"),
            description=state.get("description"),
            progress=state.get("progress"),
            updated=_parse(state.get("updated")),
            costs=state.get("costs"),
            started=_parse(state.get("started")),
            finished=_parse(state.get("finished")),
            usage=usage,
            cpu_time=timedelta(seconds=usage["cpu"]["value"]) if usage else None,
            duration_=timedelta(seconds=usage["duration"]["value"]) if usage else None,
        )

    # --- the contract ----------------------------------------------------------------

    def create_job(
        self,
        *,
        user: User,
        process: dict[str, Any],
        api_version: str,
        metadata: dict[str, Any],
        job_options: dict[str, Any] | None = None,
    ) -> BatchJobMetadata:
        state = {
            "id": f"j-{uuid.uuid4().hex[:20]}",
            "user_id": user.user_id,
            "status": CREATED,
            "created": _iso(_now()),
            "updated": _iso(_now()),
            "process": process,
            "title": metadata.get("title"),
            "description": metadata.get("description"),
            "job_options": job_options,
            "api_version": api_version,
        }
        with self._lock:
            self._write(state)
        return self._metadata(state)

    def get_job_info(self, job_id: str, user_id: str) -> BatchJobMetadata:
        return self._metadata(self._read(job_id, user_id))

    def get_user_jobs(
        self,
        user_id: str,
        limit: int | None = None,
        request_parameters: dict[str, Any] | None = None,
    ) -> JobListing:
        states = []
        for path in sorted(self.jobs_dir.glob("j-*/job.json")):
            state = json.loads(path.read_text())
            if state["user_id"] == user_id:
                states.append(state)
        states.sort(key=lambda s: s["created"], reverse=True)
        return JobListing(jobs=[self._metadata(s) for s in states[: limit or None]])

    def start_job(self, job_id: str, user: User) -> None:
        with self._lock:
            state = self._read(job_id, user.user_id)
            if state["status"] in ACTIVE:
                return  # starting a started job is a no-op, as the API allows
            self._check_concurrency(user.user_id)
            # The user's UDPs as they are now: the job keeps running what was submitted.
            state.update(
                status=QUEUED,
                udps=self.udps.definitions(user.user_id),
                stac_url=self.stac_url,
                queued=_iso(_now()),
                started=None,
                finished=None,
                expires_at=None,
                updated=_iso(_now()),
            )
            self._write(state)
            self._active.setdefault(user.user_id, set()).add(job_id)
        self._pool.submit(self._run, job_id)

    def _check_concurrency(self, user_id: str) -> None:
        limit = self.knobs.simulation.concurrency_limit if self.knobs.simulation else 0
        active = len(self._active.get(user_id, ()))
        if limit and active >= limit:
            raise OpenEOApiException(
                status_code=429,
                code="ConcurrencyLimitReached",
                message=f"simulated: {active} jobs queued or running, the limit is {limit}",
            )

    def cancel_job(self, job_id: str, user_id: str) -> None:
        with self._lock:
            state = self._read(job_id, user_id)
            if state["status"] not in ACTIVE:
                return
            self._update(job_id, status=CANCELED, finished=_iso(_now()))
            self._active.get(state["user_id"], set()).discard(job_id)
            process = self._processes.get(job_id)
            cancel = self._cancels.get(job_id)
        if process is not None:
            process.kill()
        if cancel is not None:
            cancel.set()

    def delete_job(self, job_id: str, user_id: str) -> None:
        self.cancel_job(job_id, user_id)
        folder = self._dir(job_id)
        if self.simulator is not None and (folder / "job.json").exists():
            # A tombstone (the job is gone for the API): what the rehearsal's checks
            # read to know every job that ever ran, deleted ones included.
            with self._lock:
                state = self._read(job_id, user_id)
                state["deleted"] = _iso(_now())
                (folder / "deleted.json").write_text(json.dumps(state, indent=1))
                shutil.rmtree(folder / "results", ignore_errors=True)
                (folder / "job.json").unlink()
            return
        shutil.rmtree(folder, ignore_errors=True)

    def get_result_assets(self, job_id: str, user_id: str) -> dict[str, dict[str, Any]]:
        state = self._read(job_id, user_id)
        if state["status"] != FINISHED:
            raise JobNotFinishedException()
        folder = self._dir(job_id)
        results = json.loads((folder / "results.json").read_text())
        assets = {}
        for asset in results["assets"]:
            meta = {k: v for k, v in asset.items() if k != "filename" and v is not None}
            meta["output_dir"] = str(folder / "results")
            assets[asset["filename"]] = meta
        return assets

    def get_log_entries(
        self,
        job_id: str,
        *,
        user_id: str,
        offset: str | None = None,
        limit: str | None = None,
        level: str = "debug",
    ) -> list[dict[str, Any]]:
        self._read(job_id, user_id)
        folder = self._dir(job_id)
        entries: list[dict[str, Any]] = []
        log_file = folder / "job.log"
        if log_file.exists():
            for n, line in enumerate(log_file.read_text().splitlines()):
                parts = line.split(" ", 3)
                levelname = parts[2].lower() if len(parts) > 2 else "info"
                entries.append(
                    {
                        "id": str(n),
                        "level": levelname
                        if levelname in ("debug", "info", "warning", "error")
                        else "info",
                        "message": line,
                    }
                )
        error_file = folder / "error.json"
        if error_file.exists():
            error = json.loads(error_file.read_text())
            entries.append(
                {
                    "id": "error",
                    "level": "error",
                    "message": error["message"],
                    "data": {"traceback": error.get("traceback")},
                }
            )
        start = int(offset) + 1 if offset and offset.isdigit() else 0
        return entries[start:]

    # --- running ---------------------------------------------------------------------

    def _planned_failure(self, state: dict[str, Any]) -> str | None:
        text = json.dumps([state.get("title"), state.get("description"), state["process"]])
        for marker in self.knobs.fail_tiles:
            if marker and marker in text:
                state_dir = self.knobs.fail_state_dir or self.jobs_dir
                state_dir.mkdir(parents=True, exist_ok=True)
                seen = state_dir / f"failed-once-{marker}"
                try:  # exclusive create: back-ends sharing the dir fail it once in all
                    with seen.open("x") as mark:
                        mark.write(state["id"])
                except FileExistsError:
                    return None
                return f"planned failure for {marker!r} (the back-end's fail_tiles knob)"
        if self.knobs.failure_rate and self._random.random() < self.knobs.failure_rate:
            return f"random failure (the back-end's failure_rate knob is {self.knobs.failure_rate})"
        return None

    def _run(self, job_id: str) -> None:
        with self._lock:
            state = self._read(job_id)
            if state["status"] != QUEUED:
                return  # canceled while waiting
            state = self._update(job_id, status=RUNNING, started=_iso(_now()), progress=0.0)
        folder = self._dir(job_id)
        for stale in ("results.json", "error.json", "job.log"):
            (folder / stale).unlink(missing_ok=True)
        started = time.monotonic()
        try:
            simulated = self._simulate(job_id, state, folder) if self.simulator else None
        except Exception as exc:  # a bug or a full disk: the job fails, its slot is freed
            log.exception("simulated job %s failed", job_id)
            (folder / "error.json").write_text(json.dumps({"message": f"simulation: {exc}"}))
            simulated = SimulatedRun(0.0, f"simulation: {exc}", 0.0, 0.0, None)
        failure = None if simulated else self._planned_failure(state)
        cpu = peak_gb = 0.0
        if simulated is not None:
            code = 0 if simulated.error is None else 1
            cpu, peak_gb = simulated.wall_s, simulated.peak_gb
        elif failure is None:
            code, cpu, peak_gb = self._execute(job_id, folder)
        else:
            (folder / "error.json").write_text(json.dumps({"message": failure}))
            code = 1
        # Realism: a job takes at least min_runtime_s, whatever its work.
        remaining = self.knobs.min_runtime_s - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        duration = time.monotonic() - started
        with self._lock:
            self._cancels.pop(job_id, None)
            if self._read(job_id)["status"] == CANCELED:
                return
            self._active.get(state["user_id"], set()).discard(job_id)
            status = FINISHED if code == 0 else ERROR
            costs = round(max(cpu, 0.1) * self.knobs.credits_per_cpu_second, 4)
            expiry: dict[str, float] = {}
            if simulated is not None:
                costs = simulated.credits
                if status == FINISHED and simulated.expires_after_s is not None:
                    expiry["expires_at"] = time.time() + simulated.expires_after_s
            self._update(
                job_id,
                status=status,
                finished=_iso(_now()),
                progress=100.0 if status == FINISHED else None,
                usage={
                    "cpu": {"value": round(cpu, 3), "unit": "cpu-seconds"},
                    "duration": {"value": round(duration, 3), "unit": "seconds"},
                    # As Geotrellis back-ends (CDSE, Terrascope) report it.
                    "max_executor_memory": {"value": round(peak_gb, 4), "unit": "gb"},
                },
                costs=costs,
                **expiry,
            )
        log.info("job %s %s after %.1f s (cpu %.1f s)", job_id, status, duration, cpu)

    def _execute(self, job_id: str, folder: Path) -> tuple[int, float, float]:
        """Run the job's graph in a process of its own: (exit code, CPU s, peak GB)."""
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        command = [sys.executable, "-m", "local_openeo.executor", str(folder)]
        process = subprocess.Popen(command, env=env, cwd=folder, stderr=subprocess.DEVNULL)
        with self._lock:
            self._processes[job_id] = process
        # wait4: this child's own CPU time, even with several jobs running at once.
        _, wait_status, rusage = os.wait4(process.pid, 0)
        code = process.returncode = os.waitstatus_to_exitcode(wait_status)
        with self._lock:
            self._processes.pop(job_id, None)
        # ru_maxrss is in KiB on Linux
        return code, rusage.ru_utime + rusage.ru_stime, rusage.ru_maxrss / 1024**2

    def _simulate(self, job_id: str, state: dict[str, Any], folder: Path) -> SimulatedRun:
        """A simulated run: it lasts its drawn runtime (a cancel ends it), then writes its
        result or its error."""
        assert self.simulator is not None
        run = self.simulator.plan(state)
        with self._lock:
            cancel = self._cancels.setdefault(job_id, threading.Event())
            if self._read(job_id)["status"] == CANCELED:
                cancel.set()  # canceled before its run began
        if cancel.wait(run.wall_s):
            return run
        if run.error is not None:
            (folder / "error.json").write_text(json.dumps({"message": run.error}))
            return run
        try:
            assets = self.simulator.write_result(state, folder / "results")
        except Exception as exc:  # the job's fault (no extent to draw on): the job fails
            (folder / "error.json").write_text(json.dumps({"message": str(exc)}))
            return replace(run, error=str(exc), expires_after_s=None)
        (folder / "results.json").write_text(json.dumps({"assets": assets}, indent=1))
        return run

    def expired(self, job_id: str) -> bool:
        """Whether the job's results have expired; their files are deleted when they have."""
        try:
            state = self._read(job_id)
        except JobNotFoundException:
            return False
        expires_at = state.get("expires_at")
        if expires_at is None or time.time() < expires_at:
            return False
        shutil.rmtree(self._dir(job_id) / "results", ignore_errors=True)
        return True

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for process in self._processes.values():
                process.kill()
            for cancel in self._cancels.values():
                cancel.set()
