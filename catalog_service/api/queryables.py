"""Queryables that describe each collection's own items, self-contained.

pgstac's rows for tilekeeper's properties are global (one reading of a property for
every search: database/queryables.py), so pgstac alone would list job properties such
as ``status`` for product and plain collections too. Here ``/collections/{id}/queryables``
keeps the registered properties of the collection's kind: a campaign its job properties,
a product collection its product properties, a plain collection neither; properties an
operator registered (globally or for that collection) stay everywhere pgstac applies
them. ``/queryables`` is the union. No definition keeps a ``$ref`` outside the document:
clients such as STAC Browser would fetch it from the internet.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from stac_fastapi.pgstac.extensions.filter import FiltersClient

from catalog_service.database.queryables import BY_NAME, CORE, JOBS, PRODUCTS
from catalog_service.ids import PRODUCTS_SUFFIX

_KIND = """
SELECT c.content ? 'tilekeeper:campaign' AS campaign,
       c.content ? 'tilekeeper:products_of'
       OR EXISTS (
           SELECT 1 FROM jsonb_array_elements(
               CASE WHEN jsonb_typeof(c.content->'providers') = 'array'
                    THEN c.content->'providers' ELSE '[]'::jsonb END) p
           WHERE p->>'name' = 'tilekeeper' AND p->'roles' ? 'processor'
       ) AS products,
       ARRAY(SELECT q.name FROM pgstac.queryables q WHERE c.id = ANY(q.collection_ids)) AS own
FROM pgstac.collections c WHERE c.id = $1
"""


async def collection_kind(request: Request, collection_id: str) -> tuple[str | None, set[str]]:
    """``jobs`` for a campaign, ``products`` for a product collection (``X-products``, or
    one tilekeeper's ingest created), None for any other collection; and the queryables
    registered for this collection by name."""
    async with request.app.state.get_connection(request, "r") as conn:
        row = await conn.fetchrow(_KIND, collection_id)
    if row is None:
        return None, set()
    own = set(row["own"] or ())
    if row["campaign"]:
        return JOBS, own
    if row["products"] or collection_id.endswith(PRODUCTS_SUFFIX):
        return PRODUCTS, own
    return None, own


def self_contained(schema: Any) -> Any:
    """``schema`` without any ``$ref`` that leaves the document (pgstac's defaults point
    at schemas.stacspec.org and geojson.org)."""
    if isinstance(schema, dict):
        return {
            key: self_contained(value)
            for key, value in schema.items()
            if not (key == "$ref" and not (isinstance(value, str) and value.startswith("#")))
        }
    if isinstance(schema, list):
        return [self_contained(value) for value in schema]
    return schema


def scoped(
    properties: dict[str, Any], kind: str | None, own: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The properties a collection of ``kind`` describes: tilekeeper's of another kind are
    left out, unless registered for this very collection (``own``)."""
    return {
        name: definition
        for name, definition in properties.items()
        if name not in BY_NAME or kind in BY_NAME[name].kinds or name in own
    }


class TilekeeperFiltersClient(FiltersClient):  # type: ignore[misc]
    async def get_queryables(
        self,
        request: Request,
        collection_id: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        queryables: dict[str, Any] = await super().get_queryables(
            request, collection_id=collection_id, **kwargs
        )
        properties = dict(queryables.get("properties") or {})
        for name, definition in CORE.items():
            if name in properties and "$ref" in properties[name]:
                properties[name] = definition
        if collection_id is not None:
            kind, own = await collection_kind(request, collection_id)
            properties = scoped(properties, kind, own)
        queryables["properties"] = properties
        result: dict[str, Any] = self_contained(queryables)
        return result
