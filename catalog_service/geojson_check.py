"""Whether GeoJSON geometries can be stored: the structure (types, positions of 2 or 3
finite numbers, one dimension per geometry, closed rings of at least four positions,
longitudes and latitudes in range) and then validity (no self-intersection), with the
reason when not. Checked on every write path: items, tiles, campaign areas.

Many tiles are checked at once: single-ring polygons of equal ring length (every grid's
cells) go through shapely in one vectorised call."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape

# How deep positions sit in each type's coordinates.
_DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}


class _Bad(Exception):
    pass


def _position(value: Any, dims: set[int]) -> None:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise _Bad("a position is a list of 2 or 3 numbers")
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _Bad("coordinates must be numbers")
        if not math.isfinite(number):
            raise _Bad("coordinates must be finite (no NaN or Infinity)")
    lon, lat = value[0], value[1]
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise _Bad(f"position {value[:2]} is outside longitude [-180, 180], latitude [-90, 90]")
    dims.add(len(value))


def _walk(kind: str, value: Any, depth: int, dims: set[int]) -> None:
    if depth == 0:
        _position(value, dims)
        return
    if not isinstance(value, list):
        raise _Bad(f"{kind} coordinates are nested lists")
    if depth == 1 and kind in ("Polygon", "MultiPolygon"):  # a ring
        if len(value) < 4:
            raise _Bad("a polygon ring needs at least 4 positions")
        if value[0] != value[-1]:
            raise _Bad("a polygon ring must be closed (last position = first)")
    if depth == 1 and kind in ("LineString", "MultiLineString") and len(value) < 2:
        raise _Bad("a line needs at least 2 positions")
    if kind == "Polygon" and depth == 2 and not value:
        raise _Bad("a polygon needs at least one ring")
    for part in value:
        _walk(kind, part, depth - 1, dims)


def structure_problem(geometry: Any) -> str | None:
    """Why ``geometry`` is not well-formed GeoJSON in longitude/latitude, or None."""
    if not isinstance(geometry, dict):
        return "a geometry is a GeoJSON object"
    kind = geometry.get("type")
    try:
        if kind == "GeometryCollection":
            parts = geometry.get("geometries")
            if not isinstance(parts, list) or not parts:
                raise _Bad("a GeometryCollection needs geometries")
            for part in parts:
                if isinstance(part, dict) and part.get("type") == "GeometryCollection":
                    # PostGIS stores it but cannot write it back as GeoJSON: the item
                    # would fail every read (RFC 7946 3.1.8 advises against it too).
                    raise _Bad("a GeometryCollection may not contain another one")
                problem = structure_problem(part)
                if problem:
                    raise _Bad(problem)
            return None
        if kind not in _DEPTH:
            raise _Bad(f"unknown geometry type {kind!r}")
        dims: set[int] = set()
        _walk(kind, geometry.get("coordinates"), _DEPTH[kind], dims)
        if len(dims) > 1:
            raise _Bad("all positions of a geometry have the same dimension (2D or 3D)")
    except _Bad as exc:
        return str(exc)
    except RecursionError:
        return "the geometry is nested too deeply"
    return None


def problems(geometries: Sequence[Any]) -> dict[int, str]:
    """Index -> reason for every geometry that cannot be stored."""
    found: dict[int, str] = {}
    rings: dict[int, list[int]] = defaultdict(list)  # ring length -> indexes
    others: list[int] = []
    for n, geometry in enumerate(geometries):
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if (
            isinstance(coords, list)
            and geometry.get("type") == "Polygon"
            and len(coords) == 1
            and isinstance(coords[0], list)
        ):
            rings[len(coords[0])].append(n)
        else:
            others.append(n)
    for indexes in rings.values():
        ring_found, unchecked = _ring_problems(geometries, indexes)
        found.update(ring_found)
        others.extend(unchecked)
    for n in others:
        problem = structure_problem(geometries[n])
        if problem is None:
            geometry = shape(geometries[n])
            if not geometry.is_valid:
                problem = _reason(shapely.is_valid_reason(geometry))
        if problem:
            found[n] = problem
    return found


def _ring_problems(
    geometries: Sequence[Any], indexes: list[int]
) -> tuple[dict[int, str], list[int]]:
    """Single-ring polygons of one ring length, checked as one array: the problems
    found, and the indexes left to check one by one (mixed or malformed input)."""
    try:
        coords = np.array([geometries[n]["coordinates"][0] for n in indexes])
    except (ValueError, TypeError):
        coords = np.empty(0)
    if coords.ndim != 3 or coords.dtype.kind not in "fi" or coords.shape[2] not in (2, 3):
        return {}, indexes
    found: dict[int, str] = {}
    if coords.shape[1] < 4:
        return dict.fromkeys(indexes, "a polygon ring needs at least 4 positions"), []
    flat = coords.reshape(len(indexes), -1)
    lon, lat = coords[:, :, 0], coords[:, :, 1]
    bad = ~np.isfinite(flat).all(axis=1)
    for position in np.flatnonzero(bad):
        found[indexes[position]] = "coordinates must be finite (no NaN or Infinity)"
    outside = ~bad & ~((np.abs(lon) <= 180) & (np.abs(lat) <= 90)).all(axis=1)
    for position in np.flatnonzero(outside):
        found[indexes[position]] = "a position is outside longitude [-180, 180], latitude [-90, 90]"
    open_ring = ~(coords[:, 0, :] == coords[:, -1, :]).all(axis=1)
    for position in np.flatnonzero(open_ring & ~bad & ~outside):
        found[indexes[position]] = "a polygon ring must be closed (last position = first)"
    fine = np.flatnonzero(~bad & ~outside & ~open_ring)
    polygons = shapely.polygons(shapely.linearrings(coords[fine, :, :2]))
    for position in np.flatnonzero(~shapely.is_valid(polygons)):
        reason = shapely.is_valid_reason(polygons[position])
        found[indexes[fine[position]]] = _reason(reason)
    return found, []


def _reason(text: str) -> str:
    return f"the geometry is not valid: {text}"


def problem(geometry: Any) -> str | None:
    """Why one geometry cannot be stored, or None."""
    return problems([geometry]).get(0)
