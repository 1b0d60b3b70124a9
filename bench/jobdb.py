"""Job databases for MultiBackendJobManager, side by side.

Starts its own throwaway cluster, and the API as a process of its own (as deployed:
a server thread in the bench's process would share its GIL and its garbage collector
with the client side being measured). For each size (default 11,000 and 100,000
tiles; --million adds 1,000,000) it times, per job database:

- register: initialize_from_df of a GeoDataFrame of utm-10km tiles;
- count_by_status();
- get_by_status(["not_started"], max=200);
- persist of 1,000 changed rows (a launch wave: status, job id, back-end, start time);
- one MultiBackendJobManager poll loop's job-database calls, in the order run_jobs
  makes them with 1,000 active jobs: count(active), get(active), persist(active, 50
  changed), get(not_started, 200), get(active), 20 launch persists, count() for the log;
- (ours only) claims by 4 workers at once, each taking 50 free tiles under a lease, as
  several `tilekeeper campaign run --worker` processes do every round.

Databases: CsvJobDatabase (up to 100,000: it rewrites the whole file on every persist),
ParquetJobDatabase, the stock STACAPIJobDatabase (11,000 only:
its counting pages through every item) and CampaignJobDatabase. The pypgstac Loader's
rate on the same job items is measured in the same run as the anchor for registration.

    .venv/bin/python bench/jobdb.py [--sizes 11000,100000] [--million] [--no-stock]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from openeo.extra.job_management import CsvJobDatabase, ParquetJobDatabase
from openeo.extra.job_management.stac_job_db import STACAPIJobDatabase
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods
from rich.console import Console
from rich.table import Table
from throwaway import throwaway_stack

from catalog_service import CampaignJobDatabase
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.credentials import auth_for
from catalog_service.client.http import HttpSession
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.jobs.campaign import CampaignDefinition, job_item

console = Console()
ACTIVE = ["created", "queued", "queued_for_start", "running"]
# utm-10km over Europe, Africa and the Middle East: 1,071,568 tiles; sizes take the first N
# in id order.
BIG_AOI = "-25,-40,70,72"
WORKERS = 4


def frame(n: int) -> gpd.GeoDataFrame:
    tiles = tiles_for("utm-10km", load_aoi(BIG_AOI))
    if len(tiles) < n:
        raise SystemExit(f"only {len(tiles)} tiles in {BIG_AOI}")
    tiles = tiles.take(slice(0, n))  # type: ignore[arg-type]
    return gpd.GeoDataFrame(
        {"item_id": tiles.ids, "year": 2024}, geometry=list(tiles.footprints), crs=4326
    )


def ratio(x: float) -> str:
    return f"{x:,.0f}x" if x >= 10 else f"{x:.2g}x"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def launch_wave(df: pd.DataFrame, k: int) -> pd.DataFrame:
    wave = df.iloc[:k].copy()
    wave["status"] = "queued_for_start"
    wave["backend_name"] = "alpha"
    wave["id"] = [f"j-{uuid.uuid4().hex[:12]}" for _ in range(len(wave))]
    wave["start_time"] = "2026-11-21T10:00:00Z"
    return wave


def poll_loop(db: Any) -> None:
    db.count_by_status(statuses=["not_started", *ACTIVE])
    active = db.get_by_status(statuses=ACTIVE).copy()
    changed = active.index[:50]
    active.loc[changed, "status"] = "running"
    active.loc[changed, "running_start_time"] = "2026-11-21T10:05:00Z"
    db.persist(active)
    not_started = db.get_by_status(statuses=["not_started"], max=200).copy()
    db.get_by_status(statuses=ACTIVE)
    for i in not_started.index[:20]:
        not_started.loc[i, "status"] = "queued_for_start"
        not_started.loc[i, "id"] = f"j-{uuid.uuid4().hex[:12]}"
        not_started.loc[i, "backend_name"] = "beta"
        db.persist(not_started.loc[i : i + 1])
    db.count_by_status()


FAILED = float("nan")


def claims(url: str, campaign_id: str) -> None:
    """4 workers claim 50 free tiles each at the same moment; every tile goes to one."""
    campaigns = Campaigns(HttpSession(url))
    with ThreadPoolExecutor(WORKERS) as pool:
        batches = list(
            pool.map(
                lambda w: campaigns.claim(campaign_id, f"bench-{w}", ["not_started"], 50, 60),
                range(WORKERS),
            )
        )
    taken = [job["tile"] for batch in batches for job in batch]
    if len(taken) != len(set(taken)) or len(taken) != 50 * WORKERS:
        raise RuntimeError(f"{len(taken)} claims, {len(set(taken))} distinct tiles")


def measure(
    name: str,
    make: Callable[[], Any],
    gdf: gpd.GeoDataFrame,
    extra: Callable[[Any], dict[str, Callable[[], Any]]] | None = None,
) -> dict[str, float]:
    """Time each operation; one that raises is reported as failed (the stock database
    crashes on NaN, upstream defect N2) and the rest still run."""
    db = make()

    def attempt(op: str, fn: Callable[[], Any]) -> None:
        try:
            figures[op] = timed(fn)
        except Exception as exc:
            figures[op] = FAILED
            console.print(f"  {name}: {op} failed: {type(exc).__name__}: {str(exc)[:120]}")

    figures: dict[str, float] = {}
    attempt("register", lambda: db.initialize_from_df(gdf))
    attempt("count_by_status", db.count_by_status)
    attempt("get_by_status(200)", lambda: db.get_by_status(["not_started"], max=200))
    wave = launch_wave(db.get_by_status(["not_started"], max=1000), 1000)
    attempt("persist 1,000", lambda: db.persist(wave))
    attempt("poll loop", lambda: poll_loop(db))
    for op, fn in (extra(db) if extra else {}).items():
        attempt(op, fn)
    console.print(f"  {name}: " + ", ".join(f"{k} {v:.3f}s" for k, v in figures.items()))
    return figures


def loader_rate(url: str, writer_dsn: str, gdf: gpd.GeoDataFrame) -> float:
    """Items/s of pypgstac's Loader on the very items CampaignJobDatabase registers."""
    campaign = f"loader-{uuid.uuid4().hex[:8]}"
    Campaigns(HttpSession(url)).create({"id": campaign})
    definition = CampaignDefinition(id=campaign)
    items = [
        job_item(definition, t["id"], t["geometry"], t["bbox"], {"year": 2024}, n)
        for n, t in enumerate(_records(gdf))
    ]
    db = PgstacDB(dsn=writer_dsn)
    try:
        seconds = timed(lambda: Loader(db).load_items(iter(items), insert_mode=Methods.ignore))
    finally:
        db.close()
    return len(items) / seconds


