"""One raster file: checked, made a COG when it is not one, described for its STAC item
(projection, per-band type, nodata and statistics) and previewed as a small PNG.

Files come from back-ends and are untrusted: ``check`` reads only the header (no pixel)
and refuses what is too big to decode, in the wrong CRS, outside its tile, truncated or
not a GeoTIFF before anything reads, copies or converts it; a COG is validated for real
(the header's LAYOUT=COG is only GDAL's word about how the file was written)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as ProjCRSError
from rasterio._err import CPLE_BaseError
from rasterio.enums import Interleaving
from rasterio.env import get_gdal_config
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles
from shapely.errors import GEOSException
from shapely.geometry import Polygon, shape
from shapely.geometry.polygon import orient

from catalog_service.png import png_bytes
from catalog_service.remote_text import inert
from ingest.errors import IngestError
from ingest.limits import MIB, MIN_RASTER_BYTES

logger = logging.getLogger(__name__)
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
CHUNK = 4 << 20
DIRECT_ALIGN = 4096
_DIRECT = getattr(os, "O_DIRECT", 0)
# Statistics are computed on an overview at most this wide (rio-stac does the same at
# 1024): close enough for a catalogue (minimum and maximum may miss single pixels), and
# cheap: decoding a 500 px overview of 4 bands costs ~20 ms, a 250 px one ~5 ms.
STATS_MAX_SIZE = 256
THUMBNAIL_SIZE = 256  # the preview is drawn from the statistics' read
# Images (IFDs) one TIFF may hold: a COG's full resolution, overviews and masks are a
# dozen; a back-end's file of 100,000 tiny ones kept GDAL busy for minutes.
MAX_IFDS = 64
EDGE_POINTS = 5  # per footprint edge: a straight UTM edge bends little over a quarter of a tile
# What a conversion writes (rio-cogeo's deflate profile): 512 px tiles, pixel-interleaved;
# cog_translate reads a 512 x 512 window of every band at once. Larger rasters need
# internal overviews to count as COGs (cog_validate's own threshold).
COG_TILE = 512
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
# Converted in memory up to this size (rio-cogeo decides by pixel count alone, which lets
# 16 float64 bands of 10,980 px squared take 15 GB of RAM); larger ones go through a
# temporary file beside the output.
IN_MEMORY_BYTES = MIN_RASTER_BYTES
# Slack on the footprint test: coordinates are rounded to 1e-7 degrees (~1 cm) and a
# raster's edge between footprint points is straight in its CRS, not in the tile's.
FOOTPRINT_SLACK_M = 5.0
# Text from a file (names, CRS descriptions, GDAL's messages) in an error: short, inert.
SHOWN_CHARS = 200


@dataclass(frozen=True)
class FileDigest:
    size: int
    checksum: str  # multihash: 0x12 (sha2-256), 0x20 (32 bytes), digest

    @classmethod
    def of(cls, path: Path, copy_to: Path | None = None) -> FileDigest:
        """The file's size and sha2-256; with ``copy_to``, its bytes are written there in
        the same pass (so a new product's file is read once, not once to hash and once
        to copy)."""
        digest = hashlib.sha256()
        size = 0
        buffer = mmap.mmap(-1, CHUNK)  # page-aligned, as direct I/O needs
        view = memoryview(buffer)
        try:
            with path.open("rb", buffering=0) as f, _Sink(copy_to) as sink:
                while n := f.readinto(buffer):
                    digest.update(view[:n])
                    sink.write(view[:n])
                    size += n
        finally:
            view.release()
            buffer.close()
        return cls(size, "1220" + digest.hexdigest())


class _Sink:
    """Where FileDigest copies to: written with O_DIRECT, so the copy does not go through
    the page cache. Filling fresh page-cache pages is what a copy costs most, ~2x its
    memcpy on this machine's VM and growing as the cache fills; product files are
    written once and read rarely, so caching them would only evict what is read now."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Sink:
        if self.path is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            try:
                self.fd = os.open(self.path, flags | getattr(os, "O_DIRECT", 0), 0o644)
            except OSError:  # a file system without direct I/O (tmpfs)
                self.fd = os.open(self.path, flags, 0o644)
        return self

    def write(self, data: memoryview) -> None:
        if self.fd < 0:
            return
        if len(data) % DIRECT_ALIGN:  # the file's tail: direct I/O takes whole blocks only
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~_DIRECT)
        while data:
            data = data[os.write(self.fd, data) :]

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


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


