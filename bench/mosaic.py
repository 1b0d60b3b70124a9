"""The products' mosaic at EU27 scale: tile latency of the raster service per zoom.

On a throwaway cluster (bench/throwaway.py) it creates a campaign on eea-20km over the
EU27 (as `tilekeeper campaign create --aoi eu27 --grid eea-20km` does) and makes N
synthetic products (default 11,000): one single-band float32 COG per 20 km cell, the N
cells nearest the grid's centre, 128 x 128 px at 156.25 m of a smooth field continuous
across cells, nodata set, written with GDAL's COG driver (deflate, internal overviews)
by this one process, then ingested with the ingest engine into the campaign's product
collection (the same items, files and job links `tilekeeper ingest --campaign` writes;
the stack's local product store).

The campaign overview is made as deployed: the registering API takes the products in
as they land; once it has them all, the bench runs `tilekeeper campaign overview`. Then, for
two API processes started fresh on the same database one after the other:

- the anchor: titiler-pgstac's default behaviour (``TILEKEEPER_RASTER_OVERVIEWS=false``);
- ours: tilekeeper as configured by default;

it requests the collection's XYZ tiles (its ``xyz`` link: the default render) over HTTP,
one at a time on one connection, N tiles per zoom picked at random points of the
products (fewer where a zoom has fewer tiles over them): every tile cold (its first
request in that process; a zoom's cold pass stops once ``--zoom-budget`` seconds are
spent), then the same tiles warm. A 204 (no products there) counts as answered; other
answers and timeouts as failed. For each answer it records how much of the tile is
drawn against how much the products cover (a tile drawn at under 90% of it is
"incomplete": titiler-pgstac stops at items_limit products per tile, 100 by default),
how many products lie under it, and how many assets drew it (the X-Assets header).

    .venv/bin/python bench/mosaic.py [--products 11000] [--zooms 3-12] [--tiles 30]
        [--zoom-budget 60] [--ingest-workers 2] [--seed 7] [--timeout 60] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import morecantile
import numpy as np
import psycopg
import rasterio
import shapely
from pyproj import Transformer
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rich.console import Console
from rich.table import Table
from throwaway import Stack, throwaway_stack

from catalog_service.api.server import ServerProcess, free_port
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.grids import TileSet, fit_area, tiles_for
from catalog_service.ids import campaign_products_id
from catalog_service.settings import ApiSettings, DatabaseSettings, ProductSettings
from ingest.engine import Ingester, Outcome
from ingest.sources import Product, Raster
from ingest.store import open_store

# Wide enough for the tables when the output goes to a file.
console = Console(width=None if sys.stdout.isatty() else 160)
ROOT = Path(__file__).resolve().parent.parent
GRID = "eea-20km"
AOI = "eu27"
CELL_M = 20_000.0
PIXELS = 128
PIXEL_M = CELL_M / PIXELS  # 156.25 m
NODATA = -9999.0
# ETRS89-LAEA's natural origin (10E, 52N) in EPSG:3035: products are the cells nearest it.
CENTRE = (4_321_000.0, 3_210_000.0)
OVERVIEWS_ENV = "TILEKEEPER_RASTER_OVERVIEWS"
INCOMPLETE = 0.9  # drawn / covered below this: an incomplete tile
TARGET_MS = 300.0  # ours, warm p95, at every zoom
TMS = morecantile.tms.get("WebMercatorQuad")
TO_LONLAT = Transformer.from_crs(3035, 4326, always_xy=True)
TO_MERCATOR = Transformer.from_crs(4326, 3857, always_xy=True)


def log(message: str) -> None:
    console.log(message)


# -- the products ---------------------------------------------------------------------


def campaign_tiles(products: int) -> tuple[TileSet, TileSet, dict[str, Any]]:
    """The campaign's tiles (EU27 on eea-20km), the ``products`` cells nearest the
    grid's centre (sorted by id), and the AOI as GeoJSON."""
    fitted = fit_area(GRID, AOI)
    tiles = tiles_for(GRID, fitted.geometry)
    if products > len(tiles):
        raise SystemExit(f"--products: the campaign has {len(tiles):,} tiles, at most that many")
    centres = (tiles.native_bbox[:, :2] + tiles.native_bbox[:, 2:]) / 2
    distance = np.hypot(centres[:, 0] - CENTRE[0], centres[:, 1] - CENTRE[1])
    nearest = np.sort(np.argsort(distance, kind="stable")[:products])
    return tiles, tiles.take(nearest), fitted.geometry.__geo_interface__


