"""Ingest throughput against its physical floor.

Makes N realistic tiles (2000 x 2000 px, 4 bands, uint16, deflate COGs with overviews,
as a back-end delivers them), then measures in the same run:

- the floor: reading and hashing the same bytes (sha2-256 over every file), which no
  ingest can avoid;
- ours: `Ingester.ingest_all` of the files into a fresh collection (checks, description,
  preview, copy into the local product store, API calls per product), one at a time and
  as `tilekeeper ingest` runs them (INGEST_WORKERS at once), against the real API on a
  throwaway cluster;
- ours on plain (striped, non-COG) GeoTIFFs, which must be converted.

Prints products/s and ours as a share of the floor (target >= 60% for COG inputs).

    .venv/bin/python bench/ingest_speed.py [--tiles 32] [--size 2000]

(Not bench/ingest.py: run as a script, a file of that name would hide the `ingest`
package from every script in this folder.)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rich.console import Console
from rich.table import Table
from throwaway import throwaway_stack

from catalog_service.client.http import HttpSession
from ingest.engine import INGEST_WORKERS, Ingester
from ingest.rasters import FileDigest, make_cog
from ingest.sources import Product, Raster
from ingest.store import LocalStore

console = Console()


def make_tiles(folder: Path, n: int, size: int) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(0)
    cogs, plains = [], []
    for i in range(n):
        # Smooth fields plus noise: compresses like real reflectances, not like noise.
        yy, xx = np.mgrid[0:size, 0:size]
        base = (np.sin(xx / 97 + i) + np.cos(yy / 53)) * 1500 + 3000
        data = np.stack([base + rng.normal(0, 200, base.shape) * b for b in range(1, 5)])
        plain = folder / f"plain_{i}.tif"
        with rasterio.open(
            plain, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint16",
            crs="EPSG:32631", transform=from_origin(600_000 + i * size * 10, 5_660_000, 10, 10),
            nodata=0, compress="deflate",
        ) as dst:  # fmt: skip
            dst.write(np.clip(data, 1, 65535).astype("uint16"))
        cog = folder / f"cog_{i}.tif"
        make_cog(plain, cog)
        cogs.append(cog)
        plains.append(plain)
    return cogs, plains


def timed_ingest(
    http: HttpSession, store: LocalStore, collection: str, files: list[Path], workers: int
) -> float:
    ingester = Ingester(http, store, collection)
    work = [(Product(path.stem, [Raster(path, "data")], str(path)), None) for path in files]
    os.sync()  # the previous phase's writes are flushed now, not during this one
    start = time.perf_counter()
    outcomes = ingester.ingest_all(work, workers)
    seconds = time.perf_counter() - start
    for outcome in outcomes:
        if outcome.failed or outcome.result != "created":
            raise SystemExit(f"{outcome}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=32)
    parser.add_argument("--size", type=int, default=2000)
    args = parser.parse_args()
    with throwaway_stack() as stack:
        http = HttpSession(stack.url)
        base = stack.base
        tiles = base / "tiles"
        tiles.mkdir()
        with console.status("making tiles"):
            cogs, plains = make_tiles(tiles, args.tiles, args.size)
        megabytes = sum(p.stat().st_size for p in cogs) / 1e6
        os.sync()
        start = time.perf_counter()
        for path in cogs:
            FileDigest.of(path)
        floor = time.perf_counter() - start
        store = LocalStore(stack.products)
        serial = timed_ingest(http, store, "bench-cog-1", cogs, 1)
        ours_cog = timed_ingest(http, store, "bench-cog", cogs, INGEST_WORKERS)
        ours_plain = timed_ingest(http, store, "bench-plain", plains, INGEST_WORKERS)
        n = len(cogs)
        table = Table(
            title=f"Ingest of {n} tiles of {args.size}x{args.size} px x 4 bands "
            f"({megabytes / n:.1f} MB per COG)"
        )
        for column in ("", "seconds", "products/s", "MB/s", "share of the floor"):
            table.add_column(column, justify="right")
        for name, seconds in (
            ("floor: read + sha2-256", floor),
            ("ours, COG inputs, one at a time", serial),
            (f"ours, COG inputs, {INGEST_WORKERS} at once", ours_cog),
            (f"ours, plain GeoTIFF inputs (converted), {INGEST_WORKERS} at once", ours_plain),
        ):
            table.add_row(
                name, f"{seconds:.2f}", f"{n / seconds:.2f}", f"{megabytes / seconds:.0f}",
                f"{floor / seconds:.0%}",
            )  # fmt: skip
        console.print(table)
        console.print(f"COG inputs reach {floor / ours_cog:.0%} of the floor (target >= 60%)")


if __name__ == "__main__":
    main()
