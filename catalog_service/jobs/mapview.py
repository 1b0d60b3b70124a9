"""What the campaign map reads: the tiles as Mapbox vector tiles (PostGIS ST_AsMVT, so a
100,000-tile campaign is a handful of small binary tiles, not 100,000 GeoJSON features),
zoomed out the same tiles gathered into cells a few pixels wide (one square per cell, in
its most frequent status), and the changes since a cursor (the history's sequence), so a
live map fetches only what changed."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

import asyncpg

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
# cell tiles: Mapbox vector tiles of squares a few pixels wide, one per cell of the tile
# with a footprint's centre in it, in its most frequent status (with the count). A vector
# tile of 50,000 footprints costs PostGIS ~1 s (ST_AsMVTGeom per feature) and the browser
# as much to draw; a cell tile is at most (256 / 4)^2 squares whatever the campaign's size
# (bench/map.py's campaign of 20,000 utm-10km tiles, its fullest zoom-4 tile, 10,600
# footprints: 54 ms and 40 kB as cells, 132 ms and 443 kB as footprints, in PostgreSQL;
# what the cells still cost is mostly reading each item's status from its content).
MIN_VECTOR_PIXELS = 4  # a tile this wide on screen or more: drawn as a vector footprint
CELL_LAYER = "cells"
CELL_EXTENT = 256  # units per cell tile: one per screen pixel
MIN_CELL = 4  # a cell's width in those units (pixels), at least
MAX_CELL = 32
# The map's colours per status (CSS names).
STATUS_COLOURS = {
    "not_started": "lightgrey", "creating": "gold", "queued_for_start": "gold",
    "created": "gold", "queued": "lightsteelblue", "running": "navy", "finished": "lime",
    "error": "darkred", "skipped": "darkorange", "start_failed": "red", "canceled": "grey",
}  # fmt: skip
# Each footprint's bounding-box centre in the tile's units from its top left corner (web
# mercator by its formula: no ST_Transform per row) and its cell (floor of units / $5),
# the tiles counted per cell and status (a hash aggregate: only cell, status and count
# are kept, no footprint's content goes through a sort), and per cell of the tile one
# square in its most frequent status (a tie: the first by name) with the cell's count.
# Statuses ($6) and back-ends ($7) the map hides are left out before counting.
_CELLS = f"""
WITH bounds AS (SELECT ST_TileEnvelope($2, $3, $4) AS box),
placed AS (
    SELECT ((ST_XMin(i.geometry) + ST_XMax(i.geometry)) / 2 + 180) / 360 * 2 ^ $2 - $3 AS fx,
           (1 - ln(tan(radians(c.lat)) + 1 / cos(radians(c.lat))) / pi()) / 2 * 2 ^ $2 - $4
               AS fy,
           i.content->'properties'->>'status' AS status
    FROM pgstac.items i, bounds,
         LATERAL (SELECT greatest(-85.0511, least(85.0511,
                      (ST_YMin(i.geometry) + ST_YMax(i.geometry)) / 2)) AS lat) c
    WHERE i.collection = $1
      AND i.geometry && ST_Transform(bounds.box, 4326)
      AND i.content->'properties'->>'status' <> ALL($6::text[])
      AND coalesce(i.content->'properties'->>'backend_name', '') <> ALL($7::text[])
),
counted AS (
    SELECT floor(fx * {CELL_EXTENT} / $5)::int AS cx, floor(fy * {CELL_EXTENT} / $5)::int AS cy,
           status, count(*)::int AS n
    FROM placed
    WHERE fx >= 0 AND fx < 1 AND fy >= 0 AND fy < 1
    GROUP BY 1, 2, 3
),
cells AS (
    SELECT DISTINCT ON (cx, cy) cx, cy, status,
           sum(counted.n) OVER (PARTITION BY cx, cy)::int AS total
    FROM counted
    ORDER BY cx, cy, counted.n DESC, status
)
SELECT ST_AsMVT(t, '{CELL_LAYER}', {CELL_EXTENT}, 'geom') FROM (
    SELECT c.status, c.total AS n,
           ST_AsMVTGeom(
               ST_MakeEnvelope(ST_XMin(b.box) + c.cx * s.m, ST_YMax(b.box) - (c.cy + 1) * s.m,
                               ST_XMin(b.box) + (c.cx + 1) * s.m, ST_YMax(b.box) - c.cy * s.m,
                               3857),
               b.box, {CELL_EXTENT}, 0, true) AS geom
    FROM cells c, bounds b,
         LATERAL (SELECT (ST_XMax(b.box) - ST_XMin(b.box)) * $5 / {CELL_EXTENT} AS m) s
) t WHERE t.geom IS NOT NULL
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


def cell_size(tile_width: float | None, z: int) -> int:
    """A cell's width in a cell tile's units at zoom z: MIN_CELL, or the power of two at
    least as wide as the campaign's (median) tile (up to MAX_CELL), so that cells over the
    campaign leave no gaps whatever zoom a client asks for."""
    cell = MIN_CELL
    if tile_width:
        pixels = float(tile_width) / 360 * CELL_EXTENT * 2**z
        while cell < pixels and cell < MAX_CELL:
            cell *= 2
    return cell


async def cell_tile(
    conn: asyncpg.Connection,
    campaign: str,
    z: int,
    x: int,
    y: int,
    hidden_status: Collection[str] = (),
    hidden_backend: Collection[str] = (),
) -> bytes:
    """The campaign's tiles in web mercator tile z/x/y gathered into cells: a Mapbox vector
    tile (layer ``cells``, CELL_EXTENT units) of squares with ``status`` (the most
    frequent of the cell's tiles) and ``n`` (how many), hidden statuses and back-ends
    left out."""
    cell = cell_size(await conn.fetchval(_TILE_WIDTH, campaign), z)
    tile: bytes | None = await conn.fetchval(
        _CELLS, campaign, z, x, y, cell, sorted(hidden_status), sorted(hidden_backend)
    )
    return tile or b""
