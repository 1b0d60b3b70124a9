"""Campaign overviews: the zooms where one map tile covers dozens of products (a z6 tile
of an EU27 campaign covers ~1,000 of its 20 km products) answered from a pyramid of the
products kept per collection, instead of opening every product each time.

The pyramid is one tiled GeoTIFF per zoom, in web mercator on the tile grid (256 px a
tile), holding the products' values (not colours), so the collection's render draws it
as it draws the products and the zooms meet without a seam. Its highest zoom is the last
at which a tile spans at least one product; it goes six zooms lower, and tiles further
out read its lowest level. It is kept incrementally: each product written is queued
(database/overview_schema.py) and ``update`` pastes the queued ones: each product read
once (through its COG's own overviews) into the highest level, and each lower level
recomputed from the one above over that product's window only. A product never leaves
the pyramid by itself (a deleted one stays drawn until ``rebuild``)."""

from __future__ import annotations

import logging
import math
import shutil
import statistics
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import rasterio
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rio_tiler.io import Reader
from rio_tiler.models import ImageData

from catalog_service.raster.hrefs import ReadableHrefs
from catalog_service.raster.render import default_render

logger = logging.getLogger(__name__)

WORLD = 2 * math.pi * 6378137.0  # web mercator's width, metres
TILE = 256
DEPTH = 6  # zooms below the highest one
MAX_SIDE = 65_536  # px: a collection larger than this at its highest zoom starts lower
# Products across a tile at the pyramid's highest zoom (at 2, bench/mosaic.py measured
# z10 tiles of up to 9 products from the products: 642 ms at p95).
MIN_PRODUCT_SPAN = 1
# Products pasted per transaction: a product written again meanwhile waits for it.
BATCH = 50
MERCATOR = "EPSG:3857"


def resolution(z: int) -> float:
    return WORLD / (TILE * float(2**z))


@dataclass(frozen=True)
class Pyramid:
    folder: Path
    low: int
    high: int
    bounds: tuple[float, float, float, float]  # web mercator, aligned to the `low` grid
    asset: str
    dtype: str
    bands: int
    nodata: float | None

    def path(self, z: int) -> Path:
        return self.folder / f"z{z}.tif"

    def shape(self, z: int) -> tuple[int, int]:
        west, south, east, north = self.bounds
        return round((north - south) / resolution(z)), round((east - west) / resolution(z))

    def bands_for(self, z: int, assets: Any, expression: Any) -> list[int] | None:
        """The bands a request for tile zoom ``z`` reads from here (its asset, whole or
        with ``|bidx=``), or None when the products must answer it."""
        if z > self.high or expression or not isinstance(assets, list) or len(assets) != 1:
            return None
        asked = assets[0]
        if asked == self.asset:
            return list(range(1, self.bands + 1))
        if (
            isinstance(asked, dict)
            and asked.get("name") == self.asset
            and set(asked)
            <= {
                "name",
                "indexes",
            }
        ):
            indexes = [int(i) for i in asked.get("indexes") or range(1, self.bands + 1)]
            return indexes if all(1 <= i <= self.bands for i in indexes) else None
        return None

    def tile(self, x: int, y: int, z: int, tilesize: int | None, bands: list[int]) -> ImageData:
        size = tilesize or TILE
        level = z + max(0, round(math.log2(size / TILE)))
        level = min(max(level, self.low), self.high)
        with Reader(str(self.path(level))) as src:
            image: ImageData = src.tile(x, y, z, tilesize=size, indexes=bands)
        return image


def _row_pyramid(row: dict[str, Any], root: Path) -> Pyramid:
    return Pyramid(
        folder=root / folder_name(row["collection"]),
        low=int(row["levels"][0]),
        high=int(row["levels"][1]),
        bounds=tuple(float(v) for v in row["bounds"]),  # type: ignore[arg-type]
        asset=str(row["asset"]),
        dtype=str(row["dtype"]),
        bands=int(row["bands"]),
        nodata=None if row["nodata"] is None else float(row["nodata"]),
    )


