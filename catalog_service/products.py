"""Products in the catalogue: versions of product items written with their collection's
extent and their job item's back-link in one transaction, and the harvest state each
finished tile carries (``tilekeeper:product``).

Versions (the STAC version extension): the latest version of a product keeps its id; a
reprocessed product moves the previous content to ``{id}_v{n}`` (``deprecated``, with
``latest-version`` and ``successor-version`` links) and the new one gets version n+1
with a ``predecessor-version`` link. The same source bytes again change nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from pypgstac.hydration import dehydrate

from catalog_service.database.jsonb import decoded
from catalog_service.database.overview_schema import PENDING_SQL
from catalog_service.jobs import status
from catalog_service.raster.render import grow_render
from catalog_service.timestamps import utc_now_text

PRODUCT_KEY = "tilekeeper:product"
SOURCE_KEY = "tilekeeper:source_checksums"
STATES = ("pending", "ingested", "failed")
MAX_ERROR = 2000


# A campaign X's products go to the collection X-products, which only X's owners may
# create or fill (api/visibility.py); no campaign id ends with it.


class ProductError(Exception):
    """A product write refused; nothing was written."""


class CollectionNotFound(ProductError):
    pass


class JobNotFound(ProductError):
    pass


@dataclass(frozen=True)
class ProductWrite:
    """A tile's (or a file's) product items and, for a campaign tile, its job."""

    items: list[dict[str, Any]]
    job: tuple[str, str] | None = None


@dataclass(frozen=True)
class Written:
    id: str
    version: int
    result: str  # created | updated | unchanged

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "result": self.result}


def _item_href(collection: str, item: str) -> str:
    # Relative to the API's root, as stac-fastapi-pgstac resolves stored links: they
    # follow the address each request reaches the API at.
    return f"collections/{collection}/items/{item}"


def _link(rel: str, href: str, title: str | None = None) -> dict[str, Any]:
    link = {"rel": rel, "href": href, "type": "application/geo+json"}
    return link | ({"title": title} if title else {})


async def _item(conn: asyncpg.Connection, collection: str, item_id: str) -> dict[str, Any] | None:
    row = await conn.fetchval("SELECT pgstac.get_item($1, $2)", item_id, collection)
    return decoded(row) if row is not None else None


# Stored properties are never dehydrated (a base item has none), so they are read as is;
# the whole item is hydrated only when a new version needs the old one.
_PROPERTIES = "SELECT content->'properties' FROM pgstac.items WHERE collection = $1 AND id = $2"


async def _properties(conn: asyncpg.Connection, collection: str, item_id: str) -> Any:
    return decoded(await conn.fetchval(_PROPERTIES, collection, item_id))


async def _upsert(conn: asyncpg.Connection, item: dict[str, Any]) -> None:
    await conn.execute("SELECT pgstac.upsert_item($1::text::jsonb)", json.dumps(item))


_PARTITION = """
SELECT partition FROM pgstac.partition_stats
WHERE collection = $1 AND partition_dtrange @> $2::text::timestamptz
"""
_INSERT = """
INSERT INTO pgstac.{partition} (id, collection, datetime, end_datetime, geometry, content)
VALUES ($1, $2, $3::text::timestamptz, $4::text::timestamptz,
        st_setsrid(st_geomfromgeojson($5::text), 4326), $6::text::jsonb)
