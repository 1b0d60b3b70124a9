"""A raster file checked before anything reads, copies or converts it.

Files come from back-ends and are untrusted: ``check`` reads only the header (no pixel)
and refuses what is too big to decode, in the wrong CRS, outside its tile, truncated or
not a GeoTIFF; a COG is validated for real (the header's LAYOUT=COG is only GDAL's word
about how the file was written)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as ProjCRSError
from rasterio._err import CPLE_BaseError
from rasterio.enums import Interleaving
from rasterio.env import get_gdal_config
from rasterio.errors import CRSError, RasterioError
from shapely.errors import GEOSException
from shapely.geometry import Polygon, shape
from shapely.geometry.polygon import orient

from ingest.errors import IngestError
from ingest.limits import MIB, MIN_RASTER_BYTES
from ingest.rasters import COG_TILE, footprint, is_valid_cog, open_geotiff, sample_bytes, shown

# Images (IFDs) one TIFF may hold: a COG's full resolution, overviews and masks are a
# dozen; a back-end's file of 100,000 tiny ones kept GDAL busy for minutes.
MAX_IFDS = 64


# GDAL decodes a block whole (all bands of a pixel-interleaved one) and allocates it even
# when it is larger than its block cache (GDAL_CACHEMAX, 5 % of RAM by default), once per
# thread reading it; the conversion's window of every band is one such unit too. One unit
# stays within the smallest raster limit and the block cache: 256 MiB is 1,024 bytes a
# pixel in 512 px windows (256 float32 bands).
MAX_BLOCK_BYTES = MIN_RASTER_BYTES


# Blocks whose place in the file is looked up (truncation check, COG validation): ~1 us
# each. A 10,980 px square in GDAL's default strips has 10,980 a band; a million tiny
# blocks (16 px tiles) fit under the raster limit but cost seconds to look up and decode.
MAX_BLOCKS = 1 << 20


# Slack on the footprint test: coordinates are rounded to 1e-7 degrees (~1 cm) and a
# raster's edge between footprint points is straight in its CRS, not in the tile's.
FOOTPRINT_SLACK_M = 5.0


@dataclass(frozen=True)
class Expectations:
    """What a product's raster must be, besides a readable, georeferenced GeoTIFF: at most
    ``max_bytes`` decoded, in ``crs`` (when set) and within ``tile_geometry`` (GeoJSON,
    EPSG:4326, when set) grown by ``tolerance`` times the tile's size."""

    max_bytes: int = MIN_RASTER_BYTES
    tile: str | None = None  # the tile's name, for messages
    tile_geometry: dict[str, Any] | None = None
    tolerance: float = 0.1
    crs: str | None = None


def check(path: Path, expect: Expectations | None = None) -> bool:
    """Refuse, from the header alone, what cannot become a product: unreadable, not a
    GeoTIFF, no CRS, more to decode than ``expect.max_bytes`` (or blocks too big), in
    another CRS than expected, outside its tile, truncated. True when the raster is a
    valid COG already (stored as is), False when it must be converted. Reads no pixel:
    a few milliseconds whatever the file claims to hold."""
    expect = expect or Expectations()
    name = shown(path.name)
    if _ifd_count(path, MAX_IFDS) > MAX_IFDS:
        raise IngestError(
            f"{name}: more than {MAX_IFDS} images in one TIFF (a COG has its overviews and "
            "masks: a dozen); refused before GDAL reads them"
        )
    with open_geotiff(path) as src:
        try:
            _check_size(src, name, expect.max_bytes)
            if src.crs is None:
                raise IngestError(f"{name}: the raster has no CRS (georeference it first)")
            if expect.crs is not None:
                _check_crs(src.crs, expect.crs, name)
            if expect.tile_geometry is not None:
                _check_footprint(footprint(src), expect.tile_geometry, expect, name)
            _check_blocks(src, path)
            return is_valid_cog(src, path)
        except (RasterioError, CPLE_BaseError, CRSError, ProjCRSError) as exc:
            raise IngestError(f"{name}: unreadable raster header ({shown(exc)})") from exc


