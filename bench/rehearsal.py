"""The EU27 dress rehearsal (issue 27): a whole campaign, start to disseminated map, on
simulated back-ends that fail as production ones do, with the faults a real run brings.

On a folder of its own under /tmp (removed at the end unless ``--keep``) and free ports:
the embedded database and the API (`tilekeeper db up`, `tilekeeper serve`), ``--backends``
local openEO back-ends in simulation mode (local_openeo/simulation.py: jobs of a
log-normal runtime of ``--runtime`` real-world seconds compressed ``--speedup`` times,
credits, a small real COG each, and faults: job errors, tiles that need more memory, 429s
and a concurrency limit, failing and slow downloads, expiring results), then as a user:

1. `tilekeeper campaign create` over ``--aoi``/``--grid`` (or ``--tiles`` N: a square of
   about N cells in Belgium), webhooks to a receiver here, executor memory 4g escalated
   to 8g on a retry;
2. `tilekeeper campaign pilot --tiles --pilot`, `campaign plan --json --parallel SLOTS` (the
   back-ends' slots: the physical limit), a budget of 1.5 times the high end of the projected credits;
3. ``--workers`` `tilekeeper campaign run` workers, while the API is probed (latency), the
   campaign map is open in headless Chromium and the mosaic polled, and the run is broken
   on purpose at fractions of the projected duration: a worker killed -9 (15%), PostgreSQL
   restarted (30%), a back-end killed -9 and down ``--backend-down`` s (45%), two workers
   killed -9 (65%); each killed worker starts again.

It ends with a report (and ``--json``): wall time, tiles per hour against the back-ends'
capacity, attempts and escalations, credits against the pilot's plan, API latency, database
and product store size per tile, the map's first paint, and the invariants
(bench/rehearsal_checks.py). Exits 1 when an invariant fails.

    .venv/bin/python bench/rehearsal.py --aoi eu27 --grid eea-20km [--speedup 450]
    .venv/bin/python bench/rehearsal.py --tiles 150 --speedup 3600 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from openeo.rest.auth.config import AuthConfig
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rehearsal_checks import Findings, backend_jobs, examine, folder_bytes
from rehearsal_services import PASSWORD, USER, Faults, Services

from catalog_service.client import Catalog
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.demo.scenario import connect
from catalog_service.ids import campaign_products_id

console = Console(width=140)
T0 = time.monotonic()
CAMPAIGN = "eu27-rehearsal"
INPUT = "rehearsal-input"
PROCESS_ID = "rehearsal_ndvi"
PERIOD = ("2024-05-01", "2024-08-31")
MEMORY, ESCALATED = "4g", "8g"
# Belgium, where --tiles puts its square.
CENTRE = (4.6, 50.6)


def log(message: str) -> None:
    console.print(
        f"[dim]{time.strftime('%H:%M:%S')} +{time.monotonic() - T0:6.0f}s[/dim] {message}"
    )


def udp() -> dict[str, Any]:
    """The campaign's process: a stand-in the simulated back-ends do not evaluate."""
    return {
        "id": PROCESS_ID,
        "summary": "Rehearsal NDVI composite (simulated)",
        "parameters": [
            {"name": "spatial_extent", "description": "The tile", "schema": {"type": "object"}},
            {"name": "temporal_extent", "description": "The period", "schema": {"type": "array"}},
        ],
        "process_graph": {
            "load": {
                "process_id": "load_collection",
                "arguments": {
                    "id": INPUT,
                    "spatial_extent": {"from_parameter": "spatial_extent"},
                    "temporal_extent": {"from_parameter": "temporal_extent"},
                },
            },
            "save": {
                "process_id": "save_result",
                "arguments": {"data": {"from_node": "load"}, "format": "GTiff"},
                "result": True,
            },
        },
    }


