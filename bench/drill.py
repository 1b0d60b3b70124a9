"""Operations drill: the runner killed -9 again and again, then a PostgreSQL outage.

Run after `tilekeeper demo` (its database, API and two local back-ends stay up). As a
user would, it creates a second 16-tile campaign on the demo's back-ends with the CLI
and runs it with `tilekeeper campaign run`:

1. the runner is killed -9 ``--kills`` times at random moments;
2. a last run goes to the end while PostgreSQL is stopped for ``--outage`` seconds
   (`tilekeeper db down`, then `db up`) in the middle of it.

Then it checks what issue 9 asks: every tile finished, no tile with two back-end jobs
that did not fail, and the last run alive through the outage. Prints a report; exits
non-zero when a check fails.

    .venv/bin/python bench/drill.py [--kills 6] [--outage 20] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.demo.scenario import DEMO_AREA, PERIOD, PROCESS_ID, connect, install_udp

console = Console()
TILEKEEPER = str(Path(sys.executable).parent / "tilekeeper")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([TILEKEEPER, *args], capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise SystemExit(f"tilekeeper {' '.join(args[:2])} failed:\n{done.stdout}{done.stderr}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--backend-ports", default="8081,8082")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ports = args.backend_ports.split(",")
    urls = {
        name: f"http://127.0.0.1:{port}/openeo/1.2/"
        for name, port in zip(("alpha", "beta"), ports, strict=True)
    }
    campaigns = Campaigns(HttpSession(args.api))
    HttpSession(args.api).wait_ready()
    install_udp(list(urls.values()))

    campaign = f"drill-{uuid.uuid4().hex[:6]}"
    cli(
        "campaign", "create", campaign, "--api", args.api, "--grid", "utm-10km",
        "--aoi", json.dumps(DEMO_AREA.aoi()), "--start", PERIOD[0], "--end", PERIOD[1],
        "--process-id", PROCESS_ID,
        *[f"--backend={name}={url}@2" for name, url in urls.items()],
    )  # fmt: skip
    tiles = sum(campaigns.counts(campaign).values())
    console.print(f"campaign {campaign}: {tiles} tiles on {', '.join(urls)}")

    logs = Path(tempfile.mkdtemp(prefix="tilekeeper-drill-"))
    run = [TILEKEEPER, "campaign", "run", campaign, "--api", args.api, "--poll-sleep", "1",
           "--worker", "drill", "--lease", "30"]  # fmt: skip
    for n in range(args.kills):
        runner = subprocess.Popen(
            [*run, "--log-file", str(logs / f"run-{n}.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(1.0, 6.0))
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        console.print(f"kill -9 #{n + 1}: {campaigns.counts(campaign)}")

    started = time.monotonic()
    last = subprocess.Popen(
        [*run, "--log-file", str(logs / "final.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(rng.uniform(3.0, 8.0))
    console.print(f"stopping PostgreSQL for {args.outage:.0f} s")
    cli("db", "down")
    time.sleep(args.outage)
    alive_after_outage = last.poll() is None
    cli("db", "up")
    console.print(f"PostgreSQL back; the runner is {'alive' if alive_after_outage else 'gone'}")
    code = last.wait(timeout=900)
    duration = time.monotonic() - started

    jobs = {j["tile"]: j["properties"] for j in campaigns.jobs_by_status(campaign, ["finished"])}
    titles: dict[str, list[dict[str, Any]]] = {}
    for name, url in urls.items():
        for job in connect(url).list_jobs(limit=None):
            titles.setdefault(str(job.get("title")), []).append({**job, "backend": name})
    doubles = {
        tile: live
        for tile in jobs
        if len(live := [j for j in titles.get(f"{campaign} {tile}", []) if j["status"] != "error"])
        != 1
    }
    checks = {
        "last run exited 0": code == 0,
        "runner alive through the outage": alive_after_outage,
        f"every tile finished ({len(jobs)}/{tiles})": len(jobs) == tiles,
        "no tile with two live back-end jobs": not doubles,
    }
    for check, ok in checks.items():
        console.print(f"[{'green' if ok else 'red'}]{'ok' if ok else 'FAILED'}[/] {check}")
    outage_lines = [
        line
        for line in (logs / "final.log").read_text().splitlines()
        if "unavailable" in line and "tilekeeper API" in line
    ]
    console.print(
        f"last run: {duration:.0f} s; {len(outage_lines)} log line(s) waiting for the API; "
        f"runner logs in {logs}"
    )
    if doubles:
        console.print(doubles)
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