"""


async def _create(
    conn: asyncpg.Connection, base_item: dict[str, Any], item: dict[str, Any]
) -> None:
    """Insert a product whose id is free. pgstac's create_item passes every item through
    a staging table, a temporary table and its dehydration in PL/pgSQL (~8 ms); when the
    collection's partition already holds the item's dates, the row dehydrated here goes
    straight into it (~1 ms), as the tile registrar does. Otherwise (the first product,
    or a date outside the partition's constraint) create_item makes or widens it."""
    properties = item["properties"]
    start = properties.get("start_datetime") or properties["datetime"]
    end = properties.get("end_datetime") or properties["datetime"]
    partition = await conn.fetchval(_PARTITION, item["collection"], start)
    if partition is not None:
        content = dehydrate(base_item, item)
        for column in ("id", "collection", "geometry"):
            content.pop(column, None)
        statement = _INSERT.format(partition=_quoted(partition))
        try:
            async with conn.transaction():  # a savepoint: the fallback below may follow
                await conn.execute(
                    statement, item["id"], item["collection"], start, end,
                    orjson.dumps(item["geometry"]).decode(), orjson.dumps(content).decode(),
                )  # fmt: skip
            return
        except asyncpg.CheckViolationError:
            pass  # a date outside the partition's constraint
    await conn.execute("SELECT pgstac.create_item($1::text::jsonb)", json.dumps(item))


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _grow_extent(collection: dict[str, Any], items: list[dict[str, Any]], fresh: bool) -> None:
    """The collection's extent and summaries, grown to cover the new items (replaced
    when these are its first products: a new collection's extent is a placeholder)."""
    extent = collection.setdefault("extent", {})
    boxes = [i["bbox"] for i in items]
    dates = [i["properties"]["datetime"] for i in items if i["properties"].get("datetime")]
    if not fresh:
        boxes += (extent.get("spatial") or {}).get("bbox", [])[:1]
        dates += [d for d in ((extent.get("temporal") or {}).get("interval") or [[]])[0] if d]
    extent["spatial"] = {
        "bbox": [
            [min(b[0] for b in boxes), min(b[1] for b in boxes),
             max(b[2] for b in boxes), max(b[3] for b in boxes)]
        ]
    }  # fmt: skip
    if dates:
        extent["temporal"] = {"interval": [[min(dates), max(dates)]]}
    summaries = collection.setdefault("summaries", {})
    codes = set() if fresh else set(summaries.get("proj:code") or [])
    codes |= {i["properties"]["proj:code"] for i in items if i["properties"].get("proj:code")}
    if codes:
        summaries["proj:code"] = sorted(codes)
    grow_render(collection, items, fresh)


_HAS_OTHERS = """
SELECT EXISTS (SELECT 1 FROM pgstac.items WHERE collection = $1 AND NOT id = ANY($2::text[]))
"""


async def write_products(
    conn: asyncpg.Connection, collection_id: str, writes: list[ProductWrite]
) -> list[list[Written]]:
    """Write product items (new versions where their source changed), grow the
    collection's extent and, for a campaign tile, mark its job item ingested with
    links to its products; every write in one transaction."""
    results: list[list[Written]] = []
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT content, base_item FROM pgstac.collections WHERE id = $1 FOR UPDATE",
            collection_id,
        )
        if row is None:
            raise CollectionNotFound(f"collection {collection_id} does not exist")
        collection, base_item = decoded(row["content"]), decoded(row["base_item"])
        changed: list[dict[str, Any]] = []
        for write in writes:
            written = await _write_items(conn, collection_id, base_item, write.items, changed)
            if write.job is not None:
                await _mark_job(conn, write.job, collection_id, [w.id for w in written])
            results.append(written)
        if changed:
            ids = [i["id"] for i in changed]
            others = await conn.fetchval(_HAS_OTHERS, collection_id, ids)
            _grow_extent(collection, changed, fresh=not others)
            await conn.execute(
                "SELECT pgstac.update_collection($1::text::jsonb)", json.dumps(collection)
            )
            # The collection's overview takes them in next (raster/overview.py).
            await conn.execute(PENDING_SQL, collection_id, ids)
    return results


async def _write_items(
    conn: asyncpg.Connection,
    collection_id: str,
    base_item: dict[str, Any],
    items: list[dict[str, Any]],
    changed: list[dict[str, Any]],
) -> list[Written]:
    written: list[Written] = []
    for item in items:
        item = {**item, "collection": collection_id}
        stored = await _properties(conn, collection_id, item["id"])
        if stored is not None and stored.get(SOURCE_KEY) == item["properties"].get(SOURCE_KEY):
            version = int(stored.get("version") or 1)
            written.append(Written(item["id"], version, "unchanged"))
            continue
        version = 1
        links = [link for link in item.get("links", []) if "version" not in link["rel"]]
        existing = None if stored is None else await _item(conn, collection_id, item["id"])
        if existing is not None:
            previous = int(existing["properties"].get("version") or 1)
            version = previous + 1
            old_id = f"{item['id']}_v{previous}"
            latest = _item_href(collection_id, item["id"])
            old = {
                **existing,
                "id": old_id,
                "properties": {**existing["properties"], "deprecated": True},
                "links": [
                    link
                    for link in existing.get("links", [])
                    if link["rel"] in ("derived_from", "via", "predecessor-version")
                ]
                + [_link("latest-version", latest), _link("successor-version", latest)],
            }
            await _upsert(conn, old)
            links.append(_link("predecessor-version", _item_href(collection_id, old_id)))
            item["properties"] = {
                **item["properties"],
                "created": existing["properties"].get("created", item["properties"].get("created")),
            }
        item["properties"] = {**item["properties"], "version": str(version)}
        item["links"] = links
        if existing is None:
            await _create(conn, base_item, item)
        else:
            await _upsert(conn, item)
        changed.append(item)
        written.append(Written(item["id"], version, "updated" if version > 1 else "created"))
    return written


