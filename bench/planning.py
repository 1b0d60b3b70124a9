"""Planning at scale: the pilot's sample and the plan on a large campaign.

Registers a campaign of N utm-10km tiles (default 100,000; `--million` for 1,000,000) on a
throwaway cluster with the API as its own process, finishes 1% of them with runtimes and
costs, then measures, each against its anchor in the same run:

- choosing a pilot of 8 tiles (every not_started tile read with its native bbox, centres
  projected, a Z-order sample, stored in the campaign), in a process of its own with its
  peak memory, against only reading those tiles through the API (what any sample over the
  whole area must do);
- the plan (definition, summary, the finished tiles' properties, bootstrap intervals)
  against reading the finished tiles alone.

    .venv/bin/python bench/planning.py [--tiles 100000] [--million]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from throwaway import throwaway_stack

from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.jobs import status
from catalog_service.planning.pilot import plan

console = Console()
AREA = "-10,35,45,71"  # utm-10km: 145,800 tiles
WIDE_AREA = "-25,-40,70,72"  # Europe, Africa and the Middle East: 1,071,568


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


PILOT = """
import json, re, sys, time
from pathlib import Path
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.planning.pilot import choose_pilot
start = time.perf_counter()
chosen = choose_pilot(Campaigns(HttpSession(sys.argv[1])), sys.argv[2], 8)
seconds = time.perf_counter() - start
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec).
status = Path("/proc/self/status").read_text()
peak_mb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
print(json.dumps({"seconds": seconds, "tiles": len(chosen), "peak_mb": peak_mb}))
"""


def pilot_in_a_process(url: str, campaign: str) -> dict[str, Any]:
    """The pilot's choice as `tilekeeper campaign pilot` makes it, in a process of its own
    so that its peak memory is its own."""
    done = subprocess.run(
        [sys.executable, "-c", PILOT, url, campaign], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the pilot failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def finish_some(campaigns: Campaigns, campaign: str, tiles: list[str]) -> None:
    """Runs a share of the tiles through to finished with usage and costs."""
    for chunk in range(0, len(tiles), 1_000):
        part = tiles[chunk : chunk + 1_000]
        for step in ("queued", "running"):
            campaigns.change(campaign, [{"tile": t, "status": step} for t in part])
        done = [
            {
                "tile": t,
                "status": status.FINISHED,
                "set": {
                    "costs": 80 + (n % 40),
                    # As the runner stores the back-end's usage.
                    "duration": f"{1500 + 10 * (n % 60)} seconds",
                },
            }
            for n, t in enumerate(part)
        ]
        campaigns.change(campaign, done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="1,000,000 tiles")
    args = parser.parse_args()
    count = 1_000_000 if args.million else args.tiles
    area = WIDE_AREA if count > 145_800 else AREA
    with throwaway_stack() as stack:
        campaigns = Campaigns(HttpSession(stack.url))
        campaign = f"plan-{uuid.uuid4().hex[:6]}"
        campaigns.create(
            {"id": campaign, "grid": "utm-10km", "temporal_extent": ["2024-01-01", "2024-12-31"],
             "backends": [{"name": "a", "url": "http://a.test/", "parallel_jobs": 15}]}
        )  # fmt: skip
        tiles = tiles_for("utm-10km", load_aoi(area)).take(slice(0, count))  # type: ignore[arg-type]
        with console.status(f"registering {len(tiles):,} tiles"):
            registering, _ = timed(lambda: campaigns.register(campaign, tile_records(tiles)))
        ids = [str(t) for t in tiles.ids]
        with console.status(f"finishing {len(ids) // 100:,} tiles"):
            finish_some(campaigns, campaign, ids[::100])

        not_started = [status.NOT_STARTED]
        read_all, jobs = timed(lambda: sum(1 for _ in campaigns.iter_jobs(campaign, not_started)))
        pilot = pilot_in_a_process(stack.url, campaign)
        read_finished, finished = timed(
            lambda: sum(1 for _ in campaigns.iter_jobs(campaign, sorted(status.TERMINAL)))
        )
        plan_s, projection = timed(lambda: plan(campaigns, campaign))

        table = Table(title=f"Planning, {len(ids):,} tiles (registered in {registering:.0f} s)")
        table.add_column("")
        table.add_column("seconds", justify="right")
        table.add_column("anchor", justify="right")
        table.add_column("ratio", justify="right")
        table.add_row(
            f"pilot of {pilot['tiles']} among {jobs:,} not_started", f"{pilot['seconds']:.2f}",
            f"{read_all:.2f} (reading them)", f"{pilot['seconds'] / read_all:.2f}",
        )  # fmt: skip
        table.add_row(
            f"plan from {finished:,} finished", f"{plan_s:.2f}",
            f"{read_finished:.2f} (reading them)", f"{plan_s / read_finished:.2f}",
        )  # fmt: skip
        console.print(table)
        console.print(f"the pilot's process: peak memory {pilot['peak_mb']:,.0f} MB")
        runtime, duration = projection.runtime_s, projection.duration_s
        if runtime and duration:
            console.print(
                f"projected: {duration.mean / 86_400:.1f} days at {projection.parallel} "
                f"parallel; runtime per tile {runtime.mean:.0f} s "
                f"[{runtime.low:.0f}, {runtime.high:.0f}]"
            )


if __name__ == "__main__":
    main()
