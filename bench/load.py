"""tilekeeper loaded like a shared service, with locust, against its anchors.

On a campaign of N tiles (default 1,000,000, part-way through its run; bench/load_data.py):

1. reads alone (bench/locustfile.py ``Reader``: status search and its next page, items,
   item, collection search) with C clients against
   - stock stac-fastapi-pgstac on the same database (reader login, one process, its
     defaults), the anchor;
   - tilekeeper with 1 and with W API processes, and with W reading from a streaming
     replica of the database (pg_basebackup, on this machine);
   and the floor: the same rows, as GeoJSON features, read with plain SQL through the
   same indexes by 8 connections;
2. the whole mix at once against tilekeeper (W processes, C clients): readers, map viewers,
   dashboards and runner workers writing claims, launches and heartbeats; paced as people
   and programs use it (the latency a user sees) and unpaced (the most it serves).

Prints throughput and p50/p95/p99 per kind and the ratios (targets: campaign reads >= 5x
stock and within 3x of the SQL floor; p95 < 100 ms at 64 clients; workers never starved).

    .venv/bin/python bench/load.py [--tiles N] [--clients 64] [--seconds 30] [--workers 2]
                                   [--keep DIR]

``--keep DIR`` keeps the cluster and the campaign in DIR for the next run (registering a
million tiles takes minutes); the locust client runs as its own process on the same cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from load_data import has_campaign, make_campaign
from psycopg import connect
from rich.console import Console
from rich.table import Table

from catalog_service.api.server import ServerProcess, free_port
from catalog_service.client.http import HttpSession
from catalog_service.database import (
    ConnectionInfo,
    EmbeddedCluster,
    UpReport,
    bring_up,
    resolve_logins,
)
from catalog_service.database.cluster import max_connections
from catalog_service.settings import ApiSettings, DatabaseSettings

console = Console(width=150)
HERE = Path(__file__).parent
CAMPAIGN = "load-campaign"


@dataclass(frozen=True)
class Kind:
    """One request kind's figures from a locust run."""

    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float


def locust(
    url: str, users: str, clients: int, seconds: int, env: dict[str, str], pace: str = "closed"
) -> dict[str, Kind]:
    """Run bench/locustfile.py headless; figures per request name (and "Aggregated")."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "run"
        command = [
            str(Path(sys.executable).parent / "locust"), "-f", str(HERE / "locustfile.py"),
            # Users arrive over 4 s and the figures count from when all are there.
            "--headless", "-u", str(clients), "-r", str(max(1, clients // 4)), "-t", f"{seconds}s",
            "--reset-stats",
            "--host", url, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
            "--stop-timeout", "5",
        ]  # fmt: skip
        subprocess.run(
            command, env={**os.environ, **env, "LOAD_USERS": users, "LOAD_PACE": pace},
            check=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with open(f"{prefix}_stats.csv") as f:
            rows = list(csv.DictReader(f))
    return {
        row["Name"]: Kind(
            int(row["Request Count"]),
            int(row["Failure Count"]),
            float(row["Requests/s"]),
            float(row["50%"]),
            float(row["95%"]),
            float(row["99%"]),
        )
        for row in rows
    }


@contextmanager
def stock_api(report: UpReport) -> Iterator[str]:
    """Stock stac-fastapi-pgstac (its app factory, one uvicorn process) as the reader."""
    reader = report.logins.reader
    port = free_port()
    env = {
        **os.environ,
        "PGUSER": reader.user, "PGPASSWORD": reader.password, "PGHOST": reader.host,
        "PGPORT": str(reader.port), "PGDATABASE": reader.dbname,
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
         "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        HttpSession(url).wait_ready()
        yield url
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def our_api(
    database: DatabaseSettings, workers: int, read_from: ConnectionInfo | None = None
) -> Iterator[str]:
    """tilekeeper serve; with ``read_from``, its reads go there (a replica) and its
    writes to the primary, as an external database's settings say."""
    if read_from is not None:
        logins = resolve_logins(database)
        database = DatabaseSettings(dsn=logins.writer.dsn, read_dsn=read_from.dsn)
    server = ServerProcess(ApiSettings(port=free_port(), workers=workers), database).start()
    try:
        HttpSession(server.url).wait_ready()
        yield server.url
    finally:
        server.stop()


