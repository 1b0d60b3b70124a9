"""Running the API under uvicorn: in the foreground (`tilekeeper serve`), in a thread
(the tests, which need the service beside other work), or as a child process (the
demo and the benches: a process of its own, as deployed, with its own GIL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from catalog_service import children
from catalog_service.api.app import create_app
from catalog_service.database import DatabaseLogins
from catalog_service.settings import ApiSettings, AuthSettings, DatabaseSettings, ProductSettings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def uvicorn_config(
    app: FastAPI | str, settings: ApiSettings, factory: bool = False
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        factory=factory,
        host=settings.host,
        port=settings.port,
        # Forwarded headers are the app's business: it believes them only from the proxies
        # of settings.forwarded_allow_ips (catalog_service.api.headers).
        proxy_headers=False,
        log_level="warning",
        access_log=False,
    )


class ServerThread:
    """A uvicorn server on a background thread; ``url`` once started."""

    def __init__(
        self,
        settings: ApiSettings,
        logins: DatabaseLogins | None = None,
        products: ProductSettings | None = None,
        auth: AuthSettings | None = None,
        db_settings: DatabaseSettings | None = None,
    ) -> None:
        self.settings = settings
        self.app = create_app(
            settings, db_settings=db_settings, logins=logins, products=products, auth=auth
        )
        self.server = uvicorn.Server(uvicorn_config(self.app, settings))
        self.thread = threading.Thread(target=self.server.run, name="tilekeeper-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class ServerProcess:
    """``tilekeeper serve`` as a child process on the given database; ``url`` once up."""

    def __init__(self, settings: ApiSettings, database: DatabaseSettings) -> None:
        self.settings = settings
        self.database = database
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TILEKEEPER_API_HOST"] = self.settings.host
        env["TILEKEEPER_API_PORT"] = str(self.settings.port)
        env["TILEKEEPER_API_WORKERS"] = str(self.settings.workers)
        # Where the database is; the child resolves the same logins from it.
        for name in ("dsn", "read_dsn", "data_dir", "host", "port", "name"):
            value = getattr(self.database, name)
            if value is not None:
                env[f"TILEKEEPER_DB_{name.upper()}"] = str(value)
        return env

    def start(
        self, timeout_s: float = 60.0, log_path: Path | None = None, detach: bool = False
    ) -> ServerProcess:
        """Start and wait until a worker answers. ``detach`` keeps the server running
        after this process ends (the demo's services); its output goes to ``log_path``."""
        self.process = children.start(
            [sys.executable, "-m", "catalog_service", "serve"],
            self.environment(),
            self._answers,
            f"the API on {self.url}",
            log_path=log_path,
            detach=detach,
            timeout_s=timeout_s,
        )
        return self

    def _answers(self) -> bool:
        # Not a mere connection: the supervisor binds the port before its workers start.
        try:
            return httpx.get(f"{self.url}/_mgmt/ping", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        children.terminate(self.process)
