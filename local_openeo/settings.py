"""A local back-end's settings, from ``LOCAL_OPENEO_*`` environment variables (the
``serve`` command sets them from its options)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from local_openeo.simulation import Simulation

PREFIX = "LOCAL_OPENEO_"


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass
class BackendSettings:
    name: str = "local"
    jobs_dir: Path = Path("local-openeo-jobs")
    stac_url: str = "http://127.0.0.1:8080/"
    host: str = "127.0.0.1"
    port: int = 8081
    # Basic-auth logins, "user:password" pairs.
    users: list[str] = field(default_factory=lambda: ["tilekeeper:tilekeeper"])
    # Signs result asset URLs; empty: a random one kept in the jobs folder (mode 0600), so
    # URLs survive a restart and no secret is shared between installations.
    signing_secret: str = ""
    # URL prefixes a process namespace may be fetched from; none by default (the back-end
    # fetches no URL a user names unless allowed: server-side request forgery).
    namespaces: list[str] = field(default_factory=list)
    max_running: int = 1
    min_runtime_s: float = 0.0
    fail_tiles: list[str] = field(default_factory=list)
    fail_state_dir: Path | None = None
    failure_rate: float = 0.0
    # Collections of the catalogue this back-end offers; empty: all of them.
    collections: list[str] = field(default_factory=list)
    # Jobs simulated instead of run (local_openeo/simulation.py); None: jobs run.
    simulation: Simulation | None = None

    @classmethod
    def from_env(cls) -> BackendSettings:
        env = os.environ
        default = cls()
        return cls(
            name=env.get(PREFIX + "NAME", default.name),
            jobs_dir=Path(env.get(PREFIX + "JOBS_DIR", str(default.jobs_dir))),
            stac_url=env.get(PREFIX + "STAC_URL", default.stac_url),
            host=env.get(PREFIX + "HOST", default.host),
            port=int(env.get(PREFIX + "PORT", default.port)),
            users=_list(env.get(PREFIX + "USERS", ",".join(default.users))),
            signing_secret=env.get(PREFIX + "SIGNING_SECRET", default.signing_secret),
            namespaces=_list(env.get(PREFIX + "NAMESPACES", "")),
            max_running=int(env.get(PREFIX + "MAX_RUNNING", default.max_running)),
            min_runtime_s=float(env.get(PREFIX + "MIN_RUNTIME_S", default.min_runtime_s)),
            fail_tiles=_list(env.get(PREFIX + "FAIL_TILES", "")),
            fail_state_dir=Path(env[PREFIX + "FAIL_STATE_DIR"])
            if env.get(PREFIX + "FAIL_STATE_DIR")
            else None,
            failure_rate=float(env.get(PREFIX + "FAILURE_RATE", default.failure_rate)),
            collections=_list(env.get(PREFIX + "COLLECTIONS", "")),
            simulation=Simulation.from_json(env[PREFIX + "SIMULATION"])
            if env.get(PREFIX + "SIMULATION")
            else None,
        )

    def to_env(self) -> dict[str, str]:
        return {
            PREFIX + "NAME": self.name,
            PREFIX + "JOBS_DIR": str(self.jobs_dir),
            PREFIX + "STAC_URL": self.stac_url,
            PREFIX + "HOST": self.host,
            PREFIX + "PORT": str(self.port),
            PREFIX + "USERS": ",".join(self.users),
            PREFIX + "SIGNING_SECRET": self.signing_secret,
            PREFIX + "NAMESPACES": ",".join(self.namespaces),
            PREFIX + "MAX_RUNNING": str(self.max_running),
            PREFIX + "MIN_RUNTIME_S": str(self.min_runtime_s),
            PREFIX + "FAIL_TILES": ",".join(self.fail_tiles),
            PREFIX + "FAIL_STATE_DIR": str(self.fail_state_dir or ""),
            PREFIX + "FAILURE_RATE": str(self.failure_rate),
            PREFIX + "COLLECTIONS": ",".join(self.collections),
            PREFIX + "SIMULATION": self.simulation.to_json() if self.simulation else "",
        }

    def with_secret(self) -> BackendSettings:
        """These settings with a signing secret: the configured one, or the one kept in
        the jobs folder (made on first use)."""
        if self.signing_secret:
            return self
        path = self.jobs_dir / "signing-secret"
        if not path.exists():
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return replace(self, signing_secret=path.read_text().strip())

    def namespace_allowed(self, url: str) -> bool:
        return any(url.startswith(prefix) for prefix in self.namespaces)

    def logins(self) -> dict[str, str]:
        return dict(u.split(":", 1) for u in self.users if ":" in u)
