"""One raster file: made a COG when it is not one, described for its STAC item
(projection, per-band type, nodata and statistics) and previewed as a small PNG; its
checks before any of that (raster_checks.py ``check``: the header only, no pixel) have
passed when these functions run."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

from catalog_service.palette import palette_png
from catalog_service.remote_text import inert
from ingest.errors import IngestError
from ingest.limits import MIN_RASTER_BYTES

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
# What a conversion writes (rio-cogeo's deflate profile): 512 px tiles, pixel-interleaved;
# cog_translate reads a 512 x 512 window of every band at once. Larger rasters need
# internal overviews to count as COGs (cog_validate's own threshold).
COG_TILE = 512
EDGE_POINTS = 5  # per footprint edge: a straight UTM edge bends little over a quarter of a tile
# Converted in memory up to this size (rio-cogeo decides by pixel count alone, which lets
# 16 float64 bands of 10,980 px squared take 15 GB of RAM); larger ones go through a
# temporary file beside the output.
IN_MEMORY_BYTES = MIN_RASTER_BYTES
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


def sample_bytes(dtype: str) -> int:
    if dtype == "complex_int16":  # GDAL's CInt16, unknown to numpy
        return 4
    try:
        return int(np.dtype(dtype).itemsize)
    except TypeError:
        return 16  # whatever it is, no sample type is larger


def shown(text: object) -> str:
    return inert(text, SHOWN_CHARS)


def open_geotiff(path: Path) -> Any:
    # GeoTIFF only: GDAL would open a VRT or another format's file that names other
    # files or URLs to read, and a product is a GeoTIFF anyway.
    try:
        return rasterio.open(path, driver="GTiff")
    except (RasterioError, CPLE_BaseError) as exc:
        raise IngestError(f"{shown(path.name)}: not a readable raster ({shown(exc)})") from exc


def is_categorical(src: Any) -> bool:
    """A class map: integer bands with a colour table (how openEO and GDAL mark them)."""
    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        return False
    try:
        return bool(src.colormap(1))
    except ValueError:  # no colour table
        return False


def is_valid_cog(src: Any, path: Path) -> bool:
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
    with open_geotiff(src_path) as src:
        resampling: Literal["mode", "average"] = "mode" if is_categorical(src) else "average"
        nodata = src.nodata
        sample = max(sample_bytes(dtype) for dtype in src.dtypes)
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
            f"{shown(src_path.name)}: conversion to COG failed ({shown(exc)})"
        ) from exc


def footprint(src: Any) -> dict[str, Any]:
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
    with open_geotiff(path) as src:
        try:
            data = src.read(out_shape=(src.count, *_overview_shape(src, STATS_MAX_SIZE)))
        except (RasterioError, CPLE_BaseError) as exc:
            raise IngestError(f"{shown(path.name)}: unreadable pixels ({shown(exc)})") from exc
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
            name = shown(description) if description else None
            bands.append(Band(src.dtypes[n], src.nodatavals[n], stats, name))
        epsg = src.crs.to_epsg()
        geometry = footprint(src)
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
        dst.write_bytes(palette_png(np.clip(data[0], 0, 255).astype("uint8"), colormap))
        return
    out = np.zeros((3, *shape), dtype="uint8")
    for n in range(count):
        values = data[n][valid][::4]  # a sample is enough for a stretch
        low, high = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        scaled = (data[n].astype("float32") - low) / ((high - low) or 1.0) * 255
        out[n] = np.clip(np.nan_to_num(scaled), 0, 255).astype("uint8")
    if count == 1:
        out[1] = out[2] = out[0]
    alpha = np.where(valid, 255, 0).astype("uint8")
    # Imported here: rio-tiler takes ~0.5 s to import, which every CLI command would pay.
    from rio_tiler.utils import render

    dst.write_bytes(render(out, mask=alpha, img_format="PNG"))
