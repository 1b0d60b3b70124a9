"""The EEA reference grid on ETRS89-LAEA (EPSG:3035).

Cells are aligned on multiples of their size from the projection's origin; codes follow
the EEA convention and the grid extension's ``EEA-`` designation: the lower-left
easting and northing divided by 10^(zeros in the cell size), e.g. ``EEA-20kmE430N320``
for the 20 km cell whose corner is (4,300,000, 3,200,000).
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from catalog_service.grids.areas import area_of_use
from catalog_service.grids.geometry import candidate_cells, footprints, project
from catalog_service.grids.tiles import TileSet

EPSG = 3035


def _zeros(size_m: int) -> int:
    zeros = 0
    while size_m % 10 == 0:
        size_m //= 10
        zeros += 1
    return zeros


class EeaGrid:
    def __init__(self, name: str, size_m: int) -> None:
        self.name = name
        self.area_of_use = area_of_use(EPSG)
        self.size = float(size_m)
        self.label = f"{size_m // 1000}km" if size_m >= 1000 else f"{size_m}m"
        self.divisor = 10 ** _zeros(size_m)

    def code(self, easting: float, northing: float) -> str:
        return f"{self.label}E{int(easting) // self.divisor}N{int(northing) // self.divisor}"

    def tiles(self, aoi: BaseGeometry) -> TileSet:
        # Beyond roughly +-90 degrees from the projection centre (10E, 52N) LAEA folds over.
        native = project(shapely.segmentize(aoi, 0.05), 4326, EPSG)
        minx, miny = candidate_cells(native, self.size)
        e = (minx.astype(np.int64) // self.divisor).astype(str)
        n = (miny.astype(np.int64) // self.divisor).astype(str)
        ids = np.char.add(np.char.add(np.char.add(f"{self.label}E", e), "N"), n)
        count = len(ids)
        return TileSet(
            self.name,
            ids,
            np.char.add("EEA-", ids),
            np.full(count, EPSG, dtype=np.int64),
            np.column_stack([minx, miny, minx + self.size, miny + self.size]),
            footprints(minx, miny, self.size, EPSG),
        ).sorted_by_id()
