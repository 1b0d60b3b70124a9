"""Aggregation latency at scale, against the naive way of counting statuses.

Starts its own throwaway cluster and API, loads N generated tile items (default 100,000)
with the pypgstac Loader, then times over real HTTP:

- POST /collections/{id}/aggregate status_frequency, without and with a CQL2 filter;
- the same counts by paging /search with pystac-client and counting client-side
  (what openEO's STACAPIJobDatabase.count_by_status does), at page size 1000, the
  kindest setting for the naive client (its default page size is 10x slower still);

and checks every answer against SQL. Prints a table with ratios.

    .venv/bin/python bench/aggregate.py [--items 100000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods
from pystac_client import Client
from rich.console import Console
from rich.table import Table

from catalog_service.api.server import ServerThread, free_port
from catalog_service.database import EmbeddedCluster, bring_up
from catalog_service.settings import ApiSettings, DatabaseSettings

STATUSES = ["finished"] * 14 + ["queued"] * 3 + ["running"] * 2 + ["error"]
BACKENDS = ["vito", "cdse", "eodc"]
COLLECTION = "bench-agg"
console = Console()


def generate(n: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(7)
    for k in range(n):
        lon, lat = -10 + (k % 400) * 0.1, 35 + (k // 400) * 0.1
        ring = [[lon, lat], [lon + 0.1, lat], [lon + 0.1, lat + 0.1], [lon, lat + 0.1], [lon, lat]]
        yield {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": f"tile-{k:07d}",
            "collection": COLLECTION,
            "bbox": [lon, lat, lon + 0.1, lat + 0.1],
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "datetime": "2025-01-01T00:00:00Z",
                "status": rng.choice(STATUSES),
                "backend_name": rng.choice(BACKENDS),
                "grid:code": f"BENCH-{k}",
            },
            "links": [],
            "assets": {},
        }


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="tilekeeper-bench-", dir="/tmp"))
    base.chmod(0o755)
    settings = DatabaseSettings(data_dir=base / "db", port=free_port(), dsn=None)
    report = bring_up(settings)
    server = ServerThread(ApiSettings(port=free_port()), logins=report.logins).start()
    try:
        run(server.url, report.logins.admin.dsn, args.items, args.repeats)
    finally:
        server.stop()
        EmbeddedCluster(settings).destroy()
        shutil.rmtree(base, ignore_errors=True)


def run(url: str, admin_dsn: str, n: int, repeats: int) -> None:
    http = httpx.Client(base_url=url, timeout=600)
    for _ in range(100):
        if http.get("/_mgmt/health").status_code == 200:
            break
        time.sleep(0.2)
    collection = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": COLLECTION,
        "description": "benchmark",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2025-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }
    http.post("/collections", json=collection).raise_for_status()

    db = PgstacDB(dsn=admin_dsn)
    start = time.perf_counter()
    with console.status(f"Loading {n:,} items with the pypgstac Loader"):
        Loader(db).load_items(generate(n), insert_mode=Methods.insert)
    load_s = time.perf_counter() - start
    db.close()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE pgstac.items")
    console.print(f"Loaded {n:,} items in {load_s:.1f} s ({n / load_s:,.0f} items/s)")

    with psycopg.connect(admin_dsn) as conn:
        sql_all = dict(
            conn.execute(
                "SELECT content->'properties'->>'status', count(*) FROM pgstac.items "
                "WHERE collection = %s GROUP BY 1",
                [COLLECTION],
            ).fetchall()
        )
        sql_vito = dict(
            conn.execute(
                "SELECT content->'properties'->>'status', count(*) FROM pgstac.items "
                "WHERE collection = %s AND content->'properties'->>'backend_name' = 'vito' "
                "GROUP BY 1",
                [COLLECTION],
            ).fetchall()
        )

    cql = {"op": "=", "args": [{"property": "backend_name"}, "vito"]}

    def aggregate(flt: dict[str, Any] | None) -> dict[str, int]:
        body: dict[str, Any] = {"aggregations": ["status_frequency"]}
        if flt:
            body |= {"filter": flt, "filter-lang": "cql2-json"}
        r = http.post(f"/collections/{COLLECTION}/aggregate", json=body)
        r.raise_for_status()
        return {b["key"]: b["frequency"] for b in r.json()["aggregations"][0]["buckets"]}

    def naive(flt: dict[str, Any] | None) -> dict[str, int]:
        search = Client.open(url).search(
            collections=[COLLECTION], filter=flt, limit=1000, max_items=None, method="GET"
        )
        return dict(Counter(item["properties"]["status"] for item in search.items_as_dicts()))

    rows = []
    for label, flt, truth in (
        ("no filter", None, sql_all),
        ("backend_name = 'vito'", cql, sql_vito),
    ):
        agg_s, agg_result = timed(lambda flt=flt: aggregate(flt), repeats)
        assert agg_result == truth, (agg_result, truth)
        with console.status(f"Paging /search ({label})"):
            naive_s, naive_result = timed(lambda flt=flt: naive(flt), 1)
        assert naive_result == truth
        rows.append((label, sum(truth.values()), agg_s, naive_s))

    table = Table(title=f"status counts over {n:,} items (median of {repeats}; naive: 1 run)")
    for col in ("query", "items counted", "aggregate", "paging /search (limit 1000)", "speed-up"):
        table.add_column(col, justify="right")
    for label, count, agg_s, naive_s in rows:
        table.add_row(
            label,
            f"{count:,}",
            f"{agg_s * 1000:.1f} ms",
            f"{naive_s:.1f} s",
            f"{naive_s / agg_s:,.0f}x",
        )
    console.print(table)
    console.print("Both answers equal the SQL GROUP BY count.")


if __name__ == "__main__":
    main()
