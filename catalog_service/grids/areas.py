"""Areas of interest as they come from the wild, made fit for a grid.

A country file is a union of many parts (islands, exclaves, overseas regions), some with
invalid rings. Each part is repaired on its own (``make_valid``) before anything is
combined, so one bad outline cannot break the union; parts outside the area a grid's
projection can represent are dropped (and named), parts reaching beyond it are clipped,
rather than folded into nonsense tiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from catalog_service.grids import named
from catalog_service.grids.aoi import AoiError, parse_geometry
from catalog_service.grids.geometry import project
from catalog_service.grids.parts import Part, split_parts

# An equal-area projection valid worldwide, for areas in km².
_EQUAL_AREA = 6933
# Columns that name a feature in common boundary files, most telling first.
_LABEL_COLUMNS = ("name", "NAME", "ADMIN", "NAME_EN", "name_en", "A3", "ISO_A3", "iso_a3", "id")


@dataclass(frozen=True)
class LeftOut:
    """A part dropped (or the piece of a part clipped) because the grid cannot hold it."""

    label: str
    where: str
    area_km2: float


@dataclass
class FittedArea:
    """An AOI ready to be cut into a grid's tiles, with what was done to get there."""

    geometry: BaseGeometry
    parts: int
    repaired: list[str] = field(default_factory=list)
    dropped: list[LeftOut] = field(default_factory=list)
    clipped: list[LeftOut] = field(default_factory=list)

    def area_km2(self) -> float:
        return area_km2(self.geometry)

    def notes(self, grid: str) -> list[str]:
        """What a person should know about how the AOI was changed, one line each."""
        lines = []
        if self.repaired:
            lines.append(
                f"repaired {len(self.repaired)} invalid outline(s) part by part: "
                + ", ".join(self.repaired)
            )
        lines += [
            f"dropped {p.label} near {p.where} ({p.area_km2:,.0f} km²): outside the area "
            f"{grid} can represent"
            for p in self.dropped
        ]
        lines += [
            f"clipped {p.label} near {p.where}: {p.area_km2:,.0f} km² lie outside the area "
            f"{grid} can represent"
            for p in self.clipped
        ]
        return lines


def area_km2(geometry: BaseGeometry) -> float:
    return float(project(geometry, 4326, _EQUAL_AREA).area) / 1e6


def _where(geometry: BaseGeometry) -> str:
    point = geometry.representative_point()
    lon, lat = point.x, point.y
    return f"{abs(lon):.1f}°{'W' if lon < 0 else 'E'} {abs(lat):.1f}°{'S' if lat < 0 else 'N'}"


def repaired(geometry: BaseGeometry) -> BaseGeometry:
    """A valid geometry of the same kind: rings that cross themselves are split at the
    crossings; polygons keep only their polygonal pieces (no collapsed slivers)."""
    if geometry.is_valid:
        return geometry
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    return shapely.make_valid(geometry)


def _label_column(columns: list[str]) -> str | None:
    return next((c for c in _LABEL_COLUMNS if c in columns), None)


def read_parts(spec: str | Path | dict[str, Any] | BaseGeometry) -> list[Part]:
    """The parts of an AOI given as a named area (``eu27``, ``country:BE,NL``), a vector
    file GDAL reads, GeoJSON (text or object), a bbox or a geometry."""
    if isinstance(spec, str) and named.is_named(spec):
        return named.parts(spec)
    if isinstance(spec, Path):
        return _file_parts(spec)
    if isinstance(spec, str) and not spec.lstrip().startswith("{") and Path(spec).is_file():
        return _file_parts(Path(spec))
    if isinstance(spec, dict) and spec.get("type") == "FeatureCollection":
        out: list[Part] = []
        for n, feature in enumerate(spec.get("features") or [], 1):
            out += split_parts(f"feature {n}", parse_geometry(feature))
        return out
    return split_parts("the AOI", parse_geometry(spec))


def _file_parts(path: Path) -> list[Part]:
    import geopandas as gpd

    try:
        frame = gpd.read_file(path)
    except Exception as exc:
        raise AoiError(f"cannot read {path} as a vector file: {exc}") from exc
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    column = _label_column(list(frame.columns))
    out: list[Part] = []
    for n, (geometry, label) in enumerate(
        zip(frame.geometry.values, frame[column] if column else [None] * len(frame), strict=True),
        1,
    ):
        if geometry is None or geometry.is_empty:
            continue
        out += split_parts(str(label) if label is not None else f"feature {n}", geometry)
    if not out:
        raise AoiError(f"{path} holds no geometry")
    return out


WORLD = box(-180, -90, 180, 90)


def area_of_use(epsg: int) -> BaseGeometry:
    """Where a projection is defined, as the EPSG registry says (lon/lat box)."""
    bounds = CRS.from_epsg(epsg).area_of_use
    if bounds is None:
        return WORLD
    return box(bounds.west, bounds.south, bounds.east, bounds.north)


def fit(parts: list[Part], area_of_use: BaseGeometry) -> FittedArea:
    """Repair each part, drop those outside ``area_of_use``, clip those across its edge,
    then combine them."""
    if not parts:
        raise AoiError("the AOI is empty")
    result = FittedArea(geometry=shapely.Polygon(), parts=len(parts))
    kept: list[BaseGeometry] = []
    shapely.prepare(area_of_use)
    for part in parts:
        geometry = part.geometry
        if not geometry.is_valid:
            geometry = repaired(geometry)
            result.repaired.append(part.label)
        if geometry.is_empty:
            continue
        if not area_of_use.intersects(geometry):
            result.dropped.append(LeftOut(part.label, _where(geometry), area_km2(geometry)))
            continue
        if not area_of_use.contains(geometry):
            outside = geometry.difference(area_of_use)
            geometry = geometry.intersection(area_of_use)
            if not outside.is_empty and outside.area > 0:
                result.clipped.append(LeftOut(part.label, _where(outside), area_km2(outside)))
        kept.append(geometry)
    if not kept:
        raise AoiError(
            "no part of the AOI lies where the grid is defined: "
            + "; ".join(f"{p.label} near {p.where}" for p in result.dropped[:10])
        )
    try:
        result.geometry = shapely.union_all(np.array(kept, dtype=object))
    except shapely.errors.GEOSException as exc:
        raise AoiError(f"the AOI's parts could not be combined: {exc}") from exc
    if result.geometry.is_empty:
        raise AoiError("the AOI is empty")
    return result


def load_aoi(spec: str | Path | dict[str, Any] | BaseGeometry) -> BaseGeometry:
    """An AOI in WGS84, repaired part by part, from anything ``read_parts`` reads."""
    return fit(read_parts(spec), WORLD).geometry
