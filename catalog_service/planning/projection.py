"""Duration and credits of a whole campaign, projected from tiles that ran.

The arithmetic of the EU27 guide (tiles x runtime / parallel jobs; tiles x credits, a
tile's credits being all its attempts'), with an interval: the mean runtime and cost are bootstrapped from the sample (90% interval).
Runtime is the time a job ran: the back-end's reported ``duration`` usage when there is
one, else ``finish_time - running_start_time`` as the runner saw them, never the time it
waited in a back-end's queue (``start_time`` to running), which is reported apart. Jobs
run in waves of ``parallel``: ``ceil(tiles x attempts per tile / parallel)`` runtimes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from catalog_service.jobs import status
from catalog_service.jobs.campaign import EARLIER_COSTS_KEY

BOOTSTRAP_ROUNDS = 2000
LOW, HIGH = 5.0, 95.0
_NUMBER = re.compile(r"^\s*([-+0-9.eE]+)\s*([A-Za-z-]*)\s*$")
_MEMORY_UNITS = {"": 1 / 1024**3, "b": 1 / 1024**3, "k": 1 / 1024**2, "kb": 1 / 1024**2,
                 "m": 1 / 1024, "mb": 1 / 1024, "g": 1.0, "gb": 1.0, "t": 1024.0, "tb": 1024.0}  # fmt: skip


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def scaled(self, factor: float) -> Interval:
        return Interval(self.mean * factor, self.low * factor, self.high * factor)


@dataclass
class Memory:
    peak_gb: float | None = None
    requested_gb: float | None = None
    headroom: float | None = None  # 1 - peak / requested


@dataclass
class Plan:
    campaign: str
    source: str  # "pilot" or "finished tiles"
    sample: int
    tiles: int
    tiles_left: int
    parallel: int
    attempts_per_tile: float
    runtime_s: Interval | None
    runtime_from: str
    queue_s: float | None
    costs: Interval | None
    duration_s: Interval | None  # the whole campaign
    duration_left_s: Interval | None
    credits: Interval | None  # the whole campaign
    credits_left: Interval | None
    job_options: dict[str, Any] = field(default_factory=dict)
    memory: Memory = field(default_factory=Memory)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _quantity(value: Any) -> tuple[float, str] | None:
    """A usage figure as the runner stores it ("15.2 seconds") or a bare number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), ""
    match = _NUMBER.match(value) if isinstance(value, str) else None
    if not match:
        return None
    try:
        return float(match.group(1)), match.group(2).lower()
    except ValueError:
        return None


def runtime_of(props: dict[str, Any]) -> tuple[float | None, str]:
    """(seconds the job ran, where the figure comes from)."""
    reported = _quantity(props.get("duration"))
    if reported and reported[1] in ("", "s", "seconds", "second"):
        return reported[0], "back-end usage"
    finished, running = _time(props.get("finish_time")), _time(props.get("running_start_time"))
    if finished and running:
        return (finished - running).total_seconds(), "running time"
    started = _time(props.get("start_time"))
    if finished and started:
        return (finished - started).total_seconds(), "start to finish (queue included)"
    return None, ""


def tile_credits(props: dict[str, Any]) -> float | None:
    """The credits of all a tile's attempts: its job's and the earlier ones'."""
    parts = [props.get(k) for k in ("costs", EARLIER_COSTS_KEY)]
    numbers = [float(v) for v in parts if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(numbers) if numbers else None


def queue_of(props: dict[str, Any]) -> float | None:
    started, running = _time(props.get("start_time")), _time(props.get("running_start_time"))
    return (running - started).total_seconds() if started and running else None


def memory_gb(value: Any) -> float | None:
    """Memory as a job option ("4g", "2048m") or usage ("1.5 gb") in GiB."""
    if isinstance(value, str):
        match = re.match(r"^\s*([0-9.]+)\s*([A-Za-z]*)\s*$", value)
        if match and match.group(2).lower() in _MEMORY_UNITS:
            return float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
        return None
    quantity = _quantity(value)
    return quantity[0] * _MEMORY_UNITS[""] if quantity else None


def bootstrap_mean(values: Sequence[float], seed: int = 0) -> Interval:
    data = np.asarray(values, dtype=float)
    if len(data) == 1:
        return Interval(float(data[0]), float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(BOOTSTRAP_ROUNDS, len(data)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [LOW, HIGH])
    return Interval(float(data.mean()), float(low), float(high))


def _waves(tiles: float, parallel: int) -> int:
    return math.ceil(tiles / max(parallel, 1)) if tiles > 0 else 0


def project(
    campaign: str,
    sample: Sequence[dict[str, Any]],
    *,
    source: str,
    tiles: int,
    tiles_left: int,
    parallel: int,
    campaign_job_options: dict[str, Any],
) -> Plan:
    """The plan from ``sample`` (properties of tiles that ran; finished ones give the
    runtime and cost, all of them the attempts per tile)."""
    finished = [p for p in sample if p.get("status") == status.FINISHED]
    timed = [runtime_of(p) for p in finished]
    runtimes = [t for t, _ in timed if t is not None]
    sources = sorted({s for t, s in timed if t is not None})
    # A tile's credits are every attempt's (its earlier ones kept apart by a reset).
    costs = [c for c in (tile_credits(p) for p in sample if p.get("status") in status.TERMINAL) if c is not None]  # fmt: skip
    queues = [q for q in (queue_of(p) for p in finished) if q is not None]
    attempts = [max(int(p.get("attempts") or 1), 1) for p in sample if p.get("status") in status.TERMINAL]  # fmt: skip
    per_tile = float(np.mean(attempts)) if attempts else 1.0
    runtime = bootstrap_mean(runtimes) if runtimes else None
    cost = bootstrap_mean(costs) if costs else None

    def duration(count: int) -> Interval | None:
        return runtime.scaled(_waves(count * per_tile, parallel)) if runtime else None

    def credits(count: int) -> Interval | None:
        return cost.scaled(count) if cost else None  # attempts are in each tile's credits

    options: dict[str, Any] = dict(campaign_job_options)
    for props in sample:
        extra = props.get("job_options")
        if isinstance(extra, dict):
            options.update(extra)
    peaks = [m for m in (memory_gb(p.get("max_executor_memory")) for p in finished) if m]
    requested = memory_gb(options.get("executor-memory")) if options.get("executor-memory") else None  # fmt: skip
    memory = Memory(peak_gb=max(peaks) if peaks else None, requested_gb=requested)
    if memory.peak_gb and requested:
        memory.headroom = 1 - memory.peak_gb / requested
    return Plan(
        campaign=campaign,
        source=source,
        sample=len(finished),
        tiles=tiles,
        tiles_left=tiles_left,
        parallel=parallel,
        attempts_per_tile=per_tile,
        runtime_s=runtime,
        runtime_from=", ".join(sources),
        queue_s=float(np.mean(queues)) if queues else None,
        costs=cost,
        duration_s=duration(tiles),
        duration_left_s=duration(tiles_left),
        credits=credits(tiles),
        credits_left=credits(tiles_left),
        job_options=options,
        memory=memory,
    )
