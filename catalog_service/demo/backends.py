"""Local openEO back-ends (``local_openeo``) as child processes, and the synthetic
Sentinel-2 sample they compute from, loaded into the catalogue."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from catalog_service import children
from catalog_service.client import Catalog
from catalog_service.errors import ConfigurationError, TilekeeperError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_USER, DEMO_PASSWORD = "tilekeeper", "tilekeeper"


def openeo_python() -> Path:
    """The interpreter of the back-end's own virtualenv (``TILEKEEPER_OPENEO_PYTHON``
    overrides it)."""
    configured = os.environ.get("TILEKEEPER_OPENEO_PYTHON")
    python = Path(configured) if configured else REPO_ROOT / ".venv-openeo" / "bin" / "python"
    if not python.exists():
        raise ConfigurationError(
            f"The local openEO back-end's virtualenv is missing ({python}). "
            "Run `bash scripts/bootstrap.sh` (it creates .venv-openeo), "
            "or set TILEKEEPER_OPENEO_PYTHON."
        )
    return python


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


@dataclass
class LocalBackend:
    """One ``python -m local_openeo serve`` process."""

    name: str
    port: int
    jobs_dir: Path
    stac_url: str
    max_running: int = 1
    min_runtime_s: float = 0.0
    fail_tiles: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)  # offered; empty: all
    # Shared by back-ends that should fail a tile once between them.
    fail_state_dir: Path | None = None
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/openeo/1.2/"

    def command(self) -> list[str]:
        return [
            str(openeo_python()), "-m", "local_openeo", "serve",
            "--name", self.name,
            "--jobs-dir", str(self.jobs_dir),
            "--stac-url", self.stac_url,
            "--host", self.host,
            "--port", str(self.port),
            "--users", f"{DEMO_USER}:{DEMO_PASSWORD}",
            "--max-running", str(self.max_running),
            "--min-runtime", str(self.min_runtime_s),
            "--fail-tiles", ",".join(self.fail_tiles),
            "--fail-state-dir", str(self.fail_state_dir or self.jobs_dir),
            "--collections", ",".join(self.collections),
        ]  # fmt: skip

    def alive(self) -> bool:
        try:
            return requests.get(self.url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start(
        self, log_path: Path | None = None, detach: bool = False, timeout_s: float = 90
    ) -> int:
        """Start the back-end and wait until it answers; returns its pid. ``detach``
        keeps it running after this process ends (the demo's services)."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.process = children.start(
            self.command(),
            _env(),
            self.alive,
            f"the local back-end {self.name} on {self.url}",
            log_path=log_path,
            detach=detach,
            timeout_s=timeout_s,
        )
        return self.process.pid

    def stop(self) -> None:
        children.terminate(self.process)


@dataclass(frozen=True)
class SampleSpec:
    """Where the synthetic Sentinel-2 sample covers: a box in one UTM zone, some dates."""

    epsg: int
    bbox: tuple[float, float, float, float]
    dates: tuple[str, ...]


def load_sample(catalog: Catalog, spec: SampleSpec, cache_dir: Path) -> tuple[str, int]:
    """Generate the sample COGs once (cached in ``cache_dir``) and upsert its collection
    and items into the catalogue; returns (collection id, item count)."""
    command = [
        str(openeo_python()), "-m", "local_openeo", "sample",
        "--cache-dir", str(cache_dir),
        "--epsg", str(spec.epsg),
        "--bbox", ",".join(str(v) for v in spec.bbox),
        "--dates", ",".join(spec.dates),
    ]  # fmt: skip
    result = subprocess.run(command, env=_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise TilekeeperError(f"generating the sample failed:\n{result.stderr[-2000:]}")
    document: dict[str, Any] = json.loads(result.stdout)
    collection = document["collection"]
    catalog.upsert_collection(collection)
    written = sum(catalog.upsert_items(collection["id"], document["items"]))
    return str(collection["id"]), written


def demo_udp() -> dict[str, Any]:
    """The demo's process: a cloud-free NDVI composite (a UDP, JSON in the repo)."""
    path = REPO_ROOT / "local_openeo" / "processes" / "cloudfree_ndvi.json"
    udp: dict[str, Any] = json.loads(path.read_text())
    return udp