@dataclass(frozen=True)
class Band:
    data_type: str
    nodata: float | None
    statistics: dict[str, float]
    description: str | None

    def as_raster_band(self) -> dict[str, Any]:
        band: dict[str, Any] = {"data_type": self.data_type, "statistics": self.statistics}
        if self.nodata is not None:
            band["nodata"] = _json_number(self.nodata)
        if self.description:
            band["name"] = self.description
        return band


@dataclass(frozen=True)
class RasterInfo:
    proj_code: str | None  # "EPSG:n", or None for a CRS without an EPSG code
    proj_wkt2: str | None  # WKT2 (2019) of a CRS without an EPSG code, else None
    shape: list[int]
    transform: list[float]
    proj_bbox: list[float]
    geometry: dict[str, Any]
    bbox: list[float]
    bands: list[Band]
    categorical: bool

    @property
    def proj_epsg(self) -> int | None:
        """The EPSG code of ``proj_code`` (the deprecated ``proj:epsg``)."""
        if self.proj_code and self.proj_code.startswith("EPSG:"):
            return int(self.proj_code.removeprefix("EPSG:"))
        return None


def _json_number(value: float) -> float | str:
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return int(value) if float(value).is_integer() else float(value)


def _shown(text: object) -> str:
    return inert(text, SHOWN_CHARS)


def _open(path: Path) -> Any:
    # GeoTIFF only: GDAL would open a VRT or another format's file that names other
    # files or URLs to read, and a product is a GeoTIFF anyway.
    try:
        return rasterio.open(path, driver="GTiff")
    except (RasterioError, CPLE_BaseError) as exc:
        raise IngestError(f"{_shown(path.name)}: not a readable raster ({_shown(exc)})") from exc


def is_categorical(src: Any) -> bool:
    """A class map: integer bands with a colour table (how openEO and GDAL mark them)."""
    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        return False
    try:
        return bool(src.colormap(1))
    except ValueError:  # no colour table
        return False


def check(path: Path, expect: Expectations | None = None) -> bool:
    """Refuse, from the header alone, what cannot become a product: unreadable, not a
    GeoTIFF, no CRS, more to decode than ``expect.max_bytes`` (or blocks too big), in
    another CRS than expected, outside its tile, truncated. True when the raster is a
    valid COG already (stored as is), False when it must be converted. Reads no pixel:
    a few milliseconds whatever the file claims to hold."""
    expect = expect or Expectations()
    name = _shown(path.name)
    if _ifd_count(path, MAX_IFDS) > MAX_IFDS:
        raise IngestError(
            f"{name}: more than {MAX_IFDS} images in one TIFF (a COG has its overviews and "
            "masks: a dozen); refused before GDAL reads them"
        )
    with _open(path) as src:
        try:
            _check_size(src, name, expect.max_bytes)
            if src.crs is None:
                raise IngestError(f"{name}: the raster has no CRS (georeference it first)")
            if expect.crs is not None:
                _check_crs(src.crs, expect.crs, name)
            if expect.tile_geometry is not None:
                _check_footprint(_footprint(src), expect.tile_geometry, expect, name)
            _check_blocks(src, path)
            return _is_cog(src, path)
        except (RasterioError, CPLE_BaseError, CRSError, ProjCRSError) as exc:
            raise IngestError(f"{name}: unreadable raster header ({_shown(exc)})") from exc


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