def field_values(minx: float, miny: float) -> np.ndarray:
    """A smooth field in 0..1 (an NDVI-like layer), continuous across cells."""
    offsets = (np.arange(PIXELS) + 0.5) * PIXEL_M
    x = minx + offsets[np.newaxis, :]
    y = miny + CELL_M - offsets[:, np.newaxis]
    values = (
        0.5
        + 0.3 * np.sin(x / 150_000.0) * np.cos(y / 230_000.0)
        + 0.15 * np.sin((x + y) / 61_000.0)
        + 0.05 * np.cos((x - 2 * y) / 17_000.0)
    )
    result: np.ndarray = values.astype("float32")
    return result


def write_cog(path: Path, minx: float, miny: float) -> None:
    profile = {
        "driver": "COG",
        "width": PIXELS,
        "height": PIXELS,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:3035",
        "transform": from_origin(minx, miny + CELL_M, PIXEL_M, PIXEL_M),
        "nodata": NODATA,
        "compress": "DEFLATE",
        "predictor": 3,
        "blocksize": 64,
        "overview_count": 3,  # 64, 32 and 16 px
        "overview_resampling": "average",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(field_values(minx, miny), 1)


def generate(tiles: TileSet, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (tile_id, bbox) in enumerate(zip(tiles.ids.tolist(), tiles.native_bbox.tolist(), strict=True)):  # fmt: skip
        path = folder / f"{tile_id}.tif"
        write_cog(path, bbox[0], bbox[1])
        paths.append(path)
        if (n + 1) % 1000 == 0 or n + 1 == len(tiles):
            log(f"COGs written: {n + 1:,}/{len(tiles):,}")
    return paths


def ingest(
    http: HttpSession, campaign: str, tiles: TileSet, paths: list[Path], workers: int
) -> list[Outcome]:
    """The products through the ingest engine, as `tilekeeper ingest --campaign` sends
    them (each with its tile, footprint, CRS, grid code and job)."""
    ingester = Ingester(
        http, open_store(ProductSettings()), campaign_products_id(campaign), campaign=campaign
    )
    work: list[tuple[Product, tuple[str, str] | None]] = []
    for tile_id, code, (geometry, _bbox), path in zip(
        tiles.ids.tolist(), tiles.codes.tolist(), tiles.geometries(), paths, strict=True
    ):
        product = Product(
            tile_id,
            [Raster(path, "data")],
            f"synthetic {path.name}",
            tile=tile_id,
            grid_code=code,
            job_item=f"collections/{campaign}/items/{tile_id}",
            tile_geometry=geometry,
            expected_crs="EPSG:3035",
        )
        work.append((product, (campaign, tile_id)))
    done = 0

    def progress(_outcome: Outcome) -> None:
        nonlocal done
        done += 1
        if done % 1000 == 0 or done == len(work):
            log(f"products registered: {done:,}/{len(work):,}")

    return ingester.ingest_all(work, workers, progress)


# -- the campaign overview ------------------------------------------------------------


def wait_overview(admin_dsn: str, collection: str, since: float) -> float:
    """Until the registering API has taken every product into the collection's overview
    (it does so as products land, every TILEKEEPER_RASTER_OVERVIEW_INTERVAL_S); seconds
    from ``since`` (the ingest's end)."""
    last = 0.0
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while True:
            pending = conn.execute(
                "SELECT count(*) FROM tilekeeper.overview_pending WHERE collection = %s",
                [collection],
            ).fetchone()
            taken = conn.execute(
                "SELECT products FROM tilekeeper.raster_overviews WHERE collection = %s",
                [collection],
            ).fetchone()
            left = int(pending[0]) if pending else 0
            if left == 0:
                return time.perf_counter() - since
            if time.perf_counter() - last > 30:
                last = time.perf_counter()
                log(f"overview: {int(taken[0]) if taken else 0:,} products taken in by the API, {left:,} to go")  # fmt: skip
            time.sleep(2)


def build_overview(
    stack: Stack, database: DatabaseSettings, campaign: str, ingested: float
) -> dict[str, Any]:
    """The campaign overview as deployed: the registering API takes the products in as
    they land; once it has them all, `tilekeeper campaign overview` (which takes in
    anything left and says what the overview holds)."""
    collection = campaign_products_id(campaign)
    caught_up = wait_overview(stack.report.logins.admin.dsn, collection, ingested)
    log(f"overview: the API had every product {caught_up:.1f} s after the ingest ended")
    env = ServerProcess(ApiSettings(), database).environment()
    env["TILEKEEPER_API_URL"] = stack.url
    command = [sys.executable, "-m", "catalog_service", "campaign", "overview", campaign]
    log(f"tilekeeper campaign overview {campaign}")
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    output = (done.stdout + done.stderr).strip()
    for line in output.splitlines()[-4:]:
        console.print(f"  | {line}", markup=False, highlight=False)
    if done.returncode != 0:
        log(f"[red]campaign overview failed (exit {done.returncode}) after {seconds:.1f} s[/]")
    else:
        log(f"tilekeeper campaign overview: {seconds:.1f} s")
    return {"built": done.returncode == 0, "seconds": seconds, "exit": done.returncode,
            "caught_up_s": caught_up, "output": output[-4000:]}  # fmt: skip


# -- the tiles ------------------------------------------------------------------------


@dataclass
class Coverage:
    """The products' footprints in web mercator, to say what lies under a tile."""

    footprints: np.ndarray
    tree: shapely.STRtree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = shapely.STRtree(self.footprints)

    @classmethod
    def of(cls, tiles: TileSet) -> Coverage:
        return cls(shapely.transform(tiles.footprints, _to_mercator))

    def under(self, tile: morecantile.Tile) -> tuple[int, float]:
        """Products under the tile, and the fraction of it they cover."""
        bounds = TMS.xy_bounds(tile)
        box = shapely.box(*bounds)
        hits = self.tree.query(box, predicate="intersects")
        covered = 0.0
        if len(hits):
            covered = float(np.sum(shapely.area(shapely.intersection(self.footprints[hits], box))))
        return len(hits), covered / box.area


def _to_mercator(coords: np.ndarray) -> np.ndarray:
    x, y = TO_MERCATOR.transform(coords[:, 0], coords[:, 1])
    return np.column_stack([x, y])


def pick_tiles(
    tiles: TileSet, zoom: int, n: int, rng: np.random.Generator
) -> list[morecantile.Tile]:
    """Up to ``n`` distinct tiles of ``zoom`` at random points of random products."""
    chosen: dict[tuple[int, int], morecantile.Tile] = {}
    for _ in range(200 * n):
        if len(chosen) >= n:
            break
        cell = tiles.native_bbox[rng.integers(len(tiles))]
        x = cell[0] + rng.random() * (cell[2] - cell[0])
        y = cell[1] + rng.random() * (cell[3] - cell[1])
        lon, lat = TO_LONLAT.transform(x, y)
        tile = TMS.tile(lon, lat, zoom)
        chosen.setdefault((tile.x, tile.y), tile)
    return list(chosen.values())


def drawn_fraction(png: bytes) -> float:
    """The fraction of a tile's pixels that are not transparent."""
    with MemoryFile(png) as memory, memory.open() as src:
        # RGBA or grey + alpha: the alpha band; otherwise GDAL's mask.
        alpha = src.read(src.count) if src.count in (2, 4) else src.dataset_mask()
        return float(np.count_nonzero(alpha)) / float(alpha.size)


@dataclass
class Answer:
    tile: tuple[int, int, int]
    ms: float
    status: int | None  # None: no answer (timeout, connection)
    drawn: float | None = None
    covered: float = 0.0
    products: int = 0
    x_assets: int | None = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.status in (200, 204)

    @property
    def incomplete(self) -> bool:
        return (
            self.status == 200
            and self.drawn is not None
            and self.covered > 0.01
            and self.drawn < INCOMPLETE * self.covered
        )


def fetch(
    client: httpx.Client, url: str, tile: morecantile.Tile, under: tuple[int, float]
) -> Answer:
    key = (tile.z, tile.x, tile.y)
    start = time.perf_counter()
    try:
        response = client.get(url.format(z=tile.z, x=tile.x, y=tile.y))
        body = response.content
    except httpx.HTTPError as exc:
        ms = (time.perf_counter() - start) * 1000
        return Answer(key, ms, None, error=f"{type(exc).__name__}: {exc}"[:300])
    ms = (time.perf_counter() - start) * 1000
    answer = Answer(key, ms, response.status_code, products=under[0], covered=under[1])
    if response.status_code == 200:
        answer.drawn = drawn_fraction(body)
    elif response.status_code == 204:
        answer.drawn = 0.0
    else:
        answer.error = body[:300].decode("utf-8", "replace")
    if "x-assets" in response.headers:
        answer.x_assets = len([a for a in response.headers["x-assets"].split(",") if a])
    return answer


def measure(
    label: str,
    database: DatabaseSettings,
    template: str,
    tilejson: str,
    picked: dict[int, list[tuple[morecantile.Tile, tuple[int, float]]]],
    timeout_s: float,
    budget_s: float,
    anchor: bool,
) -> dict[str, Any]:
    """A fresh API process: zoom by zoom, the picked tiles cold (until ``budget_s`` is
    spent on the zoom), then the same tiles warm."""
    if anchor:
        os.environ[OVERVIEWS_ENV] = "false"
    else:
        os.environ.pop(OVERVIEWS_ENV, None)
    try:
        server = ServerProcess(ApiSettings(port=free_port()), database).start()
    finally:
        os.environ.pop(OVERVIEWS_ENV, None)
    result: dict[str, Any] = {"zooms": {}}
    try:
        HttpSession(server.url).wait_ready()
        log(f"{label}: API process on {server.url}" + (f" ({OVERVIEWS_ENV}=false)" if anchor else ""))  # fmt: skip
        with httpx.Client(timeout=timeout_s) as client:
            # The process's first raster request opens its raster pool and registers the
            # collection's search: timed apart from the tiles.
            start = time.perf_counter()
            first = client.get(server.url + tilejson)
            result["first_request_ms"] = (time.perf_counter() - start) * 1000
            result["first_request_status"] = first.status_code
            url = server.url + template
            for zoom, tiles in picked.items():
                cold: list[Answer] = []
                start = time.perf_counter()
                for tile, under in tiles:
                    if cold and time.perf_counter() - start > budget_s:
                        log(f"[yellow]{label}: z{zoom}: {budget_s:.0f} s spent after {len(cold)} of {len(tiles)} tiles; the rest skipped[/]")  # fmt: skip
                        break
                    cold.append(fetch(client, url, tile, under))
                warm = [fetch(client, url, tile, under) for tile, under in tiles[: len(cold)]]
                result["zooms"][zoom] = {"cold": cold, "warm": warm}
                log(f"{label}: z{zoom} {len(cold)} tiles: {summary(cold)} cold, {summary(warm)} warm")  # fmt: skip
    finally:
        server.stop()
    return result


# -- figures --------------------------------------------------------------------------


def percentile(answers: list[Answer], q: float) -> float:
    values = [a.ms for a in answers if a.answered]
    return float(np.percentile(values, q)) if values else float("nan")


def summary(answers: list[Answer]) -> str:
    failed = sum(not a.answered for a in answers)
    text = f"p50 {percentile(answers, 50):.0f} / p95 {percentile(answers, 95):.0f} ms"
    return text + (f" ({failed} failed)" if failed else "")


def ms(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def pair(answers: list[Answer]) -> str:
    return f"{ms(percentile(answers, 50))} / {ms(percentile(answers, 95))}"


def answers_text(answers: list[Answer]) -> str:
    """failed / 204 / incomplete, over cold and warm."""
    failed = sum(not a.answered for a in answers)
    empty = sum(a.status == 204 for a in answers)
    incomplete = sum(a.incomplete for a in answers)
    return f"{failed} / {empty} / {incomplete}"


def drawn_text(answers: list[Answer]) -> str:
    """Drawn over covered, summed over the tiles (100%: all the products' area drawn)."""
    covered = sum(a.covered for a in answers if a.status in (200, 204))
    drawn = sum(min(a.drawn or 0.0, a.covered) for a in answers if a.status in (200, 204))
    return f"{drawn / covered:.0%}" if covered else "-"


def x_assets_text(answers: list[Answer]) -> str:
    counts = [a.x_assets for a in answers if a.x_assets is not None]
    return str(max(counts)) if counts else "n/a"


def tables(
    runs: dict[str, dict[str, Any]],
    picked: dict[int, list[tuple[morecantile.Tile, tuple[int, float]]]],
    products: int,
    overview: bool,
) -> None:
    anchor, ours = runs["anchor"], runs["ours"]
    ours_label = "ours" + ("" if overview else " (no overview)")
    latency = Table(
        title=f"Mosaic tiles of {products:,} products, ms (p50 / p95; one request at a time)"
    )
    for column in ("z", "tiles anchor / ours", "products/tile p50 / max", "anchor cold", "anchor warm",
                   f"{ours_label} cold", f"{ours_label} warm", "anchor/ours warm p95",
                   f"warm p95 < {TARGET_MS:.0f}"):  # fmt: skip
        latency.add_column(column, justify="right")
    answers = Table(
        title="Answers per zoom, cold and warm together: failed / 204 / incomplete "
        f"(drawn < {INCOMPLETE:.0%} of the products' area); drawn: the products' area drawn"
    )
    for column in ("z", "anchor", "anchor drawn", "anchor X-Assets max", "ours", "ours drawn",
                   "ours X-Assets max"):  # fmt: skip
        answers.add_column(column, justify="right")
    for zoom, a in anchor["zooms"].items():
        o = ours["zooms"][zoom]
        under = [products for _tile, (products, _covered) in picked[zoom]]
        ratio = percentile(a["warm"], 95) / percentile(o["warm"], 95)
        p95 = percentile(o["warm"], 95)
        met = "yes" if p95 < TARGET_MS else "[red]no[/]"
        latency.add_row(
            str(zoom), f"{len(a['cold'])} / {len(o['cold'])}",
            f"{int(np.median(under)):,} / {max(under):,}",
            pair(a["cold"]), pair(a["warm"]), pair(o["cold"]), pair(o["warm"]),
            "-" if ratio != ratio else f"{ratio:.1f}x", met,
        )  # fmt: skip
        answers.add_row(
            str(zoom),
            answers_text(a["cold"] + a["warm"]), drawn_text(a["cold"] + a["warm"]),
            x_assets_text(a["cold"] + a["warm"]),
            answers_text(o["cold"] + o["warm"]), drawn_text(o["cold"] + o["warm"]),
            x_assets_text(o["cold"] + o["warm"]),
        )  # fmt: skip
    console.print(latency)
    console.print(answers)
    console.print(
        f"first raster request of a fresh process (tilejson: opens the raster pool, registers "
        f"the search): anchor {anchor['first_request_ms']:.0f} ms, "
        f"ours {ours['first_request_ms']:.0f} ms"
    )


def as_json(run: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in run.items() if k != "zooms"},
        "zooms": {
            str(z): {kind: [a.__dict__ for a in answers] for kind, answers in passes.items()}
            for z, passes in run["zooms"].items()
        },
    }


def parse_zooms(text: str) -> list[int]:
    if "-" in text:
        low, high = (int(v) for v in text.split("-"))
        return list(range(low, high + 1))
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=11_000)
    parser.add_argument("--zooms", default="3-12", help="a range (3-12) or a list (3,6,9)")
    parser.add_argument("--tiles", type=int, default=30, help="tiles per zoom")
    parser.add_argument("--ingest-workers", type=int, default=2, help="threads of the ingest")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per tile request")
    parser.add_argument(
        "--zoom-budget",
        type=float,
        default=60.0,
        help="seconds a process's cold pass may spend on one zoom; tiles after it are skipped "
        "(the anchor's low zooms take many seconds a tile)",
    )
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args()
    zooms = parse_zooms(args.zooms)
    figures: dict[str, Any] = {"products": args.products, "zooms": zooms, "tiles": args.tiles}
    with throwaway_stack() as stack:
        database = DatabaseSettings(
            data_dir=stack.base / "db", port=stack.report.logins.admin.port, dsn=None
        )
        http = HttpSession(stack.url)
        campaigns = Campaigns(http)
        campaign = f"mosaic-{uuid.uuid4().hex[:6]}"
        start = time.perf_counter()
        all_tiles, tiles, aoi = campaign_tiles(args.products)
        campaigns.create({"id": campaign, "grid": GRID, "aoi": aoi, "temporal_extent": ["2024-01-01", "2024-12-31"]})  # fmt: skip
        campaigns.register(campaign, tile_records(all_tiles))
        figures["campaign_s"] = time.perf_counter() - start
        log(f"campaign {campaign}: {len(all_tiles):,} {GRID} tiles over {AOI} in {figures['campaign_s']:.1f} s")  # fmt: skip

        start = time.perf_counter()
        paths = generate(tiles, stack.base / "inputs")
        figures["generate_s"] = time.perf_counter() - start
        start = time.perf_counter()
        outcomes = ingest(http, campaign, tiles, paths, args.ingest_workers)
        figures["ingest_s"] = time.perf_counter() - start
        failed = [o for o in outcomes if o.failed]
        figures["ingest_failed"] = len(failed)
        rate = len(outcomes) / figures["ingest_s"]
        log(
            f"{len(paths):,} COGs written in {figures['generate_s']:.1f} s; ingested in "
            f"{figures['ingest_s']:.1f} s ({rate:.0f} products/s), {len(failed)} failed"
        )
        for outcome in failed[:5]:
            log(f"[red]failed: {outcome.source}: {outcome.error}[/]")
        if len(failed) == len(outcomes):
            raise SystemExit("no product was ingested")

        figures["overview"] = build_overview(stack, database, campaign, time.perf_counter())
        collection = http.get(f"collections/{campaign_products_id(campaign)}")
        xyz = next(link["href"] for link in collection["links"] if link["rel"] == "xyz")
        tilejson = next(link["href"] for link in collection["links"] if link["rel"] == "tilejson")
        # The links follow the address the request reached; each process has its own.
        template = xyz[xyz.index("/raster/") :]
        figures["render"] = collection.get("renders", {}).get("default")
        figures["template"] = template
        log(f"tile URL: {template}")

        rng = np.random.default_rng(args.seed)
        coverage = Coverage.of(tiles)
        picked = {
            zoom: [(t, coverage.under(t)) for t in pick_tiles(tiles, zoom, args.tiles, rng)]
            for zoom in zooms
        }
        runs = {}
        for label, anchor in (("anchor", True), ("ours", False)):
            runs[label] = measure(
                label, database, template, tilejson[tilejson.index("/raster/") :], picked,
                args.timeout, args.zoom_budget, anchor,
            )  # fmt: skip
        console.print(
            f"{len(paths):,} products: COGs written in {figures['generate_s']:.1f} s (one process), "
            f"ingested in {figures['ingest_s']:.1f} s ({rate:.0f} products/s, "
            f"{args.ingest_workers} threads); campaign created in {figures['campaign_s']:.1f} s"
        )
        if figures["overview"].get("built"):
            console.print(
                "campaign overview: kept by the registering API as products landed, done "
                f"{figures['overview']['caught_up_s']:.1f} s after the ingest ended; then "
                f"`tilekeeper campaign overview` {figures['overview']['seconds']:.1f} s"
            )
        tables(runs, picked, len(paths), bool(figures["overview"].get("built")))
        if args.json:
            figures["runs"] = {label: as_json(run) for label, run in runs.items()}
            args.json.write_text(json.dumps(figures, indent=1))
            console.print(f"raw numbers: {args.json}")


if __name__ == "__main__":
    main()
