"""Simulation mode: jobs that behave like a production back-end's, fast.

A simulated job does not evaluate its process graph: it lasts a runtime drawn from a
log-normal distribution of real-world seconds, divided by ``speedup`` (only the clock is
compressed), costs credits for the real-world time and memory it stands for, and writes
one small real COG over its tile's ``spatial_extent`` (in the tile's own CRS). Faults are
drawn at configurable rates, as a real week brings them:

- a job error (the executors were lost) at ``error_rate``;
- tiles that need more memory: a ``memory_rate`` share of tiles (the same tiles on every
  back-end: drawn from the job's title) fail until the job asks ``executor-memory`` of at
  least ``memory_needed_gb``;
- 429 answers to a ``throttle_rate`` share of job requests, and a per-user limit of jobs
  queued or running (``concurrency_limit``) above which a start is answered 429;
- result downloads that fail (503) or are slow, and results that expire: a share of
  finished jobs whose files are deleted ``expire_after_s`` after the job finished.

A back-end down for a while is not simulated here: stop its process (its jobs resume
when it starts again).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_bounds
from rasterio.warp import transform_bounds

from local_openeo.cogs import describe_cog

_MEMORY = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_GB = {"": 1 / 1024**3, "k": 1 / 1024**2, "m": 1 / 1024, "g": 1.0, "t": 1024.0}


@dataclass(frozen=True)
class Simulation:
    """How simulated jobs behave (``serve --simulate`` and its ``--sim-*`` options)."""

    speedup: float = 300.0  # real-world seconds per second here
    runtime_s: float = 1800.0  # mean real-world runtime of a job
    runtime_sigma: float = 0.3  # spread of the log-normal runtime
    credits_per_hour: float = 200.0  # per real-world hour at the default memory
    default_memory_gb: float = 4.0  # what a job gets without an executor-memory option
    error_rate: float = 0.0
    memory_rate: float = 0.0
    memory_needed_gb: float = 8.0
    throttle_rate: float = 0.0
    concurrency_limit: int = 0  # 0: none
    download_fail_rate: float = 0.0
    slow_download_rate: float = 0.0
    slow_download_s: float = 0.0  # seconds here
    expire_rate: float = 0.0
    expire_after_s: float = 0.0  # seconds here, after the job finished
    pixels: int = 64  # a result's width and height
    seed: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Simulation:
        given = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in given.items() if k in known})

    @property
    def mean_wall_s(self) -> float:
        """A job's mean runtime on this machine."""
        return self.runtime_s / self.speedup


@dataclass(frozen=True)
class SimulatedRun:
    wall_s: float  # how long the job runs here
    error: str | None
    peak_gb: float  # the executors' peak memory, as Geotrellis back-ends report it
    credits: float
    expires_after_s: float | None  # results deleted this long after finishing


def memory_gb(job_options: dict[str, Any] | None, default: float) -> float:
    """The executor memory a job asked for (``executor-memory``: "8g", "8192m", ...)."""
    value = (job_options or {}).get("executor-memory")
    match = _MEMORY.match(str(value)) if value is not None else None
    try:
        return float(match[1]) * _GB[match[2].lower()] if match else default
    except ValueError:  # "1.2.3g": not a figure
        return default