def _records(gdf: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    out = []
    for tile_id, geom in zip(gdf["item_id"], gdf.geometry, strict=True):
        mapped = geom.__geo_interface__
        out.append({"id": tile_id, "geometry": mapped, "bbox": list(geom.bounds)})
    return out


def run(url: str, writer_dsn: str, sizes: list[int], stock: bool, work: Path) -> None:
    for n in sizes:
        gdf = frame(n)
        console.rule(f"{n:,} tiles")
        rate = loader_rate(url, writer_dsn, gdf)
        console.print(f"  pypgstac Loader: {rate:,.0f} items/s")
        results: dict[str, dict[str, float]] = {}
        csv_path, parquet_path = work / f"jobs-{n}.csv", work / f"jobs-{n}.parquet"
        if n <= 100_000:
            results["CsvJobDatabase"] = measure("csv", lambda p=csv_path: CsvJobDatabase(p), gdf)
        results["ParquetJobDatabase"] = measure(
            "parquet", lambda p=parquet_path: ParquetJobDatabase(p), gdf
        )
        if stock and n <= 11_000:
            results["STACAPIJobDatabase (stock)"] = measure(
                "stock",
                lambda: STACAPIJobDatabase(
                    f"stock-{uuid.uuid4().hex[:8]}", url, auth=auth_for(url)
                ),
                gdf,
            )
        results["CampaignJobDatabase"] = measure(
            "ours",
            lambda: CampaignJobDatabase(f"ours-{uuid.uuid4().hex[:8]}", url),
            gdf,
            extra=lambda db: {f"claims x{WORKERS}": lambda: claims(url, db.collection_id)},
        )
        ours = results["CampaignJobDatabase"]
        table = Table(title=f"Job databases at {n:,} tiles (seconds; x = time / ours)")
        table.add_column("database")
        for op in ours:
            table.add_column(op, justify="right")
        for name, figures in results.items():
            cells = [
                "-"
                if op not in figures
                else "failed"
                if figures[op] != figures[op]
                else f"{figures[op]:.3f}"
                + ("" if name == "CampaignJobDatabase" else f" ({ratio(figures[op] / ours[op])})")
                for op in ours
            ]
            table.add_row(name, *cells)
        console.print(table)
        ours_rate = n / ours["register"]
        console.print(
            f"registration: ours {ours_rate:,.0f} tiles/s = {ours_rate / rate:.0%} of the Loader's "
            f"{rate:,.0f} items/s (target >= 80%); persist 1,000 rows: "
            f"{ours['persist 1,000'] * 1000:.0f} ms (target <= 200 ms)"
        )
        if "STACAPIJobDatabase (stock)" in results:
            stock_count = results["STACAPIJobDatabase (stock)"]["count_by_status"]
            console.print(
                f"count_by_status: stock {stock_count:.2f}s vs ours {ours['count_by_status'] * 1000:.1f} ms"
                f" = {stock_count / ours['count_by_status']:,.0f}x (target >= 500x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="11000,100000")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 tiles")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock STAC database")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])

    with throwaway_stack(shared_buffers="1GB") as stack:
        run(stack.url, stack.report.logins.writer.dsn, sizes, not args.no_stock, stack.base)


if __name__ == "__main__":
    main()
