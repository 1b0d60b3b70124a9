"""The demo's services, left running for the user to browse: the API and two local
openEO back-ends as detached processes, recorded in ``state.json`` so a re-run reuses
them and ``tilekeeper demo --down`` stops exactly what the demo started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from catalog_service.api.server import ServerProcess
from catalog_service.demo.backends import LocalBackend
from catalog_service.errors import ConfigurationError
from catalog_service.settings import ApiSettings, DatabaseSettings

BACKENDS = ("alpha", "beta")


def demo_dir(database: DatabaseSettings) -> Path:
    """Beside the embedded cluster: job folders, logs, the cached sample, state."""
    return database.data_dir.parent / "demo"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:  # our own child (same command, or a test) that ended: reap it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # started by an earlier demo run: not ours to reap
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


@dataclass
class DemoServices:
    database: DatabaseSettings
    api: ApiSettings
    backend_ports: tuple[int, int]

    @property
    def dir(self) -> Path:
        return demo_dir(self.database)

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    def state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    def remember(self, **facts: Any) -> None:
        self._save({**self.state(), **facts})

    def api_url(self) -> str:
        return f"http://{self.api.host}:{self.api.port}"

    def up_api(self) -> tuple[str, bool]:
        """The API, reused if the demo's own is still up; returns (url, started now)."""
        state = self.state()
        known = state.get("api", {})
        if _alive(known.get("pid")) and _answers(f"{known['url']}/_mgmt/ping"):
            return str(known["url"]), False
        if _answers(f"{self.api_url()}/_mgmt/ping"):
            raise ConfigurationError(
                f"Port {self.api.port} already serves something the demo did not start. "
                "Stop it, or pick another port: `tilekeeper demo --port N`."
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(self.api, self.database)
        server.start(log_path=self.dir / "api.log", detach=True)
        assert server.process is not None
        state["api"] = {"pid": server.process.pid, "url": server.url}
        self._save(state)
        return server.url, True

    def up_backends(
        self, stac_url: str, fail_tiles: list[str], min_runtime_s: float
    ) -> dict[str, str]:
        """The two local back-ends (name -> openEO URL), reused when still up."""
        state = self.state()
        known = state.setdefault("backends", {})
        urls = {}
        for name, port in zip(BACKENDS, self.backend_ports, strict=True):
            backend = LocalBackend(
                name=name,
                port=port,
                jobs_dir=self.dir / "backends" / name,
                stac_url=stac_url,
                max_running=1,
                min_runtime_s=min_runtime_s,
                fail_tiles=fail_tiles,
                fail_state_dir=self.dir / "backends" / "failed-once",
            )
            mine = known.get(name, {})
            if _alive(mine.get("pid")) and backend.alive():
                urls[name] = backend.url
                continue
            if backend.alive():
                raise ConfigurationError(
                    f"Port {port} already serves something the demo did not start. Stop it, "
                    "or pick other ports: `tilekeeper demo --backend-ports A,B`."
                )
            pid = backend.start(log_path=self.dir / f"backend-{name}.log", detach=True)
            known[name] = {"pid": pid, "url": backend.url}
            self._save(state)
            urls[name] = backend.url
        return urls

    def down(self) -> list[str]:
        """Stop what the demo started; returns what was stopped."""
        state = self.state()
        stopped = []
        entries = [("API", state.get("api", {}))] + [
            (f"back-end {name}", entry) for name, entry in state.get("backends", {}).items()
        ]
        for label, entry in entries:
            pid = entry.get("pid")
            if _alive(pid):
                os.killpg(pid, signal.SIGTERM)  # detached: its own process group
                for _ in range(100):
                    if not _alive(pid):
                        break
                    time.sleep(0.1)
                else:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                stopped.append(f"{label} (pid {pid})")
        self.state_path.unlink(missing_ok=True)
        return stopped
