"""What the campaign map reads: the tiles as Mapbox vector tiles (PostGIS ST_AsMVT, so a
100,000-tile campaign is a handful of small binary tiles, not 100,000 GeoJSON features),
and the changes since a cursor (the history's sequence), so a live map fetches only what
changed."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

import asyncpg
import numpy as np

from catalog_service.png import png_bytes

LAYER = "tiles"
# Units per vector tile: 512 (not the usual 4096) is still half a screen pixel, and makes
# a 50,000-footprint tile ~30% cheaper to make and smaller to send.
EXTENT = 512
# Web Mercator tile envelope, the campaign's footprints that cross it, as one MVT layer.
_MVT = f"""
WITH bounds AS (SELECT ST_TileEnvelope($2, $3, $4) AS box)
SELECT ST_AsMVT(t, '{LAYER}', {EXTENT}, 'geom') FROM (
    SELECT i.id,
           i.content->'properties'->>'status' AS status,
           coalesce(i.content->'properties'->>'backend_name', '') AS backend,
           ST_AsMVTGeom(ST_Transform(i.geometry, 3857), bounds.box, {EXTENT}, 8, true) AS geom
    FROM pgstac.items i, bounds
    WHERE i.collection = $1
      AND i.geometry && ST_Transform(bounds.box, 4326)
) t WHERE t.geom IS NOT NULL
"""
_CURSOR = "SELECT coalesce(max(seq), 0) FROM tilekeeper.job_history WHERE collection = $1"
_CHANGES = """
SELECT h.seq, h.item_id, h.to_status,
       coalesce(i.content->'properties'->>'backend_name', '') AS backend,
       ST_AsGeoJSON(i.geometry, 6) AS geometry
FROM tilekeeper.job_history h
LEFT JOIN pgstac.items i ON i.collection = h.collection AND i.id = h.item_id
WHERE h.collection = $1 AND h.seq > $2
ORDER BY h.seq LIMIT $3
"""
MAX_CHANGES = 10_000

# Below the zoom where a campaign's tiles are a few pixels wide, the map draws them from
# raster overview tiles: one pixel block per tile in its status colour, made with numpy
# from the tiles' bounding boxes. A vector tile of 50,000 footprints costs PostGIS ~1 s
# (ST_AsMVTGeom per feature) and the browser as much to draw; this costs ~0.1 s.
OVERVIEW_SIZE = 256
MIN_VECTOR_PIXELS = 4  # a tile this wide on screen or more: drawn as a vector footprint
_SMALL = 8
# The map's colours per status (CSS names), and as RGB for the overview drawn here.
STATUS_COLOURS = {
    "not_started": "lightgrey", "creating": "gold", "queued_for_start": "gold",
    "created": "gold", "queued": "lightsteelblue", "running": "navy", "finished": "lime",
    "error": "darkred", "skipped": "darkorange", "start_failed": "red", "canceled": "grey",
}  # fmt: skip
_CSS_RGB = {
    "lightgrey": (211, 211, 211), "gold": (255, 215, 0), "lightsteelblue": (176, 196, 222),
    "navy": (0, 0, 128), "lime": (0, 255, 0), "darkred": (139, 0, 0),
    "darkorange": (255, 140, 0), "red": (255, 0, 0), "grey": (128, 128, 128),
}  # fmt: skip
STATUS_RGB = {status: _CSS_RGB[colour] for status, colour in STATUS_COLOURS.items()}
UNKNOWN_RGB = (255, 255, 255)
_BOXES = """
SELECT ST_XMin(geometry) AS w, ST_YMin(geometry) AS s, ST_XMax(geometry) AS e,
       ST_YMax(geometry) AS n, content->'properties'->>'status' AS status,
       coalesce(content->'properties'->>'backend_name', '') AS backend
FROM pgstac.items
WHERE collection = $1 AND geometry && ST_MakeEnvelope($2, $3, $4, $5, 4326)
"""
_TILE_WIDTH = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ST_XMax(geometry) - ST_XMin(geometry))
FROM (SELECT geometry FROM pgstac.items WHERE collection = $1 LIMIT 200) t
"""
_BBOX = """
SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)
FROM (SELECT ST_Extent(geometry) AS e FROM pgstac.items WHERE collection = $1) t
"""


async def extent(conn: asyncpg.Connection, campaign: str) -> list[float] | None:
    """The bounding box of the campaign's tiles (WGS84), for the map's first view."""
    row = await conn.fetchrow(_BBOX, campaign)
    return [float(v) for v in row] if row is not None and row[0] is not None else None


async def vector_tile(conn: asyncpg.Connection, campaign: str, z: int, x: int, y: int) -> bytes:
    tile: bytes | None = await conn.fetchval(_MVT, campaign, z, x, y)
    return tile or b""


