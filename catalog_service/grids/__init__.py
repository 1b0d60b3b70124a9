"""Tile grids with stable ids: a tile keeps its id across AOIs and re-runs.

``tiles_for(grid, aoi)`` gives the tiles of a named grid that intersect an AOI;
``load_aoi`` reads an AOI from a file, a named area, a GeoJSON geometry or a bbox, and
``fit_area`` makes it fit for a grid (parts repaired, parts the grid cannot hold dropped);
``join_attributes`` adds per-tile columns from a CSV or Parquet table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from shapely.geometry.base import BaseGeometry

from catalog_service.grids.aoi import AoiError, join_attributes, order_tiles
from catalog_service.grids.areas import FittedArea, fit, load_aoi, read_parts
from catalog_service.grids.eea import EeaGrid
from catalog_service.grids.tiles import TileSet
from catalog_service.grids.utm import UtmGrid

__all__ = [
    "GRIDS",
    "FittedArea",
    "TileSet",
    "fit_area",
    "join_attributes",
    "load_aoi",
    "order_tiles",
    "tiles_for",
]


class Grid(Protocol):
    name: str
    area_of_use: BaseGeometry  # lon/lat box where the grid's projection is defined

    def tiles(self, aoi: BaseGeometry) -> TileSet: ...


GRIDS: dict[str, Grid] = {
    "utm-10km": UtmGrid("utm-10km", 10_000),
    "utm-20km": UtmGrid("utm-20km", 20_000),
    "utm-100km": UtmGrid("utm-100km", 100_000),
    "eea-10km": EeaGrid("eea-10km", 10_000),
    "eea-20km": EeaGrid("eea-20km", 20_000),
    "eea-100km": EeaGrid("eea-100km", 100_000),
}


def _grid(name: str) -> Grid:
    try:
        return GRIDS[name]
    except KeyError:
        raise AoiError(f"unknown grid {name!r}; choose one of {', '.join(GRIDS)}") from None


def tiles_for(grid: str, aoi: BaseGeometry) -> TileSet:
    """The tiles of ``grid`` that intersect ``aoi`` (WGS84), sorted by id."""
    return _grid(grid).tiles(aoi)


def fit_area(grid: str, spec: str | Path | dict[str, Any] | BaseGeometry) -> FittedArea:
    """The AOI ``spec`` (see ``read_parts``) repaired part by part, without the parts
    ``grid``'s projection cannot represent."""
    return fit(read_parts(spec), _grid(grid).area_of_use)
