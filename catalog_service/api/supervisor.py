"""`tilekeeper serve`: the API in worker processes under uvicorn's supervisor.

The supervisor binds the port once and hands the socket to ``workers`` processes, each
of which builds the app from the environment (:func:`worker_app`). Every half second it
checks its workers: one that died (a segfault in a native parser, the OOM killer,
kill -9) or that does not answer a health ping within 5 s (stuck in C code holding the
GIL) is killed and replaced by a new one, while the others keep serving. Connections
wait in the socket's backlog meanwhile, since the supervisor holds it.

Not covered: the supervisor itself dying (its workers then stop too, see
:func:`_stop_with_supervisor`; restarting it is the job of Docker's restart policy or
systemd), and a worker whose event loop is stuck in Python code (it still answers the
ping, which runs on a thread of its own).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import signal
import socket
import sys

from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from catalog_service.api.server import uvicorn_config
from catalog_service.errors import TilekeeperError
from catalog_service.settings import ApiSettings

# What each worker imports and calls to build its app.
WORKER_APP = "catalog_service.api.supervisor:worker_app"
# Set by `serve` for its workers: the supervisor's pid.
SUPERVISOR_PID = "TILEKEEPER_SUPERVISOR_PID"

_PR_SET_PDEATHSIG = 1
# uvicorn's own logger, so our lines look like the supervisor's.
logger = logging.getLogger("uvicorn.error")


def worker_app() -> FastAPI:
    """One worker's app, every setting read from the environment it inherited."""
    # Lazy: the supervisor process itself serves nothing and need not load the app.
    from catalog_service.api.app import create_app

    _stop_with_supervisor()
    try:
        return create_app()
    except Exception:
        # It would fail the same way on every restart: this exit code makes the
        # supervisor stop the service instead of restarting workers in a loop.
        logger.exception("A worker could not build the API")
        sys.exit(STARTUP_FAILURE)


def _stop_with_supervisor() -> None:
    """Have Linux send this worker SIGTERM when its supervisor dies, even by kill -9: an
    orphan would keep serving the port that a restarted service needs to bind."""
    expected = os.environ.get(SUPERVISOR_PID)
    if expected is None or not sys.platform.startswith("linux"):
        return  # not under `tilekeeper serve` (e.g. plain `uvicorn --factory`)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != int(expected):  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def export(settings: ApiSettings) -> None:
    """Put what the command line may change into the environment the workers inherit,
    so that they build the app with the same settings as the supervisor."""
    os.environ["TILEKEEPER_API_HOST"] = settings.host
    os.environ["TILEKEEPER_API_PORT"] = str(settings.port)
    os.environ["TILEKEEPER_API_WORKERS"] = str(settings.workers)
    os.environ[SUPERVISOR_PID] = str(os.getpid())


def declared_tcp(sock: socket.socket) -> socket.socket:
    """The listening socket, declared as TCP. uvicorn binds it with protocol 0, which the
    connections it accepts inherit, and asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on sockets that say IPPROTO_TCP: without this every keep-alive
    answer waited ~40 ms for the client's delayed ACK (uvicorn issue #3149)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto:
        return sock
    tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    tcp.set_inheritable(True)  # handed to the workers
    return tcp


def _spawn_without_the_cli() -> None:
    """multiprocessing's spawn runs the parent's main script again in every worker before
    anything else. For the `tilekeeper` console script that is the whole CLI: workers of
    ~240 MB instead of ~125 MB, and seconds more before they answer the supervisor's
    health ping. Named as the package's __main__ (what `python -m catalog_service`
    runs), it is skipped, as spawn skips every ``__main__`` module."""
    main = sys.modules["__main__"]
    if getattr(main, "__spec__", None) is None:
        main.__spec__ = importlib.util.find_spec("catalog_service.__main__")


def serve(settings: ApiSettings) -> None:
    """Serve until SIGTERM or SIGINT, then stop every worker (each finishes its requests).

    SIGHUP replaces the workers one by one (each new one serves before an old one goes);
    SIGTTIN and SIGTTOU add or remove one. Raises TilekeeperError when a worker could not
    build the app; a port already taken exits at once, as uvicorn does."""
    export(settings)
    _spawn_without_the_cli()
    config = uvicorn_config(WORKER_APP, settings, factory=True)
    # The supervisor also for one worker: uvicorn would run a lone worker unsupervised.
    config.workers = settings.workers
    # The supervisor says when a worker died and was replaced; workers stay quiet.
    logger.setLevel(logging.INFO)
    supervisor = Multiprocess(config, sockets=[declared_tcp(config.bind_socket())])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise TilekeeperError(
            "the API workers could not start (see the lines above); the service stopped"
        )