def _ifd_count(path: Path, limit: int) -> int:
    """How many images (IFDs) the TIFF's main chain holds, counted up to ``limit + 1``
    from their headers alone: GDAL walks them all when it opens a file, ~1 ms and 3.6 kB
    each, so 100,000 of them in 15 MB cost 97 s and 500 MB. 0 for what is no TIFF or no
    regular file (a pipe must be opened once only: GDAL refuses it)."""
    if not path.is_file():
        return 0
    with path.open("rb") as f:
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 16:
            return 0
        magic = struct.unpack(order + "H", head[2:4])[0]
        if magic == 42:  # classic TIFF: 2-byte counts, 12-byte entries, 4-byte offsets
            count_fmt, entry_size, offset_fmt = "H", 12, "I"
            offset = struct.unpack(order + "I", head[4:8])[0]
        elif magic == 43:  # BigTIFF: 8-byte counts, 20-byte entries, 8-byte offsets
            count_fmt, entry_size, offset_fmt = "Q", 20, "Q"
            offset = struct.unpack(order + "Q", head[8:16])[0]
        else:
            return 0
        count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
        seen: set[int] = set()
        while offset and offset not in seen and len(seen) <= limit:
            seen.add(offset)
            f.seek(offset)
            raw = f.read(count_size)
            if len(raw) < count_size:
                break
            entries = struct.unpack(order + count_fmt, raw)[0]
            f.seek(offset + count_size + entries * entry_size)
            raw = f.read(offset_size)
            if len(raw) < offset_size:
                break
            offset = struct.unpack(order + offset_fmt, raw)[0]
        return len(seen)