async def changes(conn: asyncpg.Connection, campaign: str, since: int | None) -> dict[str, Any]:
    """Tiles whose status changed after ``since`` (their latest status each), and the new
    cursor. Without ``since``: only the cursor (a map that just drew its tiles)."""
    if since is None:
        return {"cursor": int(await conn.fetchval(_CURSOR, campaign)), "tiles": {}}
    rows = await conn.fetch(_CHANGES, campaign, since, MAX_CHANGES)
    # With its footprint: the map draws changed tiles on a layer of their own instead of
    # re-rendering every tile.
    tiles = {
        r["item_id"]: {
            "status": r["to_status"],
            "backend": r["backend"],
            "geometry": json.loads(r["geometry"]) if r["geometry"] else None,
        }
        for r in rows
    }
    cursor = rows[-1]["seq"] if rows else since
    return {"cursor": int(cursor), "tiles": tiles, "more": len(rows) == MAX_CHANGES}


async def vector_min_zoom(conn: asyncpg.Connection, campaign: str) -> int:
    """The first zoom at which the campaign's (median) tile is MIN_VECTOR_PIXELS wide."""
    width = await conn.fetchval(_TILE_WIDTH, campaign)
    if not width:
        return 0
    # Web Mercator x is linear in longitude: 256 * 2^z px for 360 degrees.
    return max(0, math.ceil(math.log2(MIN_VECTOR_PIXELS * 360 / (256 * float(width)))))


def _lon(x: int, z: int) -> float:
    return x / 2.0**z * 360.0 - 180.0


def _lat(y: int, z: int) -> float:
    return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / 2.0**z))))


def _mercator_y(lat: np.ndarray) -> np.ndarray:
    lat = np.radians(np.clip(lat, -85.05112878, 85.05112878))
    result: np.ndarray = (1 - np.log(np.tan(lat) + 1 / np.cos(lat)) / math.pi) / 2
    return result


async def overview_tile(
    conn: asyncpg.Connection,
    campaign: str,
    z: int,
    x: int,
    y: int,
    hidden_status: Collection[str] = (),
    hidden_backend: Collection[str] = (),
) -> bytes:
    """A 256 px PNG of the campaign's tiles in web mercator tile z/x/y: each tile fills
    the pixels its bounding box covers (at least one) in its status colour."""
    west, east, north, south = _lon(x, z), _lon(x + 1, z), _lat(y, z), _lat(y + 1, z)
    rows = await conn.fetch(_BOXES, campaign, west, south, east, north)
    image = np.zeros((OVERVIEW_SIZE, OVERVIEW_SIZE, 4), dtype="uint8")
    rows = [
        r for r in rows if r["status"] not in hidden_status and r["backend"] not in hidden_backend
    ]
    if rows:
        boxes = np.array([(r["w"], r["s"], r["e"], r["n"]) for r in rows], dtype="float64")
        scale = OVERVIEW_SIZE * 2**z
        left = np.floor((boxes[:, 0] + 180) / 360 * scale - x * OVERVIEW_SIZE).astype(int)
        right = np.ceil((boxes[:, 2] + 180) / 360 * scale - x * OVERVIEW_SIZE).astype(int)
        top = np.floor(_mercator_y(boxes[:, 3]) * scale - y * OVERVIEW_SIZE).astype(int)
        bottom = np.ceil(_mercator_y(boxes[:, 1]) * scale - y * OVERVIEW_SIZE).astype(int)
        colours = np.array(
            [(*STATUS_RGB.get(r["status"], UNKNOWN_RGB), 255) for r in rows], dtype="uint8"
        )
        width = np.maximum(right - left, 1)
        height = np.maximum(bottom - top, 1)
        small = (width <= _SMALL) & (height <= _SMALL)
        # Tiles a few pixels wide (what the map asks for): each pixel offset of the boxes
        # painted at once; larger ones (a client zoomed in further) one by one.
        for dy in range(int(height[small].max(initial=0))):
            for dx in range(int(width[small].max(initial=0))):
                mask = small & (width > dx) & (height > dy)
                px, py = left[mask] + dx, top[mask] + dy
                inside = (px >= 0) & (px < OVERVIEW_SIZE) & (py >= 0) & (py < OVERVIEW_SIZE)
                image[py[inside], px[inside]] = colours[mask][inside]
        for n in np.flatnonzero(~small):
            image[max(top[n], 0) : max(bottom[n], 0), max(left[n], 0) : max(right[n], 0)] = colours[
                n
            ]
    return png_bytes(np.moveaxis(image, -1, 0))
