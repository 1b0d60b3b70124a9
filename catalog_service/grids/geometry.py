"""Vectorised geometry helpers shared by the grids: projected squares to WGS84 footprints."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

# Points per square edge. A projected grid line is slightly curved in lon/lat; 4 segments
# per edge keep the footprint within centimetres of the exact cell for 100 km squares.
EDGE_SEGMENTS = 4


@lru_cache(maxsize=256)
def transformer(src_epsg: int, dst_epsg: int) -> Transformer:
    return Transformer.from_crs(src_epsg, dst_epsg, always_xy=True)


def project(geometry: BaseGeometry, src_epsg: int, dst_epsg: int) -> BaseGeometry:
    t = transformer(src_epsg, dst_epsg)
    return shapely.transform(geometry, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def square_rings(
    minx: npt.NDArray[np.float64], miny: npt.NDArray[np.float64], size: float
) -> npt.NDArray[np.float64]:
    """Closed, densified rings (n, 4*EDGE_SEGMENTS+1, 2) of squares with lower-left corners
    (minx, miny), counter-clockwise."""
    steps = np.linspace(0.0, 1.0, EDGE_SEGMENTS, endpoint=False)
    # Unit square perimeter, counter-clockwise from the lower-left corner.
    ux = np.concatenate([steps, np.ones_like(steps), 1 - steps, np.zeros_like(steps), [0.0]])
    uy = np.concatenate([np.zeros_like(steps), steps, np.ones_like(steps), 1 - steps, [0.0]])
    xs = minx[:, None] + ux[None, :] * size
    ys = miny[:, None] + uy[None, :] * size
    return np.stack([xs, ys], axis=-1)


def footprints(
    minx: npt.NDArray[np.float64], miny: npt.NDArray[np.float64], size: float, epsg: int
) -> npt.NDArray[np.object_]:
    """WGS84 polygons of projected squares."""
    rings = square_rings(minx, miny, size)
    shape = rings.shape
    lon, lat = transformer(epsg, 4326).transform(rings[..., 0].ravel(), rings[..., 1].ravel())
    coords = np.stack([np.asarray(lon), np.asarray(lat)], axis=-1).reshape(shape)
    return shapely.polygons(coords)  # type: ignore[no-any-return]


def candidate_cells(
    area: BaseGeometry, size: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Lower-left corners of the grid squares (aligned on multiples of ``size``) that
    intersect ``area``, which is in the grid's projected CRS."""
    if area.is_empty:
        empty = np.zeros(0)
        return empty, empty
    minx, miny, maxx, maxy = area.bounds
    xs = np.arange(np.floor(minx / size), np.floor(maxx / size) + 1) * size
    ys = np.arange(np.floor(miny / size), np.floor(maxy / size) + 1) * size
    mx, my = np.meshgrid(xs, ys, indexing="xy")
    gx, gy = mx.ravel(), my.ravel()
    boxes = shapely.box(gx, gy, gx + size, gy + size)
    shapely.prepare(area)
    keep = shapely.intersects(area, boxes)
    # A square that only shares an edge with the area has no part of it to process.
    keep[keep] = ~shapely.touches(area, boxes[keep])
    return gx[keep], gy[keep]
