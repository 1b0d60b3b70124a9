"""Areas of interest in, per-tile attributes and processing order on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from catalog_service.grids.tiles import TileSet


class AoiError(ValueError):
    """The AOI could not be read."""


def _from_geojson(obj: dict[str, Any]) -> BaseGeometry:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = [_from_geojson(f) for f in obj.get("features", [])]
        return shapely.GeometryCollection(features)
    if kind == "Feature":
        return _from_geojson(obj.get("geometry") or {})
    try:
        return shape(obj)
    except Exception as exc:
        raise AoiError(f"not a GeoJSON geometry, Feature or FeatureCollection: {exc}") from exc


def _parse_bbox(text: str) -> BaseGeometry | None:
    parts = text.split(",")
    if len(parts) != 4:
        return None
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        return None
    if not (west < east and south < north and south >= -90 and north <= 90):
        raise AoiError(f"bbox {text!r} must be west,south,east,north in degrees with west<east")
    return box(west, south, east, north)


def parse_geometry(spec: str | dict[str, Any] | BaseGeometry) -> BaseGeometry:
    """A geometry in WGS84 from a geometry, a GeoJSON object or text, or a
    ``west,south,east,north`` bbox (as given: not repaired, see ``areas``)."""
    if isinstance(spec, BaseGeometry):
        return spec
    if isinstance(spec, dict):
        return _from_geojson(spec)
    text = spec.strip()
    bbox = _parse_bbox(text)
    if bbox is not None:
        return bbox
    if text.startswith("{"):
        try:
            return _from_geojson(json.loads(text))
        except json.JSONDecodeError as exc:
            raise AoiError(f"AOI is not valid JSON: {exc}") from exc
    raise AoiError(
        f"AOI {text!r} is neither a file nor a bbox (west,south,east,north) nor a GeoJSON "
        "geometry nor a named area (eu27, country:BE,NL)"
    )


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise AoiError(f"attribute table {path} must be .csv or .parquet")


def join_attributes(tiles: TileSet, table: pd.DataFrame, key: str = "tile_id") -> TileSet:
    """Add the table's columns to the tiles whose id equals the table's ``key`` column.

    Tiles absent from the table get no value (the property is left out)."""
    if key not in table.columns:
        raise AoiError(f"attribute table has no {key!r} column (columns: {list(table.columns)})")
    indexed = table.drop_duplicates(subset=key, keep="last").set_index(key)
    indexed.index = indexed.index.astype(str)
    aligned = indexed.reindex(pd.Index(tiles.ids))
    extra = dict(tiles.extra)
    for column in aligned.columns:
        if column == key:
            continue
        values = aligned[column].to_numpy(dtype=object)
        extra[str(column)] = np.array(
            [v.item() if isinstance(v, np.generic) else v for v in values], dtype=object
        )
    return TileSet(
        tiles.grid, tiles.ids, tiles.codes, tiles.epsg, tiles.native_bbox, tiles.footprints, extra
    )


def order_tiles(tiles: TileSet, order_by: str | None) -> TileSet:
    """Sort by an attribute (``-name`` for descending), ties and missing values by id."""
    if not order_by:
        return tiles
    descending = order_by.startswith("-")
    name = order_by.lstrip("-")
    if name not in tiles.extra:
        raise AoiError(
            f"cannot order by {name!r}: tiles have {sorted(tiles.extra) or 'no'} columns"
        )
    values = pd.to_numeric(pd.Series(tiles.extra[name]), errors="coerce")
    frame = pd.DataFrame({"v": values, "id": tiles.ids})
    frame = frame.sort_values(
        ["v", "id"], ascending=[not descending, True], na_position="last", kind="stable"
    )
    return tiles.take(frame.index.to_numpy())
