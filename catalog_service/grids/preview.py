"""A picture of a campaign before it exists: its tiles over the AOI's outlines (a palette
PNG written by GDAL's PNG driver)."""

from __future__ import annotations

import math

import numpy as np
import shapely
from rasterio.features import rasterize
from rasterio.transform import from_bounds
from shapely.geometry.base import BaseGeometry

from catalog_service.grids.tiles import TileSet
from catalog_service.palette import palette_png

BACKGROUND, TILE, TILE_EDGE, OUTLINE = 0, 1, 2, 3
PALETTE = {
    BACKGROUND: (255, 255, 255, 255),
    TILE: (166, 206, 227, 255),
    TILE_EDGE: (31, 120, 180, 255),
    OUTLINE: (40, 40, 40, 255),
}
# Tile edges are drawn only when a tile is at least this many pixels wide.
MIN_EDGE_PX = 6


def preview_png(tiles: TileSet, aoi: BaseGeometry, width: int = 1000) -> bytes:
    """Tiles (filled, with edges when they are large enough to see) and the AOI's
    outline, in lon/lat scaled by the cosine of the middle latitude."""
    footprints = list(tiles.footprints)
    boxes = np.array(
        [aoi.bounds, *([shapely.total_bounds(tiles.footprints)] if footprints else [])]
    )
    west, south = boxes[:, 0].min(), boxes[:, 1].min()
    east, north = boxes[:, 2].max(), boxes[:, 3].max()
    margin = 0.02 * max(east - west, north - south, 1e-6)
    west, east = west - margin, east + margin
    south, north = max(south - margin, -90.0), min(north + margin, 90.0)
    aspect = max(math.cos(math.radians((south + north) / 2)), 0.05)
    height = max(1, round(width * (north - south) / ((east - west) * aspect)))
    if height > 4 * width:  # a very tall area: keep the picture a sane size
        width, height = max(1, width * width * 4 // height), 4 * width
    transform = from_bounds(west, south, east, north, width, height)
    shapes: list[tuple[BaseGeometry, int]] = [(f, TILE) for f in footprints]
    spans = shapely.bounds(tiles.footprints)
    tile_px = width * float((spans[:, 2] - spans[:, 0]).mean()) / (east - west) if footprints else 0
    if tile_px >= MIN_EDGE_PX:
        shapes += [(f.exterior, TILE_EDGE) for f in footprints]
    shapes.append((aoi.boundary, OUTLINE))
    pixels = rasterize(
        shapes, out_shape=(height, width), transform=transform, fill=BACKGROUND, dtype="uint8"
    )
    return palette_png(pixels, PALETTE)