def folder_name(collection: str) -> str:
    """A folder per collection (ids may hold characters no file name should)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in collection)
    return f"{safe}-{abs(hash_text(collection)):08x}"


def hash_text(text: str) -> int:
    value = 0
    for byte in text.encode():
        value = (value * 131 + byte) % 2**32
    return value


def load(conn: psycopg.Connection[Any], collection: str, root: Path) -> Pyramid | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM tilekeeper.raster_overviews WHERE collection = %s", [collection])
        row = cur.fetchone()
    return None if row is None else _row_pyramid(row, root)


def queued(conn: psycopg.Connection[Any], collection: str) -> int:
    """Products of ``collection`` its overview has yet to take in."""
    row = conn.execute(
        "SELECT count(*) FROM tilekeeper.overview_pending WHERE collection = %s", [collection]
    ).fetchone()
    return int(row[0]) if row else 0


def pending_collections(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("SELECT DISTINCT collection FROM tilekeeper.overview_pending").fetchall()
    return [str(r[0]) for r in rows]


def _hydrated(
    conn: psycopg.Connection[Any], collection: str, ids: list[str]
) -> list[dict[str, Any]]:
    search = {"collections": [collection], "ids": ids, "limit": len(ids)}
    row = conn.execute("SELECT pgstac.search(%s)", [Jsonb(search)]).fetchone()
    features: list[dict[str, Any]] = (row[0] or {}).get("features", []) if row else []
    return features


def _extent(conn: psycopg.Connection[Any], collection: str) -> list[float] | None:
    """The campaign's whole extent for its product collection (the tiles to come), else
    the collection's own."""
    row = conn.execute(
        """SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (
               SELECT ST_Extent(geometry) AS e FROM pgstac.items WHERE collection = (
                   SELECT content->>'tilekeeper:products_of' FROM pgstac.collections WHERE id = %s)
           ) t""",
        [collection],
    ).fetchone()
    if row is not None and row[0] is not None:
        return [float(v) for v in row]
    row = conn.execute(
        "SELECT content->'extent'->'spatial'->'bbox'->0 FROM pgstac.collections WHERE id = %s",
        [collection],
    ).fetchone()
    return [float(v) for v in row[0]] if row and row[0] else None


