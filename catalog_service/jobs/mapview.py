"""What the campaign map reads: the tiles as Mapbox vector tiles (PostGIS ST_AsMVT, so a
100,000-tile campaign is a handful of small binary tiles, not 100,000 GeoJSON features),
and the changes since a cursor (the history's sequence), so a live map fetches only what
changed."""

from __future__ import annotations

import json
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