def _padded(size: int, block: int) -> int:
    """``size`` in whole blocks, as GDAL decodes and the conversion writes them."""
    return max(-(-size // block) * block, -(-size // COG_TILE) * COG_TILE)


def _check_size(src: Any, name: str, limit: int) -> None:
    """Width x height x bands x bytes per sample, in whole blocks (a 1 x 1 raster of
    10,000 float64 bands is 21 GB to convert: 512 px tiles of every band), within the
    raster limit; no more than MAX_BLOCKS blocks; and one block (a 512 px window of every
    band, or the file's own block) within what GDAL holds at once. Overviews, missing or not, are bounded by the same
    limit: building them (in the conversion) reads the raster once more, a third as much
    to write. Decoding work is bounded likewise: GDAL decodes only this many bytes."""
    rows, cols = src.block_shapes[0]
    dtype = max(src.dtypes, key=sample_bytes)
    sample = sample_bytes(dtype)
    pixel = src.count * sample
    total = _padded(src.width, cols) * _padded(src.height, rows) * pixel
    if total > limit:
        raise IngestError(
            f"{name}: {src.width} x {src.height} px x {src.count} band(s) of {dtype} is "
            f"{_bytes(total)} to decode (in whole blocks), over the limit of {_bytes(limit)} "
            "(TILEKEEPER_HARVEST_MAX_RASTER_BYTES; by default from the tile's size)"
        )
    pixel_interleaved = src.interleaving != Interleaving.band
    blocks = (
        -(-src.width // cols) * -(-src.height // rows) * (1 if pixel_interleaved else src.count)
    )
    if blocks > MAX_BLOCKS:
        raise IngestError(
            f"{name}: {blocks:,} blocks of {cols} x {rows} px, over {MAX_BLOCKS:,} (larger "
            "blocks, please: 256 or 512 px tiles)"
        )
    block = rows * cols * (pixel if pixel_interleaved else sample)
    unit = max(block, COG_TILE * COG_TILE * pixel)
    most = min(limit, MAX_BLOCK_BYTES, _gdal_cache_bytes() or MAX_BLOCK_BYTES)
    if unit > most:
        raise IngestError(
            f"{name}: {src.count} band(s) of {dtype} in blocks of {cols} x {rows} px: "
            f"{_bytes(unit)} decoded at once, over {_bytes(most)} (what GDAL may hold at "
            "once; fewer bands, or smaller blocks)"
        )


def _gdal_cache_bytes() -> int | None:
    """GDAL's block cache size (GDAL_CACHEMAX; a small number is megabytes, as GDAL
    reads it), or None when unknown."""
    value = get_gdal_config("GDAL_CACHEMAX")
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    if size <= 0:
        return None
    return size * MIB if size < 100_000 else size


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def _check_crs(crs: Any, expected: str, name: str) -> None:
    try:
        want = CRS.from_user_input(expected)
    except ProjCRSError as exc:
        raise IngestError(f"{name}: its tile's CRS {shown(expected)!r} is not a CRS") from exc
    epsg = crs.to_epsg()
    if epsg is not None and want.to_epsg() == epsg:
        return
    if CRS.from_user_input(crs.to_wkt()) == want:
        return
    found = f"EPSG:{epsg}" if epsg else shown(crs.to_wkt())
    raise IngestError(
        f"{name}: in {found}, not in its tile's {shown(expected)} (a product is in its "
        "tile's CRS; TILEKEEPER_HARVEST_CRS=any accepts any)"
    )


def _check_footprint(
    footprint: dict[str, Any], tile_geometry: dict[str, Any], expect: Expectations, name: str
) -> None:
    """The footprint (EPSG:4326, as ``describe`` computes it) within the tile grown by
    ``tolerance`` times the tile's size on every side (a larger square, as the raster
    limit assumes), and overlapping the tile itself. Measured in metres on a plane
    around the tile (azimuthal equidistant: true distances from one of its corners)."""
    tile_name = f"tile {shown(expect.tile)}" if expect.tile else "its tile"
    try:
        tile = shape(tile_geometry)
        lon, lat = shapely.get_coordinates(tile)[0]
        # A pipeline, not from_crs: no search for a transformation (5 ms -> 0.04 ms).
        local = Transformer.from_pipeline(
            "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
            f"+step +proj=aeqd +lat_0={float(lat)!r} +lon_0={float(lon)!r} +ellps=WGS84"
        )
        tile_m = shapely.transform(tile, lambda xy: np.column_stack(local.transform(*xy.T)))
        points = shapely.get_coordinates(shape(footprint))
        ring_m = np.column_stack(local.transform(*points.T))
        if not np.isfinite(ring_m).all():
            raise IngestError(f"{name}: its footprint cannot be placed on the globe")
        size = float(np.sqrt(tile_m.area))  # a grid cell is a square
        reach = _reach(ring_m, tile_m)
        overlaps = Polygon(ring_m).intersects(tile_m)
    except (GEOSException, ValueError, IndexError, ProjCRSError) as exc:
        raise IngestError(
            f"{name}: footprint not comparable with {tile_name} ({shown(exc)})"
        ) from exc
    allowed = expect.tolerance * size
    if reach > allowed + FOOTPRINT_SLACK_M:
        raise IngestError(
            f"{name}: footprint reaches {reach / 1000:,.1f} km beyond {tile_name} (allowed: "
            f"{allowed / 1000:,.1f} km, TILEKEEPER_HARVEST_FOOTPRINT_TOLERANCE "
            f"{expect.tolerance:g} of its {size / 1000:,.1f} km)"
        )
    if not overlaps:
        raise IngestError(f"{name}: footprint does not overlap {tile_name}")


def _reach(points: np.ndarray, tile: Any) -> float:
    """How far ``points`` reach beyond ``tile``, side by side: the largest distance of a
    point outside the line of one of the tile's edges (the tile's convex hull; 0 within
    it). A point is within the tile grown by d on every side when its reach is <= d."""
    hull = tile.convex_hull
    if not isinstance(hull, Polygon) or hull.area <= 0:
        raise ValueError("the tile's geometry has no area")
    hull = orient(hull, 1.0)  # counter-clockwise: edges' right-hand normals point out
    ring = shapely.get_coordinates(hull.exterior)
    start, edge = ring[:-1], np.diff(ring, axis=0)
    length = np.hypot(edge[:, 0], edge[:, 1])
    keep = length > 0
    outward = np.column_stack([edge[keep, 1], -edge[keep, 0]]) / length[keep, None]
    beyond = ((points[:, None, :] - start[None, keep, :]) * outward[None]).sum(axis=2)
    return max(0.0, float(beyond.max()))


def _check_blocks(src: Any, path: Path) -> None:
    # Bounded: _check_size came first (at most MAX_BLOCKS blocks).
    size = path.stat().st_size
    rows, cols = src.block_shapes[0]
    # Pixel-interleaved blocks hold every band: band 1's offsets are all of them.
    bands = 1 if src.interleaving == Interleaving.pixel else src.count
    for band in range(1, bands + 1):
        for r in range(0, (src.height + rows - 1) // rows):
            for c in range(0, (src.width + cols - 1) // cols):
                offset = src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=band)
                length = src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=band)
                if offset and length and int(offset) + int(length) > size:
                    raise IngestError(
                        f"{shown(path.name)}: truncated or corrupt (block {c},{r} of band "
                        f"{band} ends past the file's {size} bytes)"
                    )