def _plan(
    conn: psycopg.Connection[Any],
    collection: str,
    items: list[dict[str, Any]],
    hrefs: ReadableHrefs,
    root: Path,
) -> Pyramid | None:
    """A new pyramid for the collection, shaped by its first products."""
    row = conn.execute(
        "SELECT content FROM pgstac.collections WHERE id = %s", [collection]
    ).fetchone()
    render = default_render(row[0]) if row else None
    asset = str(render["assets"][0]) if render else "data"
    first = next(
        (
            hrefs.opened(str(i["assets"][asset]["href"]), collection)
            for i in items
            if asset in i.get("assets", {})
        ),
        None,
    )
    extent = _extent(conn, collection)
    if first is None or extent is None:
        return None
    with rasterio.open(first) as src:
        dtype, bands, nodata = src.dtypes[0], src.count, src.nodata
    if nodata is None:
        nodata = float("nan") if np.issubdtype(np.dtype(dtype), np.floating) else 0.0
    spans = [
        (float(i["bbox"][2]) - float(i["bbox"][0])) / 360 * WORLD for i in items if i.get("bbox")
    ]
    span = statistics.median(spans) if spans else WORLD / 2**10
    high = max(DEPTH, min(16, math.floor(math.log2(WORLD / (MIN_PRODUCT_SPAN * span)))))
    west, south, east, north = transform_bounds("EPSG:4326", MERCATOR, *extent, densify_pts=21)
    while max(east - west, north - south) / resolution(high) > MAX_SIDE and high > DEPTH:
        high -= 1
    low = high - DEPTH
    step = resolution(low)
    origin = -WORLD / 2
    bounds = (
        origin + math.floor((west - origin) / step) * step,
        origin + math.floor((south - origin) / step) * step,
        origin + math.ceil((east - origin) / step) * step,
        origin + math.ceil((north - origin) / step) * step,
    )
    pyramid = Pyramid(
        root / folder_name(collection), low, high, bounds, asset, dtype, bands, nodata
    )
    conn.execute(
        """INSERT INTO tilekeeper.raster_overviews
               (collection, levels, bounds, asset, dtype, bands, nodata)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        [collection, [low, high], list(bounds), asset, dtype, bands, nodata],
    )
    _create_files(pyramid)
    return pyramid


def _create_files(pyramid: Pyramid) -> None:
    shutil.rmtree(pyramid.folder, ignore_errors=True)
    pyramid.folder.mkdir(parents=True, exist_ok=True)
    floating = np.issubdtype(np.dtype(pyramid.dtype), np.floating)
    for z in range(pyramid.low, pyramid.high + 1):
        height, width = pyramid.shape(z)
        profile = {
            "driver": "GTiff", "width": width, "height": height, "count": pyramid.bands,
            "dtype": pyramid.dtype, "crs": MERCATOR, "nodata": pyramid.nodata,
            "transform": from_origin(pyramid.bounds[0], pyramid.bounds[3], resolution(z), resolution(z)),
            "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "deflate",
            "predictor": 3 if floating else 2, "sparse_ok": True, "bigtiff": "if_safer",
        }  # fmt: skip
        with rasterio.open(pyramid.path(z), "w", **profile):
            pass  # sparse: blocks never written take no space and read as nodata


def _valid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.ones(data.shape, dtype=bool)
    if math.isnan(nodata):
        numbers: np.ndarray = ~np.isnan(data)
        return numbers
    different: np.ndarray = data != nodata
    return different


def _window(pyramid: Pyramid, z: int, bounds: tuple[float, float, float, float]) -> Window | None:
    """The pixels of level ``z`` that ``bounds`` (web mercator) touch, inside the level."""
    res = resolution(z)
    west, _, _, north = pyramid.bounds
    height, width = pyramid.shape(z)
    col0 = max(0, math.floor((bounds[0] - west) / res + 1e-9))
    col1 = min(width, math.ceil((bounds[2] - west) / res - 1e-9))
    row0 = max(0, math.floor((north - bounds[3]) / res + 1e-9))
    row1 = min(height, math.ceil((north - bounds[1]) / res - 1e-9))
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _paste(pyramid: Pyramid, levels: dict[int, Any], path: str) -> bool:
    """One product into the highest level, then each lower level over its window."""
    with Reader(path) as src:
        bounds = transform_bounds(src.crs, MERCATOR, *src.bounds, densify_pts=21)
        window = _window(pyramid, pyramid.high, bounds)
        if window is None:
            return False
        res = resolution(pyramid.high)
        west, north = (
            pyramid.bounds[0] + window.col_off * res,
            pyramid.bounds[3] - window.row_off * res,
        )
        box = (west, north - window.height * res, west + window.width * res, north)
        image = src.part(
            box, dst_crs=MERCATOR, bounds_crs=MERCATOR, width=int(window.width),
            height=int(window.height), reproject_method="average", resampling_method="average",
        )  # fmt: skip
    target = levels[pyramid.high]
    old = target.read(window=window)
    fresh = ~np.ma.getmaskarray(image.array)
    target.write(np.where(fresh, image.array.data.astype(pyramid.dtype), old), window=window)
    for z in range(pyramid.high - 1, pyramid.low - 1, -1):
        window = _downsample(pyramid, levels[z + 1], levels[z], z, window)
    return True


def _downsample(pyramid: Pyramid, finer: Any, coarser: Any, z: int, child: Window) -> Window:
    """Level ``z`` over the parents of ``child`` (a window of level z + 1): each pixel the
    mean of its four children's valid values."""
    col0, row0 = int(child.col_off) // 2, int(child.row_off) // 2
    col1 = math.ceil((child.col_off + child.width) / 2)
    row1 = math.ceil((child.row_off + child.height) / 2)
    height, width = pyramid.shape(z)
    col1, row1 = min(col1, width), min(row1, height)
    parent = Window(col0, row0, col1 - col0, row1 - row0)
    wide = Window(2 * col0, 2 * row0, 2 * (col1 - col0), 2 * (row1 - row0))
    # Read within the level and padded here: a boundless read reopens the file by name
    # and misses what this handle wrote and has not flushed.
    fine_height, fine_width = pyramid.shape(z + 1)
    inside = Window(
        wide.col_off, wide.row_off,
        min(wide.width, fine_width - wide.col_off), min(wide.height, fine_height - wide.row_off),
    )  # fmt: skip
    fill = pyramid.nodata if pyramid.nodata is not None else 0
    data = np.full((pyramid.bands, int(wide.height), int(wide.width)), fill, dtype="float64")
    data[:, : int(inside.height), : int(inside.width)] = finer.read(window=inside)
    valid = _valid(data, pyramid.nodata)
    bands, rows, cols = data.shape
    blocks = np.where(valid, data, 0).reshape(bands, rows // 2, 2, cols // 2, 2)
    counts = valid.reshape(bands, rows // 2, 2, cols // 2, 2).sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = blocks.sum(axis=(2, 4)) / counts
    out = np.where(counts > 0, mean, fill)
    if not np.issubdtype(np.dtype(pyramid.dtype), np.floating):
        out = np.rint(out)
    coarser.write(out.astype(pyramid.dtype), window=parent)
    return parent


@dataclass(frozen=True)
class Progress:
    collection: str
    pasted: int
    skipped: int
    remaining: int


def update(
    conn: psycopg.Connection[Any], collection: str, hrefs: ReadableHrefs, root: Path,
    batch: int = BATCH,
) -> Progress | None:  # fmt: skip
    """Paste up to ``batch`` queued products of ``collection`` into its pyramid (made on
    the first). None when another process holds the collection's pyramid."""
    with conn.transaction():
        locked = conn.execute(
            "SELECT pg_try_advisory_xact_lock(hashtext('tilekeeper-overview:' || %s))", [collection]
        ).fetchone()
        if not locked or not locked[0]:
            return None
        # Taken off the queue first: a product written again meanwhile waits for this
        # transaction and is queued anew, not lost with the row deleted at the end.
        ids = [
            str(r[0])
            for r in conn.execute(
                """DELETE FROM tilekeeper.overview_pending WHERE collection = %s AND item_id IN (
                       SELECT item_id FROM tilekeeper.overview_pending WHERE collection = %s
                       ORDER BY item_id LIMIT %s)
                   RETURNING item_id""",
                [collection, collection, batch],
            ).fetchall()
        ]
        items = _hydrated(conn, collection, ids) if ids else []
        pyramid = load(conn, collection, root)
        if pyramid is None and items:
            pyramid = _plan(conn, collection, items, hrefs, root)
        pasted = skipped = 0
        if pyramid is not None and items:
            with ExitStack() as stack:
                levels = {
                    z: stack.enter_context(rasterio.open(pyramid.path(z), "r+"))
                    for z in range(pyramid.low, pyramid.high + 1)
                }
                for item in items:
                    if item.get("properties", {}).get("deprecated"):
                        skipped += 1
                        continue
                    href = (item.get("assets", {}).get(pyramid.asset) or {}).get("href")
                    path = hrefs.opened(str(href), collection) if href else None
                    try:
                        done = path is not None and _paste(pyramid, levels, path)
                    except rasterio.errors.RasterioError as exc:
                        logger.warning(
                            "overview of %s: product %s not read (%s)", collection, item["id"], exc
                        )
                        done = False
                    pasted += int(done)
                    skipped += int(not done)
        elif pyramid is None:
            skipped = len(ids)  # nothing the service may open: dropped from the queue
        conn.execute(
            """UPDATE tilekeeper.raster_overviews SET products = products + %s, updated = now()
               WHERE collection = %s""",
            [pasted, collection],
        )
        left = queued(conn, collection)
    return Progress(collection, pasted, skipped, left)


def update_all(
    conn: psycopg.Connection[Any], collection: str, hrefs: ReadableHrefs, root: Path
) -> Iterator[Progress]:
    """Batches until the collection's queue is empty (or another process has it)."""
    while True:
        progress = update(conn, collection, hrefs, root)
        if progress is None:
            return
        yield progress
        if progress.remaining == 0 or progress.pasted + progress.skipped == 0:
            return


def rebuild(conn: psycopg.Connection[Any], collection: str, root: Path) -> int:
    """Forget the collection's pyramid and queue every current product again: under the
    collection's lock (waiting for a batch another process is pasting), files included."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tilekeeper-overview:' || %s))", [collection]
        )
        conn.execute("DELETE FROM tilekeeper.raster_overviews WHERE collection = %s", [collection])
        queued = conn.execute(
            """INSERT INTO tilekeeper.overview_pending (collection, item_id)
               SELECT collection, id FROM pgstac.items WHERE collection = %s
                 AND NOT coalesce((content->'properties'->>'deprecated')::boolean, false)
               ON CONFLICT DO NOTHING""",
            [collection],
        ).rowcount
        shutil.rmtree(root / folder_name(collection), ignore_errors=True)
    return int(queued)