@contextmanager
def replica(base: Path, database: DatabaseSettings, report: UpReport) -> Iterator[ConnectionInfo]:
    """A streaming replica of the bench's cluster (pg_basebackup, hot standby) on this
    machine; the reader login on it."""
    primary = EmbeddedCluster(database)
    data = base / "replica"
    shutil.rmtree(data, ignore_errors=True)
    for sub in ("run", "log"):
        (data / sub).mkdir(parents=True)
    as_server = ["runuser", "-u", primary.server_user, "--"] if primary.server_user else []
    if primary.server_user:
        subprocess.run(["chown", "-R", primary.server_user, str(data)], check=True)
    port = free_port()
    console.print(f"making a streaming replica on port {port} ...")
    subprocess.run(
        [*as_server, str(primary.bin / "pg_basebackup"), "-D", str(data / "pgdata"), "-R",
         "-X", "stream", "-c", "fast", "-d", report.logins.admin.dsn],
        check=True,
    )  # fmt: skip
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data}/run"
        " -c hot_standby=on -c jit=off -c shared_buffers=1GB"
        # A standby needs at least its primary's connection slots.
        f" -c max_connections={max_connections()}"
    )
    pg_ctl = [*as_server, str(primary.bin / "pg_ctl"), "-D", str(data / "pgdata")]
    subprocess.run(
        [*pg_ctl, "-l", str(data / "log" / "postgres.log"), "-o", options, "-w", "start"],
        check=True,
    )
    try:
        yield replace(report.logins.reader, port=port)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(data, ignore_errors=True)


# The same rows as the API's answers, read with plain SQL through the same indexes, each
# as a GeoJSON feature (its stored content with id, collection and geometry put back).
_FEATURE = (
    "(content || jsonb_build_object('id', id, 'collection', collection,"
    " 'geometry', ST_AsGeoJSON(geometry, 20)::jsonb))::text"
)
_JOBS = "collection = %(c)s AND content->'properties' ? 'tilekeeper:order'"
FLOOR_SQL = {
    "read:search status": (
        f"SELECT {_FEATURE} FROM pgstac.items WHERE {_JOBS}"
        " AND content->'properties'->>'status' = 'finished'"
        " ORDER BY datetime DESC, id DESC LIMIT 100"
    ),
    "read:items page": (
        f"SELECT {_FEATURE} FROM pgstac.items WHERE {_JOBS} ORDER BY datetime DESC, id DESC LIMIT 100"
    ),
    "read:item": f"SELECT {_FEATURE} FROM pgstac.items WHERE {_JOBS} AND id = %(t)s",
}
# The locust Reader's mix (its task weights), so the floor reads the same rows.
FLOOR_MIX = ["read:search status"] * 4 + ["read:items page"] * 2 + ["read:item"] * 4


def floor(dsn: str, tiles: list[str], seconds: int, connections: int = 8) -> dict[str, Kind]:
    """The same rows by plain SQL, ``connections`` at once, for ``seconds``."""
    times: dict[str, list[float]] = {name: [] for name in FLOOR_SQL}
    stop = time.monotonic() + seconds

    def work() -> None:
        with connect(dsn) as conn:
            while time.monotonic() < stop:
                name = random.choice(FLOOR_MIX)
                start = time.perf_counter()
                conn.execute(FLOOR_SQL[name], {"c": CAMPAIGN, "t": random.choice(tiles)}).fetchall()
                times[name].append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=work) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = {name: _kind(values, seconds) for name, values in times.items()}
    out["Aggregated"] = _kind([v for values in times.values() for v in values], seconds)
    return out


# One status page of 100, as the API asks for it, by each way the database can answer.
_PAGE = {
    "collections": [CAMPAIGN],
    "filter": {"op": "=", "args": [{"property": "status"}, "finished"]},
    "filter-lang": "cql2-json",
    "limit": 100,
}
SQL_PATHS = {
    "pgstac search()": ("SELECT pgstac.search(%s::jsonb)::text", _PAGE),
    "pgstac search(), nohydrate": (
        "SELECT pgstac.search(%s::jsonb)::text",
        {**_PAGE, "conf": {"nohydrate": True}},
    ),
    "tilekeeper campaign_page()": (
        "SELECT tilekeeper_search.campaign_page(%s::jsonb)::text",
        _PAGE,
    ),
}


