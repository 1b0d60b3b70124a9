"""Fault drills on the production topology, under load (issue 25: "broken on purpose").

`scripts/cluster.sh up` on a fresh folder under /tmp and fresh ports (destroyed at the end,
also on failure), a campaign of ``--tiles`` tiles registered through the API, then, one
after the other, each drill under the same load:

- locust (bench/drills_locust.py: bench/locustfile.py's readers, map viewers and
  dashboards, LOAD_PACE=people, ``--users``) through the proxy over HTTPS, verifying the
  cluster's CA;
- ``--writers`` writer threads of this process sending job changes through the proxy with
  the Python client (catalog_service.client, its retries), each change marked with an id of
  its own in its history details; every change answered 2xx is recorded, and afterwards
  each must be in tilekeeper.job_history exactly once (no change lost or applied twice);
- a prober (a GET every 0.25 s, no retries) timing the outage.

The drills (``--drills``, in this order):

- ``api``: kill -9 one API process (its whole process group): the proxy fails over;
- ``primary``: the PostgreSQL primary stopped (`pg_ctl stop -m fast`) for ``--primary-down``
  s and started (0: `pg_ctl restart -m fast`): 503s, then recovery;
- ``replica``: `pg_ctl stop` of the replica, ``--replica-down`` s, start: reads fall back to
  the primary (catalog_service/api/read_routing.py), then return to the replica;
- ``worker``: a campaign of ``--small-tiles`` tiles run by the three runner "machines"
  (`scripts/cluster.sh workers`) on the local openEO back-ends; one is killed -9 while it
  holds tiles: time until another worker changes one of them (its lease runs out first),
  and the campaign still ends with every tile finished and harvested;
- ``s3``: another such campaign with the object store (moto_server) killed as the workers
  start, before any harvest (moto keeps objects in memory: a file written before the kill
  would be gone, which no service can help), and started again on the same port after
  ``--s3-down`` s (`scripts/cluster.sh start s3`, which makes the bucket again). Harvests
  that failed meanwhile stay failed until a run catches them up: the workers are run once
  more if needed (a re-harvest), then every finished tile must have its product
  registered and its files in the bucket.

Prints one table: requests failed (reads: locust; writes: the writers), changes lost,
applied twice, time to recover (from the fault to the first success after the last failed
request), the longest write, and each drill's own figures. Exits 1 when a check fails.

    .venv/bin/python bench/drills.py [--drills api,primary,replica,worker,s3] [--tiles 3000]
        [--users 24] [--writers 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import requests
from rich.console import Console
from rich.table import Table

from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import ApiError, HttpSession
from catalog_service.demo.scenario import DemoArea, campaign_definition
from catalog_service.errors import TilekeeperError
from catalog_service.ids import campaign_products_id

console = Console(width=160)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = ROOT / "scripts" / "cluster.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
LOAD_CAMPAIGN = "drill-load"
DRILLS = ("api", "primary", "replica", "worker", "s3")
# Six 10 km tiles inside the synthetic sample the back-ends read (the demo's area).
SMALL_AREA = DemoArea(600_000, 5_640_000, 630_000, 5_660_000)
WORKERS = 3
T0 = time.monotonic()


def log(message: str) -> None:
    console.print(
        f"[dim]{time.strftime('%H:%M:%S')} +{time.monotonic() - T0:5.0f}s[/dim] {message}"
    )


# -- the cluster --------------------------------------------------------------------------


class Cluster:
    """scripts/cluster.sh on a folder of its own, and what a drill reaches directly."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.env = dict(os.environ, TILEKEEPER_CLUSTER_DIR=str(folder))
        if (ROOT / ".venv").exists() and (ROOT / ".venv-openeo").exists():
            self.env["TILEKEEPER_CLUSTER_BOOTSTRAP"] = "0"
        self.ports: dict[str, int] = {}

    def script(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)}:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def up(self) -> None:
        log(f"cluster.sh up in {self.dir} (fresh ports) ...")
        started = time.monotonic()
        self.script("up")
        self.ports = {
            name: int(value)
            for name, value in (
                line.split("=") for line in (self.dir / "ports.env").read_text().split()
            )
        }
        log(f"cluster up in {time.monotonic() - started:.0f} s: proxy {self.url}")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.ports['PROXY_PORT']}/tk/"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['S3_PORT']}"

    @property
    def ca(self) -> str:
        return str(self.dir / "tls" / "ca.crt")

    def secret(self, name: str) -> str:
        return (self.dir / "secrets" / name).read_text().strip()

    def admin_dsn(self, port_name: str = "PG_PORT") -> str:
        return (
            f"postgresql://tilekeeper_admin:{self.secret('admin')}@127.0.0.1:"
            f"{self.ports[port_name]}/tilekeeper?sslmode=verify-full&sslrootcert={self.ca}"
        )

    def sql(self, query: str, params: Any = None, port_name: str = "PG_PORT") -> list[Any]:
        """Rows, as the superuser over TLS verified against the cluster's CA."""
        with psycopg.connect(self.admin_dsn(port_name), connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def pid(self, name: str) -> int:
        return int((self.dir / "run" / f"{name}.pid").read_text())

    def kill_group(self, name: str) -> None:
        os.killpg(self.pid(name), signal.SIGKILL)

    def proxy_next_upstream(self, conditions: str) -> None:
        """Replace the proxy's proxy_next_upstream conditions (the rendered copy of
        docker/nginx.conf.template) and reload nginx: to try a change of the proxy."""
        conf = self.dir / "nginx" / "tilekeeper.conf"
        text = re.sub(r"proxy_next_upstream [^;]*;", f"proxy_next_upstream {conditions};",
                      conf.read_text())  # fmt: skip
        conf.write_text(text)
        os.kill(int((self.dir / "nginx" / "nginx.pid").read_text()), signal.SIGHUP)
        time.sleep(2)

    def pg_ctl(self, server: str, *args: str) -> None:
        data = self.dir / "pg" / server
        command = [str(PG_BIN / "pg_ctl"), "-D", str(data), *args]
        if os.getuid() == 0:  # PostgreSQL refuses root: as cluster.sh, as the postgres user
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def group_alive(self, name: str) -> bool:
        """Any live (non-zombie) process in the group cluster.sh started as ``name``."""
        group = self.pid(name)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group and fields[0] != "Z":
                    return True
        return False

    def worker_ended(self, n: int) -> str | None:
        if self.group_alive(f"worker-w{n}"):
            return None
        lines = (self.dir / "logs" / f"worker-w{n}.log").read_text().strip().splitlines()
        return lines[-1] if lines else ""


# -- the load -----------------------------------------------------------------------------


@dataclass
class Event:
    """One request of the writers or the prober: when it was sent and answered."""

    kind: str  # "write" or "probe"
    start: float
    end: float
    ok: bool
    status: int | None = None  # the HTTP status of a failure (None: no answer)
    error: str = ""
    change: str = ""  # a write's change id


@dataclass
class Acked:
    change: str  # the id in the history's details
    tile: str
    at: float


@dataclass
class Load:
    """The writers and the prober, recording what happened; locust runs per drill."""

    cluster: Cluster
    campaign: str
    tiles: list[str]
    writers: int
    pace_s: float
    events: list[Event] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        share = len(self.tiles) // self.writers
        for n in range(self.writers):
            mine = self.tiles[n * share : (n + 1) * share]
            self.threads.append(threading.Thread(target=self._write, args=(n, mine), daemon=True))
        self.threads.append(threading.Thread(target=self._probe, daemon=True))
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    def record(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def _probe(self) -> None:
        session = requests.Session()
        session.verify = self.cluster.ca
        url = f"{self.cluster.url}search"
        while not self.stop.is_set():
            start = time.time()
            status: int | None = None
            try:
                status = session.get(
                    url, params={"collections": self.campaign, "limit": 1}, timeout=10
                ).status_code
                ok, error = status == 200, "" if status == 200 else f"HTTP {status}"
            except requests.RequestException as exc:
                ok, error = False, type(exc).__name__
            self.record(Event("probe", start, time.time(), ok, status, error))
            self.stop.wait(0.25)

    def _write(self, n: int, tiles: list[str]) -> None:
        """Moves its own tiles round: queued (a new job id), running, finished, reset; each
        a compare-and-set on the status it believes the tile is in."""
        http = HttpSession(self.cluster.url, api_key=self.cluster.secret("admin-key"))
        campaigns = Campaigns(http)
        state: dict[str, str | None] = dict.fromkeys(tiles, "not_started")
        actor = f"drill-writer-{n}"
        i = 0
        while not self.stop.is_set():
            tile = tiles[i % len(tiles)]
            i += 1
            current = state[tile]
            if current is None:  # unknown after a failure: read it again (from the primary)
                with suppress(TilekeeperError, requests.RequestException):
                    jobs = campaigns.jobs_by_tile(self.campaign, [tile])
                    state[tile] = current = str(jobs[0]["properties"]["status"])
                if current is None:
                    self.stop.wait(self.pace_s)
                    continue
            change_id = uuid.uuid4().hex
            change: dict[str, Any] = {"tile": tile, "details": {"drill": change_id}}
            following = {
                "not_started": "queued",
                "queued": "running",
                "running": "finished",
                "finished": "not_started",
            }.get(current)
            if following is None:  # a status the writer does not move (never expected)
                self.stop.wait(self.pace_s)
                continue
            if following == "not_started":
                change.update(reset=True, expect_status="finished")
            else:
                change.update(status=following, expect_status=current)
            if following == "queued":
                change["set"] = {"openeo:job_id": f"j-{change_id[:12]}", "backend_name": "alpha"}
            start = time.time()
            try:
                out = campaigns.change(self.campaign, [change], actor=actor)
                ok = any(applied["tile"] == tile for applied in out["applied"])
                status, error = (None, "") if ok else (200, f"not applied: {out}")
            except ApiError as exc:
                ok, status, error = False, exc.status, str(exc)[:200]
            except (TilekeeperError, requests.RequestException) as exc:
                ok, status, error = False, None, f"{type(exc).__name__}: {str(exc)[:160]}"
            end = time.time()
            self.record(Event("write", start, end, ok, status, error, change_id))
            if ok:
                state[tile] = following
                with self.lock:
                    self.acked.append(Acked(change_id, tile, end))
            else:
                state[tile] = None
            self.stop.wait(self.pace_s)


@dataclass
class Reads:
    requests: int
    failures: int
    failure_times: list[float]  # seconds (unix) in which failures were counted
    top_errors: list[str]


@contextmanager
def locust(cluster: Cluster, users: int, tiles_file: Path) -> Iterator[Callable[[], Reads]]:
    """locust with the drill readers for the duration of the block; the callable, called
    after it, returns the figures."""
    folder = Path(tempfile.mkdtemp(prefix="drill-locust-"))
    prefix = folder / "run"
    command = [
        str(Path(sys.executable).parent / "locust"), "-f", str(HERE / "drills_locust.py"),
        "--headless", "-u", str(users), "-r", str(max(1, users // 2)), "-t", "3600s",
        "--host", cluster.url.rstrip("/"), "--csv", str(prefix), "--csv-full-history",
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "3",
    ]  # fmt: skip
    env = {
        **os.environ,
        "LOAD_CAMPAIGN": LOAD_CAMPAIGN,
        "LOAD_TILES": str(tiles_file),
        "LOAD_USERS": "Reader,MapViewer,Dashboard",
        "LOAD_PACE": "people",
        "LOAD_CA": cluster.ca,
    }
    with open(folder / "stderr", "w") as stderr:  # the child keeps its own descriptor
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    figures: list[Reads] = []
    try:
        yield lambda: figures[0]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        figures.append(_locust_figures(prefix))
        shutil.rmtree(folder, ignore_errors=True)


def _locust_figures(prefix: Path) -> Reads:
    requests_n = failures = 0
    with suppress(OSError), open(f"{prefix}_stats.csv") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                requests_n, failures = int(row["Request Count"]), int(row["Failure Count"])
    times: list[float] = []
    with suppress(OSError), open(f"{prefix}_stats_history.csv") as f:
        last = 0
        for row in csv.DictReader(f):
            if row["Name"] != "Aggregated":
                continue
            total = int(row["Total Failure Count"])
            if total > last:
                times.append(float(row["Timestamp"]))
            last = total
    errors: list[str] = []
    with suppress(OSError), open(f"{prefix}_failures.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: -int(r["Occurrences"]))
        errors = [f"{r['Occurrences']}x {r['Name']}: {r['Error'][:90]}" for r in rows[:3]]
    return Reads(requests_n, failures, times, errors)


# -- figures ------------------------------------------------------------------------------


@dataclass
class Figures:
    drill: str
    reads: int = 0
    reads_failed: int = 0
    writes: int = 0
    writes_failed: int = 0
    lost: int = 0
    twice: int = 0
    applied_unacked: int = 0  # changes answered with an error that were applied anyway
    recover_s: float | None = None  # None: no request failed
    longest_write_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.twice == 0 and all(self.checks.values())


def history_counts(cluster: Cluster) -> dict[str, int]:
    rows = cluster.sql(
        "SELECT details->>'drill', count(*) FROM tilekeeper.job_history "
        "WHERE collection = %s AND details ? 'drill' GROUP BY 1",
        (LOAD_CAMPAIGN,),
    )
    return {str(change): int(n) for change, n in rows}


def summarise(
    name: str, load: Load, window: tuple[float, float], fault: float, reads: Reads
) -> Figures:
    """The drill's figures from what the load saw between ``window`` (unix times)."""
    start, end = window
    with load.lock:
        events = [e for e in load.events if start <= e.start < end]
        acked = [a for a in load.acked if start <= a.at < end]
    writes = [e for e in events if e.kind == "write"]
    out = Figures(name, reads.requests, reads.failures, len(writes))
    out.writes_failed = sum(not e.ok for e in writes)
    out.longest_write_s = max((e.end - e.start for e in writes), default=0.0)
    found = history_counts(load.cluster)
    out.lost = sum(found.get(a.change, 0) == 0 for a in acked)
    out.twice = sum(found.get(a.change, 0) > 1 for a in acked)
    out.applied_unacked = sum(found.get(e.change, 0) > 0 for e in writes if not e.ok)
    # Recovery: from the fault to the first success sent after the last failure.
    failed = [e.end for e in events if not e.ok and e.end >= fault]
    failed += [t for t in reads.failure_times if t >= fault]
    if failed:
        last = max(failed)
        after = [e.end for e in events if e.ok and e.start >= last]
        out.recover_s = (min(after) - fault) if after else float("inf")
    for e in writes:
        if not e.ok and found.get(e.change, 0):
            log(f"  [yellow]{name}: change {e.change} answered {e.status or 'nothing'} "
                f"({e.error[:100]}) but applied: unacknowledged, not lost[/yellow]")  # fmt: skip
    errors = sorted({f"{e.kind} {e.status or ''} {e.error[:80]}" for e in events if not e.ok})
    for line in errors[:4] + reads.top_errors:
        log(f"  [yellow]{name}: {line}[/yellow]")
    return out


# -- the drills ---------------------------------------------------------------------------


@dataclass
class Bench:
    cluster: Cluster
    load: Load
    args: argparse.Namespace
    tiles_file: Path
    http: HttpSession

    def drill(self, name: str, fault: Callable[[], dict[str, Any]]) -> Figures:
        """Runs ``fault`` under locust; it returns its own figures and "fault" (its time)."""
        log(f"[bold]drill {name}[/bold]: {self.args.baseline:.0f} s of load first")
        start = time.time()
        with locust(self.cluster, self.args.users, self.tiles_file) as reads:
            time.sleep(self.args.baseline)
            own = fault()
            time.sleep(2)
        end = time.time()
        # Writes in flight at the end are answered before the history is read.
        time.sleep(1)
        out = summarise(name, self.load, (start, end), float(own.pop("fault")), reads())
        out.notes = [str(note) for note in own.pop("notes", [])]
        out.checks = {str(k): bool(v) for k, v in own.pop("checks", {}).items()}
        out.checks["load ran"] = out.reads > 0 and out.writes > 0
        recover = "no failure" if out.recover_s is None else f"{out.recover_s:.1f} s"
        log(
            f"drill {name}: reads {out.reads_failed}/{out.reads} failed, writes "
            f"{out.writes_failed}/{out.writes} failed, lost {out.lost}, twice {out.twice}, "
            f"recovered: {recover}; {'; '.join(out.notes)}"
        )
        return out

    def wait_answering(self, timeout: float = 120) -> float:
        """Until a read and a write through the proxy succeed; returns when."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with suppress(TilekeeperError, requests.RequestException):
                self.http.get(f"campaigns/{LOAD_CAMPAIGN}/counts")
                return time.time()
            time.sleep(0.25)
        raise RuntimeError("the cluster does not answer")

    def observe(self, seconds: float) -> None:
        log(f"  observing for {seconds:.0f} s")
        time.sleep(seconds)

    # a. one API process killed -9 ------------------------------------------------------

    def api(self) -> dict[str, Any]:
        log("  kill -9 the process group of api-1")
        fault = time.time()
        self.cluster.kill_group("api-1")
        self.observe(self.args.observe)
        log("  cluster.sh start apis (api-1 again)")
        self.cluster.script("start", "apis")
        return {"fault": fault, "notes": ["api-1 killed -9, restarted after the window"]}

    # b. the primary restarted ------------------------------------------------------------

    def primary(self) -> dict[str, Any]:
        down = self.args.primary_down
        log(f"  the primary: pg_ctl stop -m fast, {down:.0f} s down, start" if down > 0
            else "  the primary: pg_ctl restart -m fast")  # fmt: skip
        pg_log = str(self.cluster.dir / "logs" / "pg-primary.log")
        logged = Path(pg_log).stat().st_size
        fault = time.time()
        if down > 0:
            self.cluster.pg_ctl("primary", "-m", "fast", "-w", "stop")
            time.sleep(down)
            self.cluster.pg_ctl("primary", "-w", "-t", "60", "-l", pg_log, "start")
        else:
            self.cluster.pg_ctl("primary", "-m", "fast", "-w", "-t", "60", "-l", pg_log, "restart")
        took = time.time() - fault
        log(f"  primary back after {took:.1f} s")
        self.observe(self.args.observe)
        with self.load.lock:
            seen = [e for e in self.load.events if e.start >= fault and not e.ok]
        answers = {
            str(status or "none"): sum(e.status == status for e in seen)
            for status in sorted({e.status for e in seen}, key=str)
        }
        failed_for = max((e.end for e in seen), default=fault) - fault
        # Commits the shutdown cut while they waited for the synchronous standby: durable
        # on the primary, yet their clients got an error (the API answers 503).
        with open(pg_log, errors="replace") as f:
            f.seek(logged)
            cut = f.read().count("already committed locally")
        return {
            "fault": fault,
            "notes": [
                f"down {took:.1f} s",
                f"failures seen until {failed_for:.1f} s after the stop, by status "
                + (", ".join(f"{k}: {v}" for k, v in answers.items()) or "none"),
                f"commits cut in the synchronous-standby wait {cut}",
            ],
        }

    # c. the replica stopped --------------------------------------------------------------

    def reader_calls(self) -> int:
        rows = self.cluster.sql(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s "
            "JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'tilekeeper_reader'",
            port_name="REPLICA_PORT",
        )
        return int(rows[0][0])

    def replica(self) -> dict[str, Any]:
        log(f"  pg_ctl stop of the replica, down for {self.args.replica_down:.0f} s")
        fault = time.time()
        self.cluster.pg_ctl("replica", "-m", "fast", "-w", "stop")
        time.sleep(self.args.replica_down)
        back = time.time()
        with self.load.lock:
            during = [e for e in self.load.events if fault <= e.start < back and e.kind == "probe"]
        served = sum(e.ok for e in during)
        log(f"  reads while it was down: {served}/{len(during)} answered 200; starting it")
        self.cluster.pg_ctl(
            "replica", "-w", "-t", "60", "-l",
            str(self.cluster.dir / "logs" / "pg-replica.log"), "start",
        )  # fmt: skip
        started = time.time()
        calls = self.reader_calls()
        returned: float | None = None
        deadline = time.monotonic() + max(self.args.observe, 40)
        while time.monotonic() < deadline:
            time.sleep(1)
            if self.reader_calls() > calls + 5:  # more than the probe of this check itself
                returned = time.time() - started
                break
        note = f"reads back on the replica {returned:.0f} s after its start" if returned else (
            "reads NOT back on the replica"
        )  # fmt: skip
        log(f"  {note}")
        return {
            "fault": fault,
            "notes": [f"reads 2xx while it was down {served}/{len(during)}", note],
            "checks": {"reads served": len(during) > 0 and served == len(during),
                       "back on replica": returned is not None},
        }  # fmt: skip

    # d. a runner "machine" lost -----------------------------------------------------------

    def small_campaign(self, campaign: str) -> list[str]:
        backends = [
            (name, f"http://127.0.0.1:{self.cluster.ports[port]}/openeo/1.2/")
            for name, port in (("alpha", "ALPHA_PORT"), ("beta", "BETA_PORT"))
        ]
        tiles = SMALL_AREA.tiles()
        definition = campaign_definition(campaign, SMALL_AREA, backends, parallel_jobs=2)
        definition["owners"] = [f"key:worker-w{n}" for n in range(1, WORKERS + 1)]
        campaigns = Campaigns(self.http)
        campaigns.create(definition)
        campaigns.register(campaign, tile_records(tiles))
        ids = [str(t) for t in tiles.ids]
        log(f"  campaign {campaign}: {len(ids)} tiles on alpha and beta")
        return ids

    def wait_workers(self, workers: list[int], timeout: float) -> dict[int, str | None]:
        deadline = time.monotonic() + timeout
        ended: dict[int, str | None] = {}
        while time.monotonic() < deadline:
            ended = {n: self.cluster.worker_ended(n) for n in workers}
            if all(line is not None for line in ended.values()):
                break
            time.sleep(1)
        return ended

    def products_check(self, campaign: str, tiles: list[str]) -> tuple[int, int, int]:
        """(tiles finished, products registered, products whose files are all in the bucket)."""
        jobs = Campaigns(self.http).jobs_by_tile(campaign, tiles)
        finished = sum(j["properties"]["status"] == "finished" for j in jobs)
        products_id = campaign_products_id(campaign)
        items = self.http.get(f"collections/{products_id}/items?limit=100")["features"]
        s3 = boto3.client(
            "s3", endpoint_url=self.cluster.s3_url, region_name="us-east-1",
            aws_access_key_id="tilekeeper", aws_secret_access_key=self.cluster.secret("s3"),
        )  # fmt: skip
        listed = s3.list_objects_v2(
            Bucket="tilekeeper-products", Prefix=f"products/{products_id}/", MaxKeys=1000
        )
        keys = {entry["Key"] for entry in listed.get("Contents", [])}
        prefix = f"{self.cluster.s3_url}/tilekeeper-products/"
        stored = sum(
            all(a["href"].removeprefix(prefix) in keys for a in item["assets"].values())
            for item in items
        )
        return finished, len(items), stored

    def held_by(self, campaign: str, worker: str) -> list[str]:
        rows = self.cluster.sql(
            "SELECT id FROM pgstac.items WHERE collection = %s "
            "AND content->'properties'->>'tilekeeper:worker' = %s "
            "AND content->'properties'->>'status' NOT IN "
            "('finished', 'error', 'canceled', 'skipped', 'start_failed')",
            (campaign, worker),
        )
        return [str(r[0]) for r in rows]

    def worker(self) -> dict[str, Any]:
        campaign = f"drill-workers-{uuid.uuid4().hex[:6]}"
        tiles = self.small_campaign(campaign)
        started = time.time()
        self.cluster.script("workers", campaign, "1")
        held: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not held:
            held = self.held_by(campaign, "w1")
            time.sleep(0.2)
        if not held:
            raise RuntimeError("worker w1 never held a tile")
        log(f"  kill -9 worker w1 (its process group) holding {len(held)} tile(s): {held}")
        fault = time.time()
        self.cluster.kill_group("worker-w1")
        takeover: float | None = None
        while time.monotonic() < deadline + 150 and takeover is None:
            rows = self.cluster.sql(
                "SELECT min(extract(epoch FROM at)) FROM tilekeeper.job_history "
                "WHERE collection = %s AND item_id = ANY(%s) "
                "AND actor NOT IN ('key:worker-w1', 'runner:w1') "
                "AND at > to_timestamp(%s)",
                (campaign, held, fault),
            )
            if rows[0][0] is not None:
                takeover = float(rows[0][0]) - fault
                log(f"  first of w1's tiles changed by another worker {takeover:.1f} s after")
            time.sleep(1)
        ended = self.wait_workers([2, 3], self.args.run_timeout)
        ran = time.time() - started
        finished, registered, stored = self.products_check(campaign, tiles)
        log(f"  w2, w3 ended ({ended}) after {ran:.0f} s; {finished}/{len(tiles)} finished, "
            f"{registered} products, {stored} with their files in the bucket")  # fmt: skip
        takeover_note = f"{takeover:.0f} s" if takeover is not None else "NEVER"
        return {
            "fault": fault,
            "notes": [
                f"w1 killed holding {len(held)} tile(s); taken over after {takeover_note} "
                "(lease 60 s)",
                f"{finished}/{len(tiles)} finished, {stored}/{len(tiles)} harvested in {ran:.0f} s",
            ],
            "checks": {
                "taken over": takeover is not None,
                "workers exited 0": all(line == "exited 0" for line in ended.values()),
                "all finished": finished == len(tiles),
                "all harvested": registered == stored == len(tiles),
            },
        }

    # e. the object store lost during harvest -----------------------------------------------

    def s3(self) -> dict[str, Any]:
        campaign = f"drill-s3-{uuid.uuid4().hex[:6]}"
        tiles = self.small_campaign(campaign)
        started = time.time()
        self.cluster.script("workers", campaign, "1")
        log("  kill -9 moto_server (the object store) before the first harvest")
        fault = time.time()
        self.cluster.kill_group("s3")
        first_finished: float | None = None
        while time.time() < fault + self.args.s3_down or first_finished is None:
            rows = self.cluster.sql(
                "SELECT min(extract(epoch FROM at)) FROM tilekeeper.job_history "
                "WHERE collection = %s AND to_status = 'finished'",
                (campaign,),
            )
            if rows[0][0] is not None and first_finished is None:
                first_finished = float(rows[0][0])
                log(f"  first tile finished {first_finished - fault:.1f} s after the kill")
            if time.time() > fault + 120:
                break
            time.sleep(0.5)
        # Down at least --s3-down, and 5 s past the first finished tile (a harvest failed).
        time.sleep(max(0.0, (first_finished or 0) + 5 - time.time()))
        down = time.time() - fault
        log(f"  cluster.sh start s3 (same port, bucket made again) after {down:.0f} s")
        self.cluster.script("start", "s3")
        ended = self.wait_workers(list(range(1, WORKERS + 1)), self.args.run_timeout)
        failed = len(self.http.get(f"campaigns/{campaign}/harvest", params={"state": "failed"})["tiles"])  # fmt: skip
        log(f"  workers ended ({ended}); harvests failed and not retried in the run: {failed}")
        rerun = 0.0
        if failed or self.http.get(f"campaigns/{campaign}/harvest")["tiles"]:
            log("  re-harvest: cluster.sh workers once more (they catch up failed harvests)")
            again = time.time()
            self.cluster.script("workers", campaign, "1")
            ended = self.wait_workers(list(range(1, WORKERS + 1)), self.args.run_timeout)
            rerun = time.time() - again
        finished, registered, stored = self.products_check(campaign, tiles)
        log(f"  {finished}/{len(tiles)} finished, {registered} products, {stored} with files "
            f"in the bucket, {time.time() - started:.0f} s in all")  # fmt: skip
        return {
            "fault": fault,
            "notes": [
                f"S3 down {down:.0f} s; {failed} harvest(s) failed in the run"
                + (f", caught up by a re-run in {rerun:.0f} s" if rerun else ""),
                f"{finished}/{len(tiles)} finished, {stored}/{len(tiles)} in the bucket",
            ],
            "checks": {
                "workers exited 0": all(line == "exited 0" for line in ended.values()),
                "all finished": finished == len(tiles),
                "all harvested": registered == stored == len(tiles),
            },
        }


# -- main ----------------------------------------------------------------------------------


def make_load_campaign(cluster: Cluster, n: int, aoi: str) -> Path:
    """``n`` tiles registered through the API, part-way through a run (bench/load_data.py,
    on a smaller area than its million tiles); returns a file of tile ids for locust."""
    import load_data  # bench/: the load bench's data

    os.environ["TILEKEEPER_API_KEY"] = cluster.secret("admin-key")
    load_data.BIG_AOI = aoi
    load_data.make_campaign(cluster.url, cluster.admin_dsn(), LOAD_CAMPAIGN, n)
    ids = [str(r[0]) for r in cluster.sql(
        "SELECT id FROM pgstac.items WHERE collection = %s ORDER BY random() LIMIT 2000",
        (LOAD_CAMPAIGN,),
    )]  # fmt: skip
    path = cluster.dir / "load-tiles.txt"
    path.write_text("\n".join(ids))
    return path


def writer_tiles(cluster: Cluster, k: int) -> list[str]:
    rows = cluster.sql(
        "SELECT id FROM pgstac.items WHERE collection = %s "
        "AND content->'properties'->>'status' = 'not_started' ORDER BY id LIMIT %s",
        (LOAD_CAMPAIGN, k),
    )
    return [str(r[0]) for r in rows]


def print_table(results: list[Figures]) -> None:
    table = Table(title="Fault drills under load (scripts/cluster.sh topology)", show_lines=True)
    for column in ("drill", "reads failed", "writes failed", "lost", "twice", "recovered in",
                   "longest write", "figures", "checks"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("drill", "figures") else "right")
    for r in results:
        recover = "no failure" if r.recover_s is None else f"{r.recover_s:.1f} s"
        failed = [name for name, good in r.checks.items() if not good]
        table.add_row(
            r.drill, f"{r.reads_failed}/{r.reads}", f"{r.writes_failed}/{r.writes}",
            str(r.lost), str(r.twice), recover, f"{r.longest_write_s:.1f} s",
            "; ".join(r.notes + ([f"{r.applied_unacked} unacknowledged change(s) applied"]
                                 if r.applied_unacked else [])),
            "ok" if r.ok else "FAILED: " + ", ".join(failed or ["lost/twice"]),
        )  # fmt: skip
    console.print(table)


def _interrupted(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drills", default=",".join(DRILLS), help="of " + ",".join(DRILLS))
    parser.add_argument("--tiles", type=int, default=3000, help="tiles of the load campaign")
    parser.add_argument("--aoi", default="0,40,20,56", help="where they are (lon/lat box)")
    parser.add_argument("--users", type=int, default=24, help="locust users")
    parser.add_argument("--writers", type=int, default=2, help="writer threads")
    parser.add_argument("--write-pace", type=float, default=0.2, help="s between writes")
    parser.add_argument("--baseline", type=float, default=8, help="s of load before a fault")
    parser.add_argument("--observe", type=float, default=25, help="s watched after a fault")
    parser.add_argument("--primary-down", type=float, default=5, help="0: pg_ctl restart")
    parser.add_argument("--replica-down", type=float, default=20)
    parser.add_argument("--s3-down", type=float, default=20)
    parser.add_argument("--run-timeout", type=float, default=240, help="s for a campaign run")
    parser.add_argument(
        "--proxy-next-upstream",
        help="try other proxy_next_upstream conditions (e.g. 'error timeout http_502 "
        "http_504'): the rendered nginx configuration is changed and reloaded after `up`",
    )
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    chosen = [d for d in DRILLS if d in args.drills.split(",")]

    folder = Path(tempfile.mkdtemp(prefix="tilekeeper-drills-", dir="/tmp"))
    folder.chmod(0o755)  # the postgres OS user must reach the data folders
    cluster = Cluster(folder)
    # SIGTERM (a CI's timeout) ends as Ctrl-C does: through `finally`, destroying the cluster.
    signal.signal(signal.SIGTERM, _interrupted)
    results: list[Figures] = []
    load: Load | None = None
    try:
        cluster.up()
        os.environ["REQUESTS_CA_BUNDLE"] = cluster.ca  # the Python client verifies the proxy
        if args.proxy_next_upstream:
            log(f"the proxy: proxy_next_upstream {args.proxy_next_upstream} (reloaded)")
            cluster.proxy_next_upstream(args.proxy_next_upstream)
        log(f"load campaign: {args.tiles:,} tiles through the API ...")
        tiles_file = make_load_campaign(cluster, args.tiles, args.aoi)
        load = Load(cluster, LOAD_CAMPAIGN, writer_tiles(cluster, 20 * args.writers),
                    args.writers, args.write_pace)  # fmt: skip
        load.start()
        http = HttpSession(cluster.url, api_key=cluster.secret("admin-key"))
        bench = Bench(cluster, load, args, tiles_file, http)
        for name in chosen:
            results.append(bench.drill(name, getattr(bench, name)))
            bench.wait_answering()
    finally:
        if load is not None:
            load.close()
        log("cluster.sh destroy ...")
        with suppress(Exception):
            cluster.script("destroy", timeout=180)
        shutil.rmtree(folder, ignore_errors=True)
        print_table(results)
    if args.json:
        args.json.write_text(
            json.dumps([{**asdict(r), "ok": r.ok} for r in results], indent=1, default=str)
        )
    log(f"done in {time.monotonic() - T0:.0f} s")
    return 0 if all(r.ok for r in results) and len(results) == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
