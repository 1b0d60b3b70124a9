"""Tile grids with stable ids: a tile keeps its id across AOIs and re-runs.

``tiles_for(grid, aoi)`` gives the tiles of a named grid that intersect an AOI;
``load_aoi`` reads an AOI from a file, a GeoJSON geometry or a bbox;
``join_attributes`` adds per-tile columns from a CSV or Parquet table.
"""

from __future__ import annotations

from typing import Protocol

from shapely.geometry.base import BaseGeometry

from catalog_service.grids.aoi import join_attributes, load_aoi, order_tiles
from catalog_service.grids.eea import EeaGrid
from catalog_service.grids.tiles import TileSet
from catalog_service.grids.utm import UtmGrid

__all__ = ["GRIDS", "TileSet", "join_attributes", "load_aoi", "order_tiles", "tiles_for"]


class Grid(Protocol):
    name: str

    def tiles(self, aoi: BaseGeometry) -> TileSet: ...


GRIDS: dict[str, Grid] = {
    "utm-10km": UtmGrid("utm-10km", 10_000),
    "utm-20km": UtmGrid("utm-20km", 20_000),
    "utm-100km": UtmGrid("utm-100km", 100_000),
    "eea-10km": EeaGrid("eea-10km", 10_000),
    "eea-20km": EeaGrid("eea-20km", 20_000),
    "eea-100km": EeaGrid("eea-100km", 100_000),
}


def tiles_for(grid: str, aoi: BaseGeometry) -> TileSet:
    """The tiles of ``grid`` that intersect ``aoi`` (WGS84), sorted by id."""
    try:
        chosen = GRIDS[grid]
    except KeyError:
        raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}") from None
    return chosen.tiles(aoi)
