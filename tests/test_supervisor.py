"""`tilekeeper serve` outlives a crash: its workers run under a supervisor that replaces
one that dies while the others keep answering (real processes, kill -9, on the test
database)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from support.database import Database
from typer.testing import CliRunner
from uvicorn.config import STARTUP_FAILURE

from catalog_service.api.db import database_lifespan
from catalog_service.api.server import ServerProcess, free_port
from catalog_service.api.supervisor import SUPERVISOR_PID, declared_tcp, worker_app
from catalog_service.cli.main import app
from catalog_service.database.cluster import API_WORKER_CONNECTIONS, max_connections
from catalog_service.settings import ApiSettings, default_workers

# -- processes and their sockets, from /proc (no psutil: it is not a dependency) -----------


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)", which may hold spaces
    return int(fields[1]), fields[0]


def _alive(pid: int) -> bool:
    """Not yet dead for its peers: it may hold sockets. A killed process's main thread
    shows as a zombie while its other threads may still be closing the files they
    share, so a zombie counts as dead once it is the only thread left."""
    found = _ppid_and_state(pid)
    if found is None:
        return False
    if found[1] != "Z":
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _workers(supervisor: int) -> set[int]:
    """The supervisor's live worker processes (not multiprocessing's resource tracker)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _ppid_and_state(int(entry.name))
        if found is None or found[0] != supervisor or found[1] == "Z":
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            pids.add(int(entry.name))
    return pids


def _established(pid: int) -> set[tuple[int, int]]:
    """(local port, remote port) of the TCP connections the process holds."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "01" and parts[9] in inodes:  # 01: ESTABLISHED
                local, remote = parts[1], parts[2]
                ports.add((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)))
    return ports


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.05)


def _ready(worker: int, database_port: int) -> bool:
    """The worker built its app and its lifespan opened the pools (one connection each)."""
    return sum(1 for _, remote in _established(worker) if remote == database_port) >= 2


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: not _alive(pid), f"worker {pid} dead", timeout_s=10)


# -- the load ----------------------------------------------------------------------------


@dataclass
class Request:
    started: float
    status: int | None = None
    # Connection errors met on the way (retried); anything else fails the request.
    errors: list[str] = field(default_factory=list)


class Load:
    """``count`` GETs, one after the other over one keep-alive client (as STAC clients
    do); a request is retried only after a connection error, at most ``attempts`` times."""

    PATHS = ("/collections", "/search?limit=5")

    def __init__(self, url: str, count: int, attempts: int = 3) -> None:
        self.url = url
        self.count = count
        self.attempts = attempts
        self.done: list[Request] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=60) as client:
                for n in range(self.count):
                    request = Request(time.monotonic())
                    for _ in range(self.attempts):
                        try:
                            request.status = client.get(self.PATHS[n % 2]).status_code
                            break
                        except httpx.TransportError as exc:
                            request.errors.append(f"{type(exc).__name__}: {exc}")
                    self.done.append(request)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc

    def join(self) -> list[Request]:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "the load did not finish"
        assert self.failure is None, repr(self.failure)
        return self.done


@pytest.fixture()
def serve(database: Database, tmp_path: Path) -> Iterator[Callable[[int], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(workers: int) -> ServerProcess:
        settings = ApiSettings(port=free_port(), workers=workers)
        server = ServerProcess(settings, database.settings)
        started.append(server)
        return server.start(log_path=tmp_path / f"serve-{len(started)}.log")

    yield start
    for server in started:
        server.stop()


def _assert_answers(url: str) -> None:
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, response.text


def _log(tmp_path: Path, n: int = 1) -> str:
    return (tmp_path / f"serve-{n}.log").read_text()


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_is_replaced_while_the_other_serves(
    serve: Callable[[int], ServerProcess], database: Database, tmp_path: Path
) -> None:
    server = serve(2)
    assert server.process is not None
    supervisor = server.process.pid
    db_port = database.settings.port
    _wait_for(lambda: len(_workers(supervisor)) == 2, "two workers")
    first = _workers(supervisor)
    _wait_for(lambda: all(_ready(w, db_port) for w in first), "both workers ready")

    load = Load(server.url, count=400)
    load.thread.start()
    _wait_for(lambda: len(load.done) >= 50 or not load.thread.is_alive(), "50 requests")
    # Kill the worker that serves the load's connection, so the load meets the crash.
    serving = [
        w for w in first if any(local == server.settings.port for local, _ in _established(w))
    ]
    assert len(serving) == 1, serving
    victim = serving[0]
    killed_at = time.monotonic()
    _kill(victim)
    dead_at = time.monotonic()
    done = load.join()

    # Every request was answered 200, at most after retrying connection errors.
    assert [r.status for r in done] == [200] * len(done), [r for r in done if r.status != 200]
    assert sum(1 for r in done if r.started > dead_at) >= 100  # the load went on after it
    # Only a request that was in flight when the worker died (its connection was cut,
    # begun before the worker was seen dead) met a connection error: the one request
    # a single keep-alive client can have on the dying worker. Every request begun
    # after that was answered at once, by the other worker.
    hit = [r for r in done if r.errors]
    assert len(hit) <= 1, hit
    assert all(r.started < dead_at for r in hit), (hit, killed_at, dead_at)

    # The supervisor started a new worker in the dead one's place; it serves.
    _wait_for(lambda: len(_workers(supervisor)) == 2, "a replacement worker")
    (replacement,) = _workers(supervisor) - first
    assert victim not in _workers(supervisor)
    _wait_for(lambda: _ready(replacement, db_port), "the replacement ready")
    assert f"Child process [{victim}] died" in _log(tmp_path)
    (survivor,) = first - {victim}
    _kill(survivor)  # now only the replacement can answer
    for n in range(20):
        _assert_answers(server.url + Load.PATHS[n % 2])

    # SIGTERM stops the supervisor and every worker, cleanly.
    workers = _workers(supervisor)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert not any(_alive(w) for w in workers)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/_mgmt/ping", timeout=5)


@pytest.mark.slow
def test_one_worker_is_supervised_dead_or_hung_and_stops_with_the_supervisor(
    serve: Callable[[int], ServerProcess], database: Database
) -> None:
    server = serve(1)
    assert server.process is not None
    supervisor = server.process.pid
    _wait_for(lambda: len(_workers(supervisor)) == 1, "one worker")
    (worker,) = _workers(supervisor)
    _kill(worker)
    # While no worker runs, connections wait in the supervisor's socket: no request is
    # refused, it is answered once the replacement is up.
    _assert_answers(f"{server.url}/collections")
    (replacement,) = _workers(supervisor)
    assert replacement != worker
    # A worker that hangs (stopped: it no longer answers the supervisor's health ping)
    # is killed and replaced the same way.
    os.kill(replacement, signal.SIGSTOP)
    _assert_answers(f"{server.url}/collections")
    assert not _alive(replacement)
    (replacement,) = _workers(supervisor)

    # kill -9 of the supervisor itself is not covered (a service manager restarts it),
    # but its worker does not linger as an orphan holding the port.
    server.process.kill()
    server.process.wait(timeout=10)
    _wait_for(lambda: not _alive(replacement), "the orphaned worker gone", timeout_s=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/_mgmt/ping", timeout=5)


def test_workers_default_to_the_cores_and_fit_the_database(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TILEKEEPER_API_WORKERS", raising=False)
    assert 1 <= default_workers() <= (os.cpu_count() or 1)
    assert ApiSettings().workers == default_workers()
    monkeypatch.setenv("TILEKEEPER_API_WORKERS", "3")
    assert ApiSettings().workers == 3
    # The embedded cluster has room for the default workers' pools at their peak.
    assert max_connections() >= API_WORKER_CONNECTIONS * default_workers() + 50
    (shown,) = database.sql("SHOW max_connections")
    assert int(shown[0]) == max_connections()


def test_serve_help_names_the_workers() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--workers" in result.output
    assert "TILEKEEPER_API_WORKERS" in result.output
    assert "replaces one that dies" in result.output


def test_a_worker_that_cannot_build_the_app_exits_as_a_startup_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn's supervisor stops the service on this exit code rather than restarting
    workers in a loop (the whole path was tried by hand: `serve` exits 1 saying so)."""
    import catalog_service.api.app as app_module

    def broken() -> None:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(app_module, "create_app", broken)
    monkeypatch.delenv(SUPERVISOR_PID, raising=False)
    with pytest.raises(SystemExit) as exited:
        worker_app()
    assert exited.value.code == STARTUP_FAILURE


