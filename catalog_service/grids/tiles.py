"""A set of grid tiles held column-wise, so a million tiles stay cheap to build and filter."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely


@dataclass
class TileSet:
    """Tiles of one grid. Every column has one entry per tile, in processing order."""

    grid: str
    ids: npt.NDArray[np.str_]
    codes: npt.NDArray[np.str_]
    epsg: npt.NDArray[np.int64]
    native_bbox: npt.NDArray[np.float64]  # (n, 4): minx, miny, maxx, maxy in the tile's CRS
    footprints: npt.NDArray[np.object_]  # shapely polygons in WGS84
    extra: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> TileSet:
        return TileSet(
            self.grid,
            self.ids[index],
            self.codes[index],
            self.epsg[index],
            self.native_bbox[index],
            self.footprints[index],
            {name: column[index] for name, column in self.extra.items()},
        )

    @classmethod
    def concat(cls, grid: str, parts: Sequence[TileSet]) -> TileSet:
        parts = [p for p in parts if len(p)]  # an empty set has no extra columns
        if not parts:
            return cls.empty(grid)
        names = set(parts[0].extra)
        return cls(
            grid,
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.epsg for p in parts]),
            np.concatenate([p.native_bbox for p in parts]),
            np.concatenate([p.footprints for p in parts]),
            {n: np.concatenate([p.extra[n] for p in parts]) for n in names},
        )

    @classmethod
    def empty(cls, grid: str) -> TileSet:
        return cls(
            grid,
            np.array([], dtype=str),
            np.array([], dtype=str),
            np.array([], dtype=np.int64),
            np.zeros((0, 4)),
            np.array([], dtype=object),
        )

    def sorted_by_id(self) -> TileSet:
        return self.take(np.argsort(self.ids, kind="stable"))

    def properties(self) -> Iterator[dict[str, Any]]:
        """Per-tile STAC properties: grid, projection and (where they apply) mgrs fields.

        ``spatial_extent`` is the exact native bbox in the openEO form, so each job can
        be cut pixel-perfectly in the tile's own CRS.
        """
        bboxes = self.native_bbox.tolist()
        extra_lists = {name: column.tolist() for name, column in self.extra.items()}
        for n, (code, epsg, bbox) in enumerate(
            zip(self.codes.tolist(), self.epsg.tolist(), bboxes, strict=True)
        ):
            props: dict[str, Any] = {
                "grid:code": code,
                "proj:code": f"EPSG:{epsg}",
                "proj:bbox": bbox,
                "spatial_extent": {
                    "west": bbox[0],
                    "south": bbox[1],
                    "east": bbox[2],
                    "north": bbox[3],
                    "crs": epsg,
                },
            }
            for name, values in extra_lists.items():
                value = values[n]
                if value is not None and value == value:  # drop None and NaN
                    props[name] = value
            yield props

    def geometries(self) -> Iterator[tuple[dict[str, Any], list[float]]]:
        """(GeoJSON geometry, bbox) per tile, WGS84."""
        bounds = shapely.bounds(self.footprints).tolist()
        rings = shapely.get_coordinates(shapely.get_exterior_ring(self.footprints))
        counts = shapely.get_num_coordinates(shapely.get_exterior_ring(self.footprints))
        ends = np.cumsum(counts)
        coords = np.round(rings, 7).tolist()
        start = 0
        for end, bbox in zip(ends.tolist(), bounds, strict=True):
            yield {"type": "Polygon", "coordinates": [coords[start:end]]}, bbox
            start = end