def input_collection() -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": INPUT,
        "description": "What the rehearsal's process loads (the simulated back-ends read nothing).",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-32.0, 27.0, 45.0, 72.0]]},
            "temporal": {"interval": [[f"{PERIOD[0]}T00:00:00Z", f"{PERIOD[1]}T23:59:59Z"]]},
        },
        "links": [],
    }


def square_aoi(tiles: int) -> str:
    """A WGS84 bbox of about ``tiles`` 20 km cells around CENTRE."""
    side_km = math.sqrt(tiles) * 20
    lon, lat = CENTRE
    dlat = side_km / 111.2 / 2
    dlon = side_km / (111.2 * math.cos(math.radians(lat))) / 2
    return f"{lon - dlon:.4f},{lat - dlat:.4f},{lon + dlon:.4f},{lat + dlat:.4f}"


def plan_figures(plan: dict[str, Any]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        value = plan.get(key)
        return float(value["mean"]) if value else None

    return {
        "tiles_left": plan.get("tiles_left"),
        "parallel": plan.get("parallel"),
        "attempts_per_tile": plan.get("attempts_per_tile"),
        "runtime_s": mean("runtime_s"),
        "duration_left_s": mean("duration_left_s"),
        "duration_left_s_90": [plan["duration_left_s"]["low"], plan["duration_left_s"]["high"]]
        if plan.get("duration_left_s")
        else None,
        "credits_left": mean("credits_left"),
        "credits_left_90": [plan["credits_left"]["low"], plan["credits_left"]["high"]]
        if plan.get("credits_left")
        else None,
    }


class Chaos:
    """The faults injected into real components at fractions of the projected duration;
    each runs once, in order, on a thread of its own."""

    def __init__(self, services: Services, args: argparse.Namespace, expected_s: float) -> None:
        self.services = services
        self.args = args
        self.expected_s = expected_s
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.backend_down_s = 0.0

    def _restart_worker(self, n: int) -> None:
        self.services.start_worker(n, self.args.poll_sleep, self.args.lease, CAMPAIGN)

    def _kill_workers(self, workers: list[int], pause: float) -> str:
        killed = [n for n in workers if self.services.alive(f"worker-{n}")]
        for n in killed:
            self.services.kill(f"worker-{n}")
        time.sleep(pause)
        for n in killed:
            self._restart_worker(n)
        return f"killed -9 and restarted worker(s) {killed}"

    def _restart_postgres(self) -> str:
        self.services.db_down()
        time.sleep(self.args.db_down)
        self.services.db_up()
        return f"PostgreSQL stopped for {self.args.db_down:.0f} s and started"

    def _backend_down(self) -> str:
        name = list(self.services.backend_ports)[-1]
        self.services.kill(f"backend-{name}")
        started = time.monotonic()
        self.stop.wait(self.args.backend_down)
        self.services.start_backend(name)
        self.backend_down_s = time.monotonic() - started
        return f"back-end {name} killed -9, started again after {self.backend_down_s:.0f} s"

    def plan(self) -> list[tuple[float, str, Callable[[], str]]]:
        workers = list(range(1, self.args.workers + 1))
        return [
            (0.15, "worker killed", lambda: self._kill_workers(workers[:1], 3)),
            (0.30, "PostgreSQL restart", self._restart_postgres),
            (0.45, "back-end down", self._backend_down),
            (0.65, "workers killed", lambda: self._kill_workers(workers[1:], 3)),
        ]

    def _run(self) -> None:
        for share, name, action in self.plan():
            if self.stop.wait(max(0.0, T_RUN + share * self.expected_s - time.monotonic())):
                return
            at = time.monotonic() - T_RUN
            log(f"[bold red]fault[/bold red]: {name}")
            try:
                what = action()
            except Exception as exc:  # recorded: a fault that could not be injected
                what = f"FAILED to inject: {exc}"
            self.events.append({"at_s": round(at, 1), "fault": name, "what": what})
            log(f"  {what}")


T_RUN = 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    global T_RUN
    folder = Path(tempfile.mkdtemp(prefix="tilekeeper-rehearsal-"))
    folder.chmod(0o755)  # the embedded server runs as postgres when we are root
    faults = Faults.none() if args.no_faults else Faults().scaled(args.fault_scale)
    services = Services(
        folder=folder,
        speedup=args.speedup,
        runtime_s=args.runtime,
        slots=args.slots,
        limit=args.slots + args.queue,
        backends=args.backends,
        faults=faults,
    )
    report: dict[str, Any] = {"folder": str(folder), "args": vars(args), "faults": asdict(faults)}
    watchers: list[Any] = []
    try:
        log(f"folder {folder}; database, API")
        services.db_up()
        services.start_api(workers=args.api_workers)
        api = services.api_url
        Catalog(api).upsert_collection(input_collection())
        auth = AuthConfig()
        for name in services.backend_ports:
            auth.set_basic_auth(services.backend_url(name), USER, PASSWORD)
        for name in services.backend_ports:
            services.start_backend(name)
            definition = udp()
            connect(services.backend_url(name)).save_user_defined_process(
                definition["id"],
                definition["process_graph"],
                parameters=definition["parameters"],
                summary=definition["summary"],
            )
        log(f"{args.backends} simulated back-ends, {args.slots} slots each, jobs "
            f"{args.runtime:.0f} s real / {args.speedup:g} = {args.runtime / args.speedup:.2f} s")  # fmt: skip

        watch = None if args.no_watch else _watchers()
        hooks = watch.WebhookReceiver() if watch else None
        if hooks:
            hooks.start()
            watchers.append(hooks)
        aoi = args.aoi if not args.tiles else square_aoi(args.tiles)
        create = [
            "campaign", "create", CAMPAIGN, "--grid", args.grid, "--aoi", aoi,
            "--start", PERIOD[0], "--end", PERIOD[1], "--process-id", PROCESS_ID,
            "--job-option", f"executor-memory={MEMORY}",
            "--escalate", f"executor-memory={ESCALATED}", "--max-attempts", "4",
            "--title", "EU27 dress rehearsal (simulated back-ends)",
        ]  # fmt: skip
        for name in services.backend_ports:
            create += ["--backend", f"{name}={services.backend_url(name)}@{services.limit}"]
            create += ["--backend-auth", f"{name}=basic"]
        if hooks:
            create += ["--webhook", hooks.url]
        services.cli(*create)
        campaigns = Campaigns(HttpSession(api))
        tiles = sum(campaigns.counts(CAMPAIGN).values())
        log(f"campaign {CAMPAIGN}: {tiles:,} tiles ({args.grid})")

        slots = args.backends * args.slots
        services.cli("campaign", "pilot", CAMPAIGN, "--tiles", str(args.pilot),
                     "--poll-sleep", str(args.poll_sleep))  # fmt: skip
        plan = plan_figures(
            json.loads(
                services.cli("campaign", "plan", CAMPAIGN, "--json", "--parallel", str(slots))
            )
        )
        report["plan"] = plan
        # Room for the faults a small pilot may not have met (retries, escalations).
        high = (plan["credits_left_90"] or [plan["credits_left"] or 0.0])[-1]
        budget = round(1.5 * high + 1000)
        services.cli("campaign", "budget", CAMPAIGN, str(budget))
        log(f"pilot of {args.pilot}: projected {plan['duration_left_s'] or 0:.0f} s and "
            f"{plan['credits_left'] or 0:,.0f} credits for the {plan['tiles_left']:,} tiles left; "
            f"budget {budget:,}")  # fmt: skip

        if watch:
            for watcher in (
                watch.ApiProber(api, CAMPAIGN),
                watch.MosaicPoller(api, campaign_products_id(CAMPAIGN)),
                watch.MapWatcher(api, CAMPAIGN),
            ):
                watcher.start()
                watchers.append(watcher)
        run_started = datetime.now(UTC)
        T_RUN = time.monotonic()
        for n in range(1, args.workers + 1):
            services.start_worker(n, args.poll_sleep, args.lease, CAMPAIGN)
        chaos = Chaos(services, args, plan["duration_left_s"] or 60.0)
        if not args.no_chaos:
            chaos.thread.start()
        crashes = _wait_for_workers(services, args, campaigns, chaos)
        wall = time.monotonic() - T_RUN
        chaos.stop.set()
        if chaos.thread.is_alive():
            chaos.thread.join()
        log(f"all workers done after {wall:.0f} s")
        report["faults_injected"] = chaos.events
        report["worker_crashes"] = crashes
        for watcher in watchers:
            watcher.stop()
        report["watch"] = {type(w).__name__: w.summary() for w in watchers}
        if watch:
            report["map_first_paint"] = watch.MapWatcher(api, CAMPAIGN).first_paint()

        findings = examine(
            api,
            CAMPAIGN,
            {name: services.jobs_dir(name) for name in services.backend_ports},
            MEMORY,
            datetime.now(UTC),
        )
        main_run = examine_main_run(services, run_started)
        report["findings"] = _findings_dict(findings)
        report["run"] = _run_figures(args, plan, findings, main_run, wall, tiles, chaos)
        report["sizes"] = _sizes(services, tiles)
        return report
    finally:
        for watcher in watchers:
            with contextlib.suppress(Exception):  # already stopped
                watcher.stop()
        services.stop_all()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def _watchers() -> Any:
    """bench/rehearsal_watch.py (None where playwright is missing)."""
    try:
        import rehearsal_watch
    except ImportError as exc:
        log(f"no observers ({exc})")
        return None
    return rehearsal_watch


def _wait_for_workers(
    services: Services, args: argparse.Namespace, campaigns: Campaigns, chaos: Chaos
) -> list[dict[str, Any]]:
    """Until every worker ended by itself; a worker that crashed is started again."""
    crashes: list[dict[str, Any]] = []
    last = 0.0
    while True:
        time.sleep(1)
        done = 0
        for n in range(1, args.workers + 1):
            code = services.worker_exit(n)
            if code is None:
                continue  # running, or being restarted by the chaos
            if code == 0:
                done += 1
            else:
                crashes.append({"worker": n, "exit": code, "at_s": round(time.monotonic() - T_RUN)})
                log(f"[bold red]worker {n} exited {code}[/bold red]: started again")
                services.kill(f"worker-{n}")
                services.start_worker(n, args.poll_sleep, args.lease, CAMPAIGN)
        if done == args.workers:
            return crashes
        if time.monotonic() - last > args.progress:
            last = time.monotonic()
            try:
                counts = campaigns.counts(CAMPAIGN)
                log(", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
            except Exception as exc:  # the database is being restarted
                log(f"counts unavailable: {exc}")


def examine_main_run(services: Services, since: datetime) -> dict[str, Any]:
    """The back-end jobs started after the pilot: what the main run used."""
    jobs = backend_jobs(
        {name: services.jobs_dir(name) for name in services.backend_ports}, CAMPAIGN
    )
    mine = [j for j in jobs if (j.queued or j.started or since) >= since]
    ran = [j for j in mine if j.status in ("finished", "error")]
    return {
        "jobs": len(mine),
        "slot_s": sum(j.wall_s for j in ran),
        "mean_job_s": sum(j.wall_s for j in ran) / len(ran) if ran else 0.0,
        "credits": sum(j.credits for j in mine),
        "tiles": len({j.tile for j in mine}),
    }


def _run_figures(
    args: argparse.Namespace,
    plan: dict[str, Any],
    findings: Findings,
    main: dict[str, Any],
    wall: float,
    tiles: int,
    chaos: Chaos,
) -> dict[str, Any]:
    slots = args.backends * args.slots
    tiles_run = plan["tiles_left"] or main["tiles"]
    per_hour = tiles_run / wall * 3600
    # The physical limit: every slot busy all the time with the jobs this run needed.
    capacity = 3600 * slots * tiles_run / main["slot_s"] if main["slot_s"] else 0.0
    outage = chaos.backend_down_s * args.slots
    return {
        "wall_s": round(wall, 1),
        "tiles": tiles,
        "tiles_run": tiles_run,
        "tiles_per_hour": round(per_hour),
        "capacity_tiles_per_hour": round(capacity),
        "share_of_capacity": round(per_hour / capacity, 3) if capacity else None,
        "share_of_capacity_outage_excluded": round(main["slot_s"] / (slots * wall - outage), 3)
        if wall
        else None,
        "jobs": main["jobs"],
        "attempts_per_tile": round(main["jobs"] / tiles_run, 3) if tiles_run else None,
        "mean_job_s": round(main["mean_job_s"], 2),
        "credits": round(main["credits"], 1),
        "duration_vs_plan": round(wall / plan["duration_left_s"], 3)
        if plan["duration_left_s"]
        else None,
        "credits_vs_plan": round(main["credits"] / plan["credits_left"], 3)
        if plan["credits_left"]
        else None,
        "escalated_jobs": findings.escalated,
    }


def _findings_dict(findings: Findings) -> dict[str, Any]:
    out = asdict(findings)
    out["ok"] = findings.ok
    return out


def _sizes(services: Services, tiles: int) -> dict[str, Any]:
    services.db_up()  # a no-op when up
    url = services.cli("db", "url").strip()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    db_bytes = int(row[0]) if row else 0
    store = folder_bytes(services.folder / "products")
    return {
        "database_bytes": db_bytes,
        "database_bytes_per_tile": round(db_bytes / tiles),
        "product_store_bytes": store,
        "product_store_bytes_per_tile": round(store / tiles),
    }


def print_report(report: dict[str, Any]) -> None:
    console.rule("rehearsal report")
    console.print_json(json.dumps({k: v for k, v in report.items() if k != "args"}, default=str))
    findings = report.get("findings", {})
    for check in findings.get("checks", []):
        mark = "[green]ok[/green]" if check["ok"] else "[bold red]FAILED[/bold red]"
        console.print(f"{mark}  {check['name']}: {check['detail']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aoi", default="eu27")
    parser.add_argument("--grid", default="eea-20km")
    parser.add_argument("--tiles", type=int, default=0, help="About this many tiles (0: the AOI).")
    parser.add_argument("--speedup", type=float, default=450.0)
    parser.add_argument("--runtime", type=float, default=1800.0, help="Mean real-world job s.")
    parser.add_argument("--backends", type=int, default=3)
    parser.add_argument("--slots", type=int, default=5, help="Jobs a back-end runs at once.")
    parser.add_argument("--queue", type=int, default=2, help="Jobs queued beyond the slots.")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--pilot", type=int, default=30)
    parser.add_argument("--poll-sleep", type=float, default=1.0)
    parser.add_argument("--lease", type=float, default=20.0)
    parser.add_argument("--db-down", type=float, default=10.0)
    parser.add_argument("--backend-down", type=float, default=60.0)
    parser.add_argument("--progress", type=float, default=30.0, help="Seconds between logs.")
    parser.add_argument("--fault-scale", type=float, default=1.0, help="Multiply fault rates.")
    parser.add_argument("--no-faults", action="store_true", help="Back-ends without faults.")
    parser.add_argument("--no-chaos", action="store_true", help="Kill and restart nothing.")
    parser.add_argument("--no-watch", action="store_true", help="No map, prober, mosaic.")
    parser.add_argument("--keep", action="store_true", help="Keep the folder.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    ok = report.get("findings", {}).get("ok", False) and not report.get("worker_crashes")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
