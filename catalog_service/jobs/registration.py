"""Tile registration: many tiles of a campaign stored with one COPY (psycopg).

Registration is the one bulk write of the job store, so it runs on psycopg's COPY in a
worker thread, beside the asyncpg code of the routes; every later change of a tile only
rewrites its properties (``jobs/store.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import psycopg
import shapely
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from pypgstac.hydration import dehydrate

from catalog_service.bulk import paused_gc
from catalog_service.database.jsonb import decoded
from catalog_service.jobs import counts, figures, status
from catalog_service.jobs.campaign import (
    JOB_ITEM_TEMPLATE,
    NO_AREA_YET,
    ORDER_KEY,
    CampaignDefinition,
    job_extensions,
    job_properties,
)
from catalog_service.jobs.errors import CampaignNotFound, InvalidTiles, StoreError

_LAST_ORDER = f"""
SELECT (content->'properties'->>'{ORDER_KEY}')::bigint FROM pgstac.items
WHERE collection = %s AND content->'properties' ? '{ORDER_KEY}'
ORDER BY collection DESC, (content->'properties'->>'{ORDER_KEY}')::bigint DESC
LIMIT 1
"""
_REGISTER_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tilekeeper.register'), hashtext(%s))"
_CAMPAIGN_PARTITION = """
SELECT c.base_item, ps.partition
FROM pgstac.collections c
LEFT JOIN pgstac.partition_stats ps
    ON ps.collection = c.id AND ps.partition_dtrange @> %s::timestamptz
