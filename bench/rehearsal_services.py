"""The rehearsal's services on a folder of their own: the embedded database, the API,
simulated openEO back-ends and runner workers, each a real process that the rehearsal
starts, kills (-9) and starts again (bench/rehearsal.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

import requests

from catalog_service.api.server import free_port
from catalog_service.demo.backends import openeo_python

ROOT = Path(__file__).resolve().parents[1]
TILEKEEPER = str(Path(sys.executable).parent / "tilekeeper")
USER, PASSWORD = "rehearsal", "rehearsal"
BACKEND_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon")


@dataclass
class Faults:
    """Each simulated back-end's fault rates (local_openeo/simulation.py): a production
    week's, by default."""

    error_rate: float = 0.03
    memory_rate: float = 0.02
    throttle_rate: float = 0.01
    download_fail_rate: float = 0.02
    slow_download_rate: float = 0.01
    slow_download_s: float = 2.0
    expire_rate: float = 0.005
    expire_after_s: float = 0.0

    @classmethod
    def none(cls) -> Faults:
        return cls(0, 0, 0, 0, 0, 0, 0, 0)

    def scaled(self, factor: float) -> Faults:
        """Every rate times ``factor`` (at most 1); the delays as they are."""
        rates = {k: min(1.0, v * factor) for k, v in asdict(self).items() if k.endswith("_rate")}
        return replace(self, **rates)


@dataclass
class Services:
    folder: Path
    speedup: float
    runtime_s: float
    slots: int  # jobs a back-end runs at once
    limit: int  # jobs a back-end accepts queued or running (its concurrency limit)
    backends: int
    faults: Faults
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = 0
    db_port: int = 0
    backend_ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.api_port, self.db_port = free_port(), free_port()
        names = BACKEND_NAMES[: self.backends]
        self.backend_ports = {name: free_port() for name in names}
        # A world of its own: no setting of another installation (an API key, a DSN, the
        # test suite's) leaks into its processes or into this one's clients.
        for name in [k for k in os.environ if k.startswith("TILEKEEPER_")]:
            del os.environ[name]
        self.env = dict(
            os.environ,
            TILEKEEPER_DB_DATA_DIR=str(self.folder / "db"),
            TILEKEEPER_DB_PORT=str(self.db_port),
            TILEKEEPER_API_PORT=str(self.api_port),
            TILEKEEPER_API_URL=self.api_url,
            TILEKEEPER_EGRESS_ALLOW_LOOPBACK="true",
            TILEKEEPER_PRODUCTS_STORE=str(self.folder / "products"),
            TILEKEEPER_RASTER_OVERVIEW_DIR=str(self.folder / "overviews"),
            OPENEO_CONFIG_HOME=str(self.folder / "openeo"),
            TILEKEEPER_OUTBOX_DIR=str(self.folder / "outbox"),
            # The campaign's back-ends answer within a second; a silent one is down.
            TILEKEEPER_RUNNER_REQUEST_TIMEOUT_S="20",
            TILEKEEPER_RUNNER_BACKOFF_MAX_S="10",
        )
        os.environ.update(self.env)  # this process's clients too

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def backend_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.backend_ports[name]}/openeo/1.2/"

    def jobs_dir(self, name: str) -> Path:
        return self.folder / "backends" / name / "jobs"

    # -- processes ---------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 3600) -> str:
        done = subprocess.run(
            [TILEKEEPER, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"tilekeeper {' '.join(args[:3])}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _spawn(self, key: str, command: list[str]) -> None:
        log = (self.folder / "logs").joinpath(f"{key}.log")
        log.parent.mkdir(exist_ok=True)
        handle = log.open("ab")
        self.logs[key] = handle
        self.processes[key] = subprocess.Popen(
            command,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a kill -9 of its group takes its children along
        )

    def kill(self, key: str) -> None:
        """kill -9 of the process (and its children): no goodbye."""
        process = self.processes.pop(key, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.logs.pop(key).close()

    def alive(self, key: str) -> bool:
        process = self.processes.get(key)
        return process is not None and process.poll() is None

    def wait_http(self, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=5).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")

    def db_up(self) -> None:
        self.cli("db", "up", timeout=600)

    def db_down(self) -> None:
        self.cli("db", "down", timeout=600)

    def start_api(self, workers: int = 2) -> None:
        self._spawn("api", [TILEKEEPER, "serve", "--workers", str(workers)])
        self.wait_http(f"{self.api_url}/_mgmt/ping")

    def start_backend(self, name: str) -> None:
        faults = self.faults
        command = [
            str(openeo_python()), "-m", "local_openeo", "serve",
            "--name", name,
            "--jobs-dir", str(self.jobs_dir(name).parent),
            "--stac-url", self.api_url + "/",
            "--port", str(self.backend_ports[name]),
            "--users", f"{USER}:{PASSWORD}",
            "--max-running", str(self.slots),
            "--simulate",
            "--sim-speedup", str(self.speedup),
            "--sim-runtime-s", str(self.runtime_s),
            "--sim-concurrency-limit", str(self.limit),
            "--sim-error-rate", str(faults.error_rate),
            "--sim-memory-rate", str(faults.memory_rate),
            "--sim-throttle-rate", str(faults.throttle_rate),
            "--sim-download-fail-rate", str(faults.download_fail_rate),
            "--sim-slow-download-rate", str(faults.slow_download_rate),
            "--sim-slow-download-s", str(faults.slow_download_s),
            "--sim-expire-rate", str(faults.expire_rate),
            "--sim-expire-after-s", str(faults.expire_after_s),
        ]  # fmt: skip
        self._spawn(f"backend-{name}", command)
        self.wait_http(self.backend_url(name))

    def start_worker(self, n: int, poll_sleep: float, lease_s: float, campaign: str) -> None:
        command = [
            TILEKEEPER, "campaign", "run", campaign,
            "--worker", f"w{n}", "--poll-sleep", str(poll_sleep), "--lease", str(lease_s),
            "--log-level", "WARNING",
        ]  # fmt: skip
        self._spawn(f"worker-{n}", command)

    def worker_exit(self, n: int) -> int | None:
        process = self.processes.get(f"worker-{n}")
        return None if process is None else process.poll()

    def stop_all(self) -> None:
        for key in list(self.processes):
            self.kill(key)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.db_down()
