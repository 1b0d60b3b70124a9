"""UTM grids named after MGRS 100 km squares (the Sentinel-2 tiling convention).

``utm-100km`` cells are the MGRS 100 km squares themselves (``31UFS``); ``utm-20km`` and
``utm-10km`` split each square 5x5 or 10x10 and append the column and row inside it,
counted from the south-west corner: ``31UFS_1_1`` (the EU27 crop map's naming).

Each tile lives in exactly one UTM zone: the one holding its centre. Zones are the
standard 6-degree zones (the Norway/Svalbard exceptions are not applied), and a tile
keeps its zone's CRS as ``proj:code`` with its exact native bbox.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from catalog_service.grids.geometry import candidate_cells, footprints, project, transformer
from catalog_service.grids.tiles import TileSet

SQUARE_M = 100_000.0
_COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # indexed by zone % 3
_ROW_LETTERS = np.array(list("ABCDEFGHJKLMNPQRSTUV"))
_BAND_LETTERS = np.array(list("CDEFGHJKLMNPQRSTUVWX"))
# Enough margin around a zone that every cell whose centre is inside it is generated,
# even at 84 degrees north where a degree of longitude is ~12 km.
_LON_MARGIN = 3.0
_LAT_MARGIN = 1.5


def utm_epsg(zone: int, north: bool) -> int:
    return (32600 if north else 32700) + zone


def latitude_band(lat: npt.NDArray[np.float64]) -> npt.NDArray[np.str_]:
    index = np.clip(np.floor((lat + 80.0) / 8.0).astype(int), 0, 19)  # X spans 72-84
    return _BAND_LETTERS[index]  # type: ignore[no-any-return]


def square_letters(
    zone: int, easting: npt.NDArray[np.float64], northing: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    """MGRS 100 km column and row letters (AA scheme, WGS84) from the square's corner.

    ``northing`` is the false-northed value (southern hemisphere + 10,000 km), as MGRS uses.
    """
    columns = np.array(list(_COLUMN_SETS[zone % 3]))
    col = columns[(np.floor(easting / SQUARE_M).astype(int) - 1) % 8]
    offset = 5 if zone % 2 == 0 else 0
    row = _ROW_LETTERS[(np.floor(northing / SQUARE_M).astype(int) + offset) % 20]
    return col, row


class UtmGrid:
    """MGRS-named UTM cells of ``size_m`` (a divisor of 100 km)."""

    def __init__(self, name: str, size_m: int) -> None:
        if 100_000 % size_m:
            raise ValueError("UTM cell size must divide 100 km")
        self.name = name
        # The UTM zones reach from 80S to 84N (beyond: the polar stereographic grids).
        self.area_of_use = box(-180, -80, 180, 84)
        self.size = float(size_m)
        self.split = 100_000 // size_m

    def tiles(self, aoi: BaseGeometry) -> TileSet:
        """Every cell that intersects ``aoi`` (WGS84), in id order."""
        minlon, minlat, maxlon, maxlat = aoi.bounds
        parts = []
        first = int(np.floor((max(minlon, -180.0) + 180.0) / 6.0)) + 1
        last = int(np.floor((min(maxlon, 179.999999) + 180.0) / 6.0)) + 1
        for zone in range(max(first, 1), min(last, 60) + 1):
            for north in (True, False):
                if (north and maxlat < 0) or (not north and minlat >= 0):
                    continue
                parts.append(self._zone_tiles(aoi, zone, north))
        return TileSet.concat(self.name, parts).sorted_by_id()

    def _zone_tiles(self, aoi: BaseGeometry, zone: int, north: bool) -> TileSet:
        west = -180.0 + (zone - 1) * 6.0
        lat_lo, lat_hi = (0.0, 84.0) if north else (-80.0, 0.0)
        window = box(
            west - _LON_MARGIN, lat_lo - _LAT_MARGIN, west + 6.0 + _LON_MARGIN, lat_hi + _LAT_MARGIN
        )
        part = shapely.intersection(aoi, window)
        if part.is_empty:
            return TileSet.empty(self.name)
        epsg = utm_epsg(zone, north)
        # Densify before projecting so long lon/lat edges follow their true UTM path.
        native = project(shapely.segmentize(part, 0.05), 4326, epsg)
        minx, miny = candidate_cells(native, self.size)
        if not len(minx):
            return TileSet.empty(self.name)
        half = self.size / 2
        lon, lat = transformer(epsg, 4326).transform(minx + half, miny + half)
        lon, lat = np.asarray(lon), np.asarray(lat)
        # The tile belongs to the zone and hemisphere holding its centre.
        mine = (lon >= west) & (lon < west + 6.0) & ((lat >= 0) if north else (lat < 0))
        mine &= (lat >= -80.0) & (lat <= 84.0)
        minx, miny = minx[mine], miny[mine]
        if not len(minx):
            return TileSet.empty(self.name)
        # The MGRS square, and the latitude band of its centre (shared by all its cells).
        sq_e = np.floor(minx / SQUARE_M) * SQUARE_M
        sq_n = np.floor(miny / SQUARE_M) * SQUARE_M
        _, sq_lat = transformer(epsg, 4326).transform(sq_e + SQUARE_M / 2, sq_n + SQUARE_M / 2)
        band = latitude_band(np.asarray(sq_lat))
        col, row = square_letters(zone, sq_e, sq_n)
        mgrs = np.char.add(np.char.add(np.char.add(f"{zone:02d}", band), col), row)
        if self.split == 1:
            ids = mgrs
            codes = np.char.add("MGRS-", mgrs)
        else:
            i = ((minx - sq_e) // self.size).astype(int).astype(str)
            j = ((miny - sq_n) // self.size).astype(int).astype(str)
            ids = np.char.add(np.char.add(np.char.add(np.char.add(mgrs, "_"), i), "_"), j)
            codes = np.char.add(f"UTM{int(self.size) // 1000}KM-", ids)
        n = len(ids)
        return TileSet(
            self.name,
            ids,
            codes,
            np.full(n, epsg, dtype=np.int64),
            np.column_stack([minx, miny, minx + self.size, miny + self.size]),
            footprints(minx, miny, self.size, epsg),
            {
                "mgrs:utm_zone": np.full(n, zone, dtype=np.int64),
                "mgrs:latitude_band": band,
                "mgrs:grid_square": np.char.add(col, row),
            },
        )
