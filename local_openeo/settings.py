"""A local back-end's settings, from ``LOCAL_OPENEO_*`` environment variables (the
``serve`` command sets them from its options)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    signing_secret: str = "local-openeo"
    max_running: int = 1
    min_runtime_s: float = 0.0
    fail_tiles: list[str] = field(default_factory=list)
    fail_state_dir: Path | None = None
    failure_rate: float = 0.0

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
            max_running=int(env.get(PREFIX + "MAX_RUNNING", default.max_running)),
            min_runtime_s=float(env.get(PREFIX + "MIN_RUNTIME_S", default.min_runtime_s)),
            fail_tiles=_list(env.get(PREFIX + "FAIL_TILES", "")),
            fail_state_dir=Path(env[PREFIX + "FAIL_STATE_DIR"])
            if env.get(PREFIX + "FAIL_STATE_DIR")
            else None,
            failure_rate=float(env.get(PREFIX + "FAILURE_RATE", default.failure_rate)),
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
            PREFIX + "MAX_RUNNING": str(self.max_running),
            PREFIX + "MIN_RUNTIME_S": str(self.min_runtime_s),
            PREFIX + "FAIL_TILES": ",".join(self.fail_tiles),
            PREFIX + "FAIL_STATE_DIR": str(self.fail_state_dir or ""),
            PREFIX + "FAILURE_RATE": str(self.failure_rate),
        }

    def logins(self) -> dict[str, str]:
        return dict(u.split(":", 1) for u in self.users if ":" in u)