def sql_paths(dsn: str, repeats: int = 20) -> dict[str, float]:
    """Median ms of each way to the same page, on one connection (after one warm-up)."""
    out = {}
    with connect(dsn) as conn:
        conn.execute("SET search_path TO pgstac, public")
        for name, (query, search) in SQL_PATHS.items():
            body = json.dumps(search)
            conn.execute(query, (body,)).fetchone()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                conn.execute(query, (body,)).fetchone()
                times.append((time.perf_counter() - start) * 1000)
            out[name] = sorted(times)[len(times) // 2]
    return out


def _kind(values: list[float], seconds: int) -> Kind:
    ordered = sorted(values) or [float("nan")]

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return Kind(len(values), 0, len(values) / seconds, pct(0.5), pct(0.95), pct(0.99))


def table(title: str, runs: dict[str, dict[str, Kind]]) -> None:
    out = Table(title=title)
    out.add_column("run")
    out.add_column("kind")
    for column in ("requests", "failed", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        out.add_column(column, justify="right")
    for run, kinds in runs.items():
        for name, k in sorted(kinds.items(), key=lambda kv: kv[0] == "Aggregated"):
            out.add_row(
                run, name, f"{k.requests:,}", f"{k.failures:,}", f"{k.rps:,.1f}",
                f"{k.p50:.0f}", f"{k.p95:.0f}", f"{k.p99:.0f}",
            )  # fmt: skip
    console.print(out)


def ratio(runs: dict[str, dict[str, Kind]], a: str, b: str, kind: str = "Aggregated") -> str:
    x, y = runs.get(a, {}).get(kind), runs.get(b, {}).get(kind)
    return f"{x.rps / y.rps:.2f}x" if x and y and y.rps else "-"


@contextmanager
def cluster(keep: Path | None) -> Iterator[tuple[DatabaseSettings, UpReport]]:
    base = keep or Path(tempfile.mkdtemp(prefix="tilekeeper-load-", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # the server runs as another OS user when this runs as root
    port_file = base / "port"
    port = int(port_file.read_text()) if port_file.exists() else free_port()
    port_file.write_text(str(port))
    settings = DatabaseSettings(data_dir=base / "db", port=port, dsn=None, shared_buffers="2GB")
    try:
        report = bring_up(settings)
        assert report.admin_key is not None
        os.environ["TILEKEEPER_API_KEY"] = report.admin_key.read_text().strip()
        os.environ["TILEKEEPER_PRODUCTS_STORE"] = str(base / "products")
        yield settings, report
    finally:
        if keep is None:
            EmbeddedCluster(settings).destroy()
            shutil.rmtree(base, ignore_errors=True)


def sample_tiles(admin_dsn: str, path: Path, k: int = 20_000) -> list[str]:
    with connect(admin_dsn) as conn:
        rows = conn.execute(
            "SELECT id FROM pgstac.items WHERE collection = %s ORDER BY random() LIMIT %s",
            (CAMPAIGN, k),
        ).fetchall()
    tiles = [r[0] for r in rows]
    path.write_text("\n".join(tiles))
    return tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="API processes")
    parser.add_argument("--keep", type=Path, help="keep the cluster and campaign here")
    parser.add_argument("--only", default="sql,stock,ours1,oursW,replica,floor,mix")
    args = parser.parse_args()
    only = set(args.only.split(","))

    with cluster(args.keep) as (database, report):
        admin = report.logins.admin.dsn
        with our_api(database, 1) as url:
            if not has_campaign(admin, CAMPAIGN, args.tiles):
                make_campaign(url, admin, CAMPAIGN, args.tiles)
        tile_file = (args.keep or Path(tempfile.gettempdir())) / "load-tiles.txt"
        tiles = sample_tiles(admin, tile_file)
        env = {
            "LOAD_CAMPAIGN": CAMPAIGN, "LOAD_TILES": str(tile_file),
            "LOAD_KEY": os.environ["TILEKEEPER_API_KEY"],
        }  # fmt: skip
        if "sql" in only:
            for name, ms in sql_paths(report.logins.reader.dsn).items():
                console.print(f"a status page of 100 in SQL, {name}: {ms:.1f} ms (median of 20)")
        reads: dict[str, dict[str, Kind]] = {}
        run: Callable[[str, str], dict[str, Kind]]

        def run(url: str, users: str, pace: str = "closed") -> dict[str, Kind]:
            return locust(url, users, args.clients, args.seconds, env, pace)

        if "stock" in only:
            console.print("reads: stock stac-fastapi-pgstac ...")
            with stock_api(report) as url:
                reads["stock"] = run(url, "Reader")
        if "ours1" in only:
            console.print("reads: tilekeeper, 1 process ...")
            with our_api(database, 1) as url:
                reads["tilekeeper x1"] = run(url, "Reader")
        if "oursW" in only and args.workers > 1:
            console.print(f"reads: tilekeeper, {args.workers} processes ...")
            with our_api(database, args.workers) as url:
                reads[f"tilekeeper x{args.workers}"] = run(url, "Reader")
        if "replica" in only and args.workers > 1:
            console.print(f"reads: tilekeeper, {args.workers} processes, reads from a replica ...")
            with (
                replica(args.keep or database.data_dir.parent, database, report) as reader,
                our_api(database, args.workers, reader) as url,
            ):
                reads[f"tilekeeper x{args.workers} + replica"] = run(url, "Reader")
        if "floor" in only:
            console.print("reads: plain SQL ...")
            reads["SQL floor"] = floor(report.logins.reader.dsn, tiles, args.seconds)
        if reads:
            table(f"Reads, {args.clients} clients, {args.tiles:,} tiles", reads)
        for name in reads:
            if name.startswith("tilekeeper"):
                console.print(
                    f"{name}: {ratio(reads, name, 'stock')} stock's throughput, "
                    f"{ratio(reads, name, 'SQL floor')} the SQL floor's"
                )
        if "mix" in only:
            mixes: dict[str, dict[str, Kind]] = {}
            for pace in ("people", "closed"):
                console.print(f"the whole mix, paced as {pace}: tilekeeper x{args.workers} ...")
                with our_api(database, args.workers) as url:
                    mixes[pace] = run(url, "Reader,MapViewer,Dashboard,Worker", pace)
            table(f"The whole mix, {args.clients} clients, {args.tiles:,} tiles", mixes)


if __name__ == "__main__":
    main()
