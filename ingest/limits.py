"""How big a harvested file and raster may be: set in HarvestSettings, or derived from
the tile's size, so a back-end cannot make a harvest download, decode or convert more
than a tile's worth of data."""

from __future__ import annotations

from typing import Any

from pyproj import Geod
from shapely.geometry import shape

from catalog_service.settings import HarvestSettings

MIB = 1 << 20
MIN_RASTER_BYTES = 256 * MIB
# A whole Sentinel-2 granule (10,980 px square) of 16 float32 bands is ~7.2 GiB.
UNTILED_RASTER_BYTES = 8 << 30
# Derived limit: the tile at 10 m per pixel (Sentinel-2's finest), 16 bands of 8 bytes.
PIXEL_M = 10.0
BANDS = 16
SAMPLE_BYTES = 8
# A file holds its raster once, plus overviews (a third more) and headers.
FILE_OVER_RASTER = 1.5
_GEOD = Geod(ellps="WGS84")


def raster_bytes_limit(settings: HarvestSettings, tile_geometry: dict[str, Any] | None) -> int:
    """The largest raster (width x height x bands x bytes per sample) a product may be."""
    if settings.max_raster_bytes is not None:
        return settings.max_raster_bytes
    if tile_geometry is None:  # `tilekeeper ingest` of files that belong to no tile
        return UNTILED_RASTER_BYTES
    area_m2 = abs(_GEOD.geometry_area_perimeter(shape(tile_geometry))[0])
    grown = area_m2 * (1 + 2 * settings.footprint_tolerance) ** 2
    return max(MIN_RASTER_BYTES, int(grown / PIXEL_M**2 * BANDS * SAMPLE_BYTES))


def file_bytes_limit(settings: HarvestSettings, tile_geometry: dict[str, Any] | None) -> int:
    """The largest result file a harvest downloads."""
    if settings.max_file_bytes is not None:
        return settings.max_file_bytes
    return int(raster_bytes_limit(settings, tile_geometry) * FILE_OVER_RASTER)