# A tile's harvest state and product links: no status counter or summary figure moves
# (jobs/figures.py), so these writes need no deltas.
_JOB_PROPS = """
SELECT content->'properties' AS props, content->'links' AS links FROM pgstac.items
WHERE collection = $1 AND id = $2 FOR UPDATE
"""
_SET_JOB = """
UPDATE pgstac.items SET content = jsonb_set(jsonb_set(content,
    '{properties,tilekeeper:product}', $3::text::jsonb), '{links}', $4::text::jsonb)
WHERE collection = $1 AND id = $2
"""


async def _mark_job(
    conn: asyncpg.Connection,
    job: tuple[str, str],
    collection_id: str,
    product_ids: list[str],
) -> None:
    campaign, tile = job
    row = await conn.fetchrow(_JOB_PROPS, campaign, tile)
    if row is None:
        raise JobNotFound(f"campaign {campaign} has no tile {tile}")
    previous = (decoded(row["props"]) or {}).get(PRODUCT_KEY) or {}
    known = previous.get("items", []) if previous.get("collection") == collection_id else []
    ids = sorted(set(known) | set(product_ids))
    state = {
        "state": "ingested",
        "collection": collection_id,
        "items": ids,
        "updated": utc_now_text(),
    }
    links = decoded(row["links"]) or []
    present = {link.get("href") for link in links}
    links += [
        _link("related", href, f"product {pid}")
        for pid in product_ids
        if (href := _item_href(collection_id, pid)) not in present
    ]
    await conn.execute(_SET_JOB, campaign, tile, json.dumps(state), json.dumps(links))


async def set_harvest_state(
    conn: asyncpg.Connection, campaign: str, tile: str, state: str, error: str | None
) -> None:
    """Record a tile's harvest as pending or failed (``ingested`` is written with the
    products themselves)."""
    if state not in ("pending", "failed"):
        raise ProductError(f"state must be pending or failed, not {state!r}")
    async with conn.transaction():
        row = await conn.fetchrow(_JOB_PROPS, campaign, tile)
        if row is None:
            raise JobNotFound(f"campaign {campaign} has no tile {tile}")
        current = (decoded(row["props"]) or {}).get(PRODUCT_KEY) or {}
        value = {**current, "state": state, "updated": utc_now_text()}
        value.pop("error", None)
        if error:
            value["error"] = error[:MAX_ERROR]
        await conn.execute(
            "UPDATE pgstac.items SET content = jsonb_set(content, '{properties,tilekeeper:product}',"
            " $3::text::jsonb) WHERE collection = $1 AND id = $2",
            campaign,
            tile,
            json.dumps(value),
        )


_TO_HARVEST = f"""
SELECT id, content->'properties' AS props FROM pgstac.items
WHERE collection = $1 AND content->'properties'->>'status' = '{status.FINISHED}'
  AND coalesce(content->'properties'->'{PRODUCT_KEY}'->>'state', 'missing') = ANY($2::text[])
ORDER BY id LIMIT $3
"""


async def tiles_to_harvest(
    conn: asyncpg.Connection, campaign: str, states: list[str], limit: int
) -> list[dict[str, Any]]:
    """Finished tiles whose harvest is in one of ``states`` (``missing``: never tried)."""
    rows = await conn.fetch(_TO_HARVEST, campaign, states, limit)
    return [{"tile": r["id"], "properties": decoded(r["props"])} for r in rows]