def _sample_bytes(dtype: str) -> int:
    if dtype == "complex_int16":  # GDAL's CInt16, unknown to numpy
        return 4
    try:
        return int(np.dtype(dtype).itemsize)
    except TypeError:
        return 16  # whatever it is, no sample type is larger


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
    dtype = max(src.dtypes, key=_sample_bytes)
    sample = _sample_bytes(dtype)
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
        raise IngestError(f"{name}: its tile's CRS {_shown(expected)!r} is not a CRS") from exc
    epsg = crs.to_epsg()
    if epsg is not None and want.to_epsg() == epsg:
        return
    if CRS.from_user_input(crs.to_wkt()) == want:
        return
    found = f"EPSG:{epsg}" if epsg else _shown(crs.to_wkt())
    raise IngestError(
        f"{name}: in {found}, not in its tile's {_shown(expected)} (a product is in its "
        "tile's CRS; TILEKEEPER_HARVEST_CRS=any accepts any)"
    )


def _check_footprint(
    footprint: dict[str, Any], tile_geometry: dict[str, Any], expect: Expectations, name: str
) -> None:
    """The footprint (EPSG:4326, as ``describe`` computes it) within the tile grown by
    ``tolerance`` times the tile's size on every side (a larger square, as the raster
    limit assumes), and overlapping the tile itself. Measured in metres on a plane
    around the tile (azimuthal equidistant: true distances from one of its corners)."""
    tile_name = f"tile {_shown(expect.tile)}" if expect.tile else "its tile"
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
            f"{name}: footprint not comparable with {tile_name} ({_shown(exc)})"
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
                        f"{_shown(path.name)}: truncated or corrupt (block {c},{r} of band "
                        f"{band} ends past the file's {size} bytes)"
                    )


def _is_cog(src: Any, path: Path) -> bool:
    """A COG by rio-cogeo's full validation (~2 ms: it reopens the file and reads the
    offsets of its first blocks and overviews), with internal overviews when the raster
    is larger than one 512 px tile: without them every overview-level read (statistics,
    previews, web maps) decodes the whole raster. Not one: converted, which builds them.
    GDAL's LAYOUT=COG is not taken for it: GDAL writes it for any file copied with
    COPY_SRC_OVERVIEWS, striped or without overviews, and anyone can write those bytes."""
    if max(src.width, src.height) > COG_TILE and not src.overviews(1):
        return False
    return is_cog(path)


def is_cog(path: Path) -> bool:
    try:
        valid, _errors, _warnings = cog_validate(str(path), quiet=True)
    except (RasterioError, CPLE_BaseError, ValueError, TypeError):
        return False  # what it cannot read is not a COG; the conversion says why
    return bool(valid)


def make_cog(src_path: Path, dst_path: Path) -> None:
    """Write ``src_path`` as a deflate COG with internal overviews: ``mode`` resampling
    for class maps (no invented classes), ``average`` for continuous values."""
    with _open(src_path) as src:
        resampling: Literal["mode", "average"] = "mode" if is_categorical(src) else "average"
        nodata = src.nodata
        sample = max(_sample_bytes(dtype) for dtype in src.dtypes)
        raster_bytes = src.width * src.height * src.count * sample
    try:
        cog_translate(
            str(src_path),
            str(dst_path),
            cog_profiles.get("deflate"),  # type: ignore[no-untyped-call]
            overview_resampling=resampling,
            nodata=nodata,
            forward_band_tags=True,
            in_memory=raster_bytes <= IN_MEMORY_BYTES,
            quiet=True,
        )
    except (RasterioError, CPLE_BaseError, OSError, ValueError) as exc:
        raise IngestError(
            f"{_shown(src_path.name)}: conversion to COG failed ({_shown(exc)})"
        ) from exc


def _footprint(src: Any) -> dict[str, Any]:
    w, s, e, n = src.bounds
    ts = np.linspace(0.0, 1.0, EDGE_POINTS)
    ring = (
        [(w + (e - w) * t, s) for t in ts]
        + [(e, s + (n - s) * t) for t in ts[1:]]
        + [(e - (e - w) * t, n) for t in ts[1:]]
        + [(w, n - (n - s) * t) for t in ts[1:]]
    )
    polygon = {"type": "Polygon", "coordinates": [ring]}
    geometry: dict[str, Any] = transform_geom(src.crs, "EPSG:4326", polygon, precision=7)
    return {"type": geometry["type"], "coordinates": geometry["coordinates"]}