def test_the_workers_socket_sends_without_delay() -> None:
    """uvicorn binds the supervisor's socket without saying TCP, so asyncio left Nagle's
    algorithm on for every connection a worker accepted (each keep-alive answer waited
    ~40 ms for a delayed ACK): the socket `serve` hands its workers says TCP."""
    port = free_port()
    listener = declared_tcp(uvicorn.Config("x:y", host="127.0.0.1", port=port).bind_socket())
    assert listener.proto == socket.IPPROTO_TCP
    seen: list[int] = []

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one() -> None:
        server = await asyncio.get_running_loop().create_server(Accepted, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(accept_one())
    assert seen == [1]


async def test_a_starting_worker_takes_requests_once_connected(database: Database) -> None:
    """A worker that replaces a dead one answers its first request from the database,
    not 503 because its pools were still connecting: its start-up (after which uvicorn
    takes requests) ends once they are up."""
    lifespan = database_lifespan(database.report.logins, ApiSettings())
    bare = FastAPI()
    async with lifespan(bare):
        assert getattr(bare.state, "readpool", None) is not None
        assert getattr(bare.state, "writepool", None) is not None


def test_workers_do_not_run_the_command_line_again(tmp_path: Path) -> None:
    """multiprocessing's spawn runs the parent's main script again in each worker: under
    the `tilekeeper` console script, the whole CLI (workers of ~240 MB, not ~125 MB)."""
    script = tmp_path / "tilekeeper"  # what pip writes: no .py, no __spec__
    script.write_text(
        "import multiprocessing.spawn as spawn\n"
        "from catalog_service.api.supervisor import _spawn_without_the_cli\n"
        "before = spawn.get_preparation_data('worker')\n"
        "_spawn_without_the_cli()\n"
        "after = spawn.get_preparation_data('worker')\n"
        "print('init_main_from_path' in before, 'init_main_from_path' in after,\n"
        "      after.get('init_main_from_name'))\n"
    )
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    # spawn skips a main module named like a package's __main__ (catalog_service/__main__.py)
    assert run.stdout.split() == ["True", "False", "catalog_service.__main__"]