def _share(*parts: str) -> float:
    """A uniform draw in [0, 1) fixed by ``parts``: the same on every back-end and run."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Simulator:
    """Draws each job's run and the request faults; writes the results."""

    def __init__(self, simulation: Simulation, name: str) -> None:
        self.simulation = simulation
        self._random = random.Random(f"{simulation.seed}-{name}")
        self._lock = threading.Lock()

    def _uniform(self) -> float:
        with self._lock:
            return self._random.random()

    def plan(self, state: dict[str, Any]) -> SimulatedRun:
        """What this run of the job will do."""
        sim = self.simulation
        sigma = sim.runtime_sigma
        with self._lock:
            real_s = self._random.lognormvariate(math.log(sim.runtime_s) - sigma**2 / 2, sigma)
        memory = memory_gb(state.get("job_options"), sim.default_memory_gb)
        error = None
        title = str(state.get("title") or state["id"])
        hungry = _share(str(sim.seed), "memory", title) < sim.memory_rate
        need = 0.85 * sim.memory_needed_gb if hungry else 0.6 * sim.default_memory_gb
        if need > memory:
            real_s *= 0.5  # it dies half-way
            error = (
                f"simulated: the executors ran out of memory (executor-memory {memory:g}g; "
                f"this tile needs {sim.memory_needed_gb:g}g)"
            )
        elif self._uniform() < sim.error_rate:
            real_s *= 0.2 + 0.6 * self._uniform()
            error = "simulated: the job lost its executors (a transient back-end fault)"
        expires = None
        if error is None and self._uniform() < sim.expire_rate:
            expires = sim.expire_after_s
        credits = real_s / 3600 * sim.credits_per_hour * memory / sim.default_memory_gb
        peak = min(need, memory)
        return SimulatedRun(real_s / sim.speedup, error, peak, round(credits, 3), expires)

    def write_result(self, state: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
        """One small COG over the job's ``spatial_extent``: a smooth field of values
        (a continental mosaic of them looks like a map), in the tile's own CRS, tagged
        with the job's id (so each attempt's file is different bytes)."""
        extent = _spatial_extent(state["process"]["process_graph"])
        if extent is None:
            raise ValueError("the process graph has no spatial_extent to simulate a result over")
        bounds = (extent["west"], extent["south"], extent["east"], extent["north"])
        crs = f"EPSG:{extent.get('crs', 4326)}"
        size = self.simulation.pixels
        lon0, lat0, lon1, lat1 = transform_bounds(crs, "EPSG:4326", *bounds)
        lon = np.linspace(lon0, lon1, size, dtype="float64")[None, :]
        lat = np.linspace(lat1, lat0, size, dtype="float64")[:, None]
        values = 0.45 + 0.25 * np.sin(np.radians(lon) * 9) * np.cos(np.radians(lat) * 7)
        values = (values + 0.1 * np.cos(np.radians(lat + lon) * 40)).astype("float32")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "openEO.tif"
        profile: dict[str, Any] = {
            "driver": "COG",
            "width": size,
            "height": size,
            "count": 1,
            "dtype": "float32",
            "crs": crs,
            "transform": from_bounds(*bounds, size, size),
            "compress": "deflate",
            "nodata": float("nan"),
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(values[None, :, :])
            dst.descriptions = ("NDVI",)
            dst.update_tags(OPENEO_JOB_ID=state["id"])
        asset = describe_cog(path, ["NDVI"], None)
        # Kept beside the results for the rehearsal's end-to-end check (openeo-driver's
        # results document does not pass it on).
        asset["file:checksum"] = "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        return [asset]

    def request_fault(self, path: str, expired: bool) -> tuple[int, str] | None:
        """(status, message) to answer a request with instead of serving it, if any.
        Sleeps first when a download is to be slow."""
        sim = self.simulation
        if "/results/assets/" in path:
            if expired:
                return 404, "simulated: the job's results expired and were deleted"
            if self._uniform() < sim.download_fail_rate:
                return 503, "simulated: the result storage is unavailable"
            if self._uniform() < sim.slow_download_rate:
                time.sleep(sim.slow_download_s)
            return None
        if "/jobs" in path and self._uniform() < sim.throttle_rate:
            return 429, "simulated: too many requests, slow down"
        return None


def _spatial_extent(graph: dict[str, Any]) -> dict[str, Any] | None:
    """The first ``spatial_extent`` argument of the graph's nodes (the tile's bbox)."""
    for spec in graph.values():
        extent = (spec.get("arguments") or {}).get("spatial_extent")
        if isinstance(extent, dict) and {"west", "south", "east", "north"} <= set(extent):
            return extent
    return None