def _bbox(geometry: dict[str, Any]) -> list[float]:
    xs = [p[0] for p in geometry["coordinates"][0]]
    ys = [p[1] for p in geometry["coordinates"][0]]
    return [min(xs), min(ys), max(xs), max(ys)]


def _overview_shape(src: Any, max_size: int) -> tuple[int, int]:
    """The shape of the largest overview at most ``max_size`` wide: read at exactly an
    overview's size, GDAL copies its pixels (~1 ms); any other size makes it resample the
    next larger level (~20 ms for 4 bands)."""
    for factor in [1, *src.overviews(1)]:
        height, width = -(-src.height // factor), -(-src.width // factor)
        if max(height, width) <= max_size:
            return height, width
    scale = max(src.width, src.height) / max_size  # no overview that small: resample
    return max(1, round(src.height / scale)), max(1, round(src.width / scale))


def _valid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = ~np.isnan(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= data != nodata
    return valid


def describe(path: Path, thumbnail_path: Path | None = None) -> RasterInfo:
    """The raster's projection, footprint and per-band statistics, from one read of an
    overview; the same pixels give the thumbnail when ``thumbnail_path`` is set."""
    with _open(path) as src:
        try:
            data = src.read(out_shape=(src.count, *_overview_shape(src, STATS_MAX_SIZE)))
        except (RasterioError, CPLE_BaseError) as exc:
            raise IngestError(f"{_shown(path.name)}: unreadable pixels ({_shown(exc)})") from exc
        bands = []
        for n in range(src.count):
            values = data[n][_valid(data[n], src.nodatavals[n])]
            stats: dict[str, float] = {
                "valid_percent": round(100.0 * values.size / data[n].size, 3)
            }
            if values.size:
                values = values.astype("float64")
                stats |= {
                    "minimum": float(values.min()),
                    "maximum": float(values.max()),
                    "mean": float(values.mean()),
                    "stddev": float(values.std()),
                }
            description = src.descriptions[n]  # from the file: short and inert in the item
            name = _shown(description) if description else None
            bands.append(Band(src.dtypes[n], src.nodatavals[n], stats, name))
        epsg = src.crs.to_epsg()
        geometry = _footprint(src)
        categorical = is_categorical(src)
        if thumbnail_path is not None:
            colormap = src.colormap(1) if categorical else None
            _write_thumbnail(data, src.nodata, colormap, thumbnail_path)
        return RasterInfo(
            proj_code=f"EPSG:{epsg}" if epsg else None,
            proj_wkt2=None if epsg else src.crs.to_wkt(version="WKT2_2019"),
            shape=[src.height, src.width],
            transform=list(src.transform)[:6],
            proj_bbox=list(src.bounds),
            geometry=geometry,
            bbox=_bbox(geometry),
            bands=bands,
            categorical=categorical,
        )


def _write_thumbnail(
    data: np.ndarray, nodata: float | None, colormap: dict[int, Any] | None, dst: Path
) -> None:
    """A PNG preview at most 256 px wide: a class map in its own colours, one band in grey
    (2-98 % stretch), three or more as RGB from the first three."""
    step = max(1, -(-max(data.shape[1:]) // THUMBNAIL_SIZE))
    count = 3 if data.shape[0] >= 3 else 1
    data = data[:count, ::step, ::step]
    shape = data.shape[1:]
    valid = np.logical_and.reduce([_valid(band, nodata) for band in data])
    if colormap is not None:
        if nodata is not None and 0 <= nodata < 256:  # nodata shows as transparent
            colormap = {**colormap, int(nodata): (0, 0, 0, 0)}
        dst.write_bytes(png_bytes(np.clip(data[0], 0, 255).astype("uint8")[None], colormap))
        return
    out = np.zeros((4, *shape), dtype="uint8")
    for n in range(count):
        values = data[n][valid][::4]  # a sample is enough for a stretch
        low, high = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        scaled = (data[n].astype("float32") - low) / ((high - low) or 1.0) * 255
        out[n] = np.clip(np.nan_to_num(scaled), 0, 255).astype("uint8")
    if count == 1:
        out[1] = out[2] = out[0]
    out[3] = np.where(valid, 255, 0)
    dst.write_bytes(png_bytes(out))