WHERE c.id = %s
"""
_EXISTING = "SELECT id FROM pgstac.{partition} WHERE id = ANY(%s)"
_CAMPAIGN_BBOXES = (
    "SELECT content->'extent'->'spatial'->'bbox' FROM pgstac.collections WHERE id = %s FOR UPDATE"
)
_SET_CAMPAIGN_BBOXES = """
UPDATE pgstac.collections SET content = jsonb_set(content, '{extent,spatial,bbox}', %s::jsonb)
WHERE id = %s
"""
_COPY = (
    "COPY pgstac.{partition} (id, collection, datetime, end_datetime, geometry, content) FROM STDIN"
)
# Rows go to the database in chunks: it parses and indexes one chunk while this process
# builds the next, so the two cores work at once.
_COPY_CHUNK = 2_000


def _copy_field(value: bytes) -> bytes:
    # orjson escapes tabs and newlines inside strings, so only backslashes need
    # doubling for COPY's text format.
    return value.replace(b"\\", b"\\\\")


class TileRegistrar:
    """Registers tiles with one COPY into the campaign's partition per request.

    It stores the rows pgstac's Loader would, specialised to job items: their common
    part is dehydrated once, footprints are converted in vectorised GEOS calls, and rows
    stream straight into the partition in chunks, so the database indexes one chunk
    while Python builds the next (no staging table: existing ids are known up front).
    Existing tiles are left as they are, so a repeated registration resumes instead of
    duplicating."""

    def __init__(self, writer_dsn: str) -> None:
        self.writer_dsn = writer_dsn

    def register(self, definition: CampaignDefinition, tiles: Sequence[dict[str, Any]]) -> int:
        """Store the tiles not yet in the campaign; returns how many were new."""
        start, _ = definition.job_interval()
        with psycopg.connect(self.writer_dsn) as conn, conn.cursor() as cur:
            # One registration at a time per campaign: it hands out the order numbers.
            cur.execute(_REGISTER_LOCK, [definition.id])
            row = cur.execute(_CAMPAIGN_PARTITION, [start, definition.id]).fetchone()
            if row is None:
                raise CampaignNotFound(f"campaign {definition.id!r} does not exist")
            base_item, partition = row
            if partition is None:
                raise StoreError(
                    f"campaign {definition.id!r} has no partition for {start}: "
                    "re-create the campaign"
                )
            table = sql.Identifier(partition)
            ids = [t["id"] for t in tiles]
            existing = {
                r[0] for r in cur.execute(sql.SQL(_EXISTING).format(partition=table), [ids])
            }
            new_tiles = [t for t in tiles if t["id"] not in existing]
            last = cur.execute(_LAST_ORDER, [definition.id]).fetchone()
            first_order = int(str(last[0])) + 1 if last else 0
            # Straight into the partition: the advisory lock above makes this request
            # the campaign's only tile writer, so the ids checked are still absent.
            copy_sql = sql.SQL(_COPY).format(partition=table)
            with paused_gc(), cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
                for at in range(0, len(new_tiles), _COPY_CHUNK):
                    chunk = new_tiles[at : at + _COPY_CHUNK]
                    copy.write(_copy_rows(definition, base_item, chunk, first_order + at))
            new = len(new_tiles)
            registered = Counter(
                (t.get("properties") or {}).get("status") or status.NOT_STARTED for t in new_tiles
            )
            if registered:
                cur.execute(
                    counts.REGISTER_SQL,
                    [definition.id, list(registered), list(registered.values())],
                )
            figures.register(
                cur,
                definition.id,
                [(None, figures.as_registered(t.get("properties"))) for t in new_tiles],
            )
            if tiles:
                # All tiles received, not only new ones: registering a campaign's tiles
                # again also mends the extent of one registered before it grew.
                _grow_extent(cur, definition.id, tiles)
            conn.commit()
            # As the Loader does: refresh the partition's observed extents (not in the
            # transaction above, so readers are not blocked meanwhile).
            cur.execute("SELECT pgstac.update_partition_stats_q(%s)", [partition])
            conn.commit()
        return new


def _union(boxes: Sequence[Sequence[float]]) -> list[float]:
    """The 2D bbox containing every bbox (2D, or 3D as STAC writes them)."""
    corners = np.asarray([[b[0], b[1], *(b[3:5] if len(b) == 6 else b[2:4])] for b in boxes])
    return [*corners[:, :2].min(axis=0).tolist(), *corners[:, 2:].max(axis=0).tolist()]


def _grow_extent(
    cur: psycopg.Cursor[tuple[Any, ...]], campaign: str, tiles: Sequence[dict[str, Any]]
) -> None:
    """Widen the campaign collection's spatial extent (its first, overall bbox) to contain
    every tile: it starts as the AOI's bbox (or, without an AOI, is the first tiles'),
    and grid cells stick out of the AOI. Only grows, in the registration's transaction (the row lock orders it with definition
    updates, which keep the extent as it is)."""
    row = cur.execute(_CAMPAIGN_BBOXES, [campaign]).fetchone()
    stored = decoded(row[0]) if row else None
    boxes: list[list[float]] = stored if isinstance(stored, list) and stored else []
    tiles_box = _union([t["bbox"] for t in tiles])
    # No AOI: the tiles' extent, not the world's placeholder (OGR/QGIS zoom to it).
    grows = bool(boxes) and boxes[0] != list(NO_AREA_YET)
    overall = _union([boxes[0], tiles_box]) if grows else tiles_box
    if not boxes or overall != boxes[0]:
        cur.execute(_SET_CAMPAIGN_BBOXES, [orjson.dumps([overall, *boxes[1:]]).decode(), campaign])


def _content(base_item: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    content = dehydrate(base_item, item)
    for column in ("id", "collection", "geometry"):
        content.pop(column, None)
    return content


def _footprints(tiles: Sequence[dict[str, Any]]) -> list[str]:
    """GeoJSON footprints as hex EWKB (SRID 4326), pgstac's geometry column format;
    GEOS parses them all in one vectorised call."""
    try:
        geometries = shapely.from_geojson([orjson.dumps(t["geometry"]) for t in tiles])
    except shapely.errors.GEOSException as exc:
        raise InvalidTiles(f"a tile geometry is not valid GeoJSON: {exc}") from None
    if shapely.is_empty(geometries).any():
        empty = tiles[int(np.flatnonzero(shapely.is_empty(geometries))[0])]["id"]
        raise InvalidTiles(f"tile {empty}: geometry is empty")
    ewkb: list[str] = shapely.to_wkb(
        shapely.set_srid(geometries, 4326), hex=True, include_srid=True
    ).tolist()
    return ewkb


def _copy_rows(
    definition: CampaignDefinition,
    base_item: dict[str, Any],
    tiles: Sequence[dict[str, Any]],
    first_order: int,
) -> bytes:
    """COPY text rows (id, collection, datetime, end_datetime, EWKB, dehydrated
    content) for the tiles."""
    start, end = definition.job_interval()
    constant = _copy_field(f"\t{definition.id}\t{start}\t{end}\t".encode())
    common = {**JOB_ITEM_TEMPLATE, "collection": definition.id}
    # pgstac stores an item minus what equals its collection's base item (and without
    # the columns id, collection, geometry). bbox and properties are never part of a
    # base item, so the common part is dehydrated once for every tile (stac_extensions,
    # which follows each tile's fields, neither).
    varying = {"bbox", "properties", "stac_extensions"}
    shared = None if varying & base_item.keys() else _content(base_item, common)
    out = bytearray()
    for n, (tile, footprint) in enumerate(zip(tiles, _footprints(tiles), strict=True)):
        properties = job_properties(
            definition, tile["id"], tile.get("properties") or {}, first_order + n
        )
        extensions = job_extensions(properties)
        if shared is None:
            content = _content(
                base_item,
                {
                    **common,
                    "stac_extensions": extensions,
                    "bbox": tile["bbox"],
                    "properties": properties,
                },
            )
        else:
            content = {
                **shared,
                "stac_extensions": extensions,
                "bbox": tile["bbox"],
                "properties": properties,
            }
        out += _copy_field(tile["id"].encode())
        out += constant
        out += footprint.encode()
        out += b"\t"
        out += _copy_field(orjson.dumps(content))
        out += b"\n"
    return bytes(out)
