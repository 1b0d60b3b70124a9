"""STAC API Aggregation extension (v0.3.0) computed in SQL over pgstac.

The search parameters (including ``filter`` and ``query``) are turned into a WHERE
clause by ``pgstac.stac_search_to_where`` and the counts are grouped in one read-only
snapshot, straight from ``pgstac.items``: exact and fresh, never pgstac's cached
search context counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import attr
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import ValidationError
from stac_fastapi.api.models import create_request_model
from stac_fastapi.extensions.aggregation import AggregationExtension as _StacAggregationExtension
from stac_fastapi.extensions.aggregation.request import (
    AggregationExtensionGetRequest,
    AggregationExtensionPostRequest,
)
from stac_fastapi.extensions.aggregation.types import AggregationCollection
from stac_fastapi.extensions.filter.request import (
    FilterExtensionGetRequest,
    FilterExtensionPostRequest,
)
from stac_fastapi.extensions.query.request import (
    QueryExtensionGetRequest,
    QueryExtensionPostRequest,
)
from stac_fastapi.pgstac.core import clean_search_args
from stac_fastapi.types.errors import NotFoundError

from catalog_service.api.search_guards import checked_search
from catalog_service.api.visibility import visible_collections

AGGREGATION_CONFORMANCE = "https://api.stacspec.org/v0.3.0/aggregation"

AggregateGetRequest: Any = create_request_model(
    "AggregateGetRequest",
    base_model=AggregationExtensionGetRequest,
    mixins=[FilterExtensionGetRequest, QueryExtensionGetRequest],
    request_type="GET",
)
AggregatePostRequest: Any = create_request_model(
    "AggregatePostRequest",
    base_model=AggregationExtensionPostRequest,
    mixins=[FilterExtensionPostRequest, QueryExtensionPostRequest],  # type: ignore[arg-type]
    request_type="POST",
)

# Search keys that narrow the item set; paging, sorting and fields do not apply here.
_WHERE_KEYS = (
    "collections",
    "ids",
    "bbox",
    "intersects",
    "datetime",
    "filter",
    "filter-lang",
    "query",
)


@dataclass(frozen=True)
class AggregationDef:
    name: str
    data_type: str
    sql_key: str | None = None  # the SQL expression to group by, for frequencies

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "data_type": self.data_type}


FIXED_AGGREGATIONS = (
    AggregationDef("total_count", "integer"),
    AggregationDef("datetime_min", "datetime"),
    AggregationDef("datetime_max", "datetime"),
    AggregationDef("collection_frequency", "frequency_distribution", "collection"),
    AggregationDef(
        "datetime_frequency",
        "frequency_distribution",
        "to_char(date_trunc('month', datetime) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    ),
)
# Frequencies over properties make sense only for categorical strings.
_NOT_CATEGORICAL = frozenset(
    {"id", "datetime", "start_datetime", "end_datetime", "created", "updated"}
)


def _property_key(name: str) -> str:
    # The name is embedded as a SQL string literal: double the quotes.
    return "content->'properties'->>'" + name.replace("'", "''") + "'"


async def available_aggregations(conn: Any, collection_id: str | None) -> list[AggregationDef]:
    """Fixed aggregations plus ``<name>_frequency`` per registered string queryable."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT name FROM pgstac.queryables
        WHERE definition->>'type' = 'string'
          AND coalesce(definition->>'format', '') NOT IN ('date-time', 'date')
          AND ($1::text IS NULL OR collection_ids IS NULL OR $1 = ANY(collection_ids))
        ORDER BY name
        """,
        collection_id,
    )
    dynamic = [
        AggregationDef(
            f"{row['name']}_frequency", "frequency_distribution", _property_key(row["name"])
        )
        for row in rows
        if row["name"] not in _NOT_CATEGORICAL
    ]
    return [*FIXED_AGGREGATIONS, *dynamic]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.isoformat().replace("+00:00", "Z"))


@attr.s
class AggregationClient:
    """Answers /aggregate and /aggregations from pgstac."""

    async def _collection_exists(self, conn: Any, collection_id: str) -> None:
        found = await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", collection_id)
        if not found:
            raise NotFoundError(f"Collection {collection_id} does not exist.")

    def _links(self, request: Request, path: str) -> list[dict[str, str]]:
        base = str(request.base_url)
        return [
            {"rel": "root", "type": "application/json", "href": base},
            {"rel": "self", "type": "application/json", "href": urljoin(base, path.lstrip("/"))},
        ]

    async def get_aggregations(self, request: Request, collection_id: str | None) -> dict[str, Any]:
        async with request.app.state.get_connection(request, "r") as conn:
            if collection_id:
                await self._collection_exists(conn, collection_id)
            defs = await available_aggregations(conn, collection_id)
        path = f"collections/{collection_id}/aggregations" if collection_id else "aggregations"
        return {
            "type": "AggregationCollection",
            "aggregations": [d.describe() for d in defs],
            "links": self._links(request, path),
        }

    async def aggregate(
        self,
        request: Request,
        collection_id: str | None,
        search: dict[str, Any],
        names: list[str] | None,
    ) -> dict[str, Any]:
        checked_search(request, search)
        if collection_id:
            search["collections"] = [collection_id]
        search["collections"] = await visible_collections(request, search.get("collections"))
        where_input = {k: v for k, v in search.items() if k in _WHERE_KEYS and v is not None}
        async with request.app.state.get_connection(request, "r") as conn:
            if collection_id:
                await self._collection_exists(conn, collection_id)
            defs = {d.name: d for d in await available_aggregations(conn, collection_id)}
            wanted = names or ["total_count"]
            unknown = [n for n in wanted if n not in defs]
            if unknown:
                raise HTTPException(
                    status_code=400,
                    detail=f"Unknown aggregation(s) {', '.join(unknown)}; "
                    f"available: {', '.join(defs)} (see the aggregations endpoint).",
                )
            where = await conn.fetchval(
                "SELECT pgstac.stac_search_to_where($1::text::jsonb)", json.dumps(where_input)
            )
            # One snapshot, so every aggregation describes the same item set.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                results = [await self._compute(conn, defs[name], where) for name in wanted]
        path = f"collections/{collection_id}/aggregate" if collection_id else "aggregate"
        return {
            "type": "AggregationCollection",
            "aggregations": results,
            "links": self._links(request, path),
        }

    async def _compute(self, conn: Any, agg: AggregationDef, where: str) -> dict[str, Any]:
        # ``where`` is SQL generated and quoted by pgstac from the validated search.
        source = f"FROM pgstac.items WHERE {where}"
        if agg.name == "total_count":
            return {**agg.describe(), "value": await conn.fetchval(f"SELECT count(*) {source}")}
        if agg.name in ("datetime_min", "datetime_max"):
            fn = "min" if agg.name.endswith("min") else "max"
            return {
                **agg.describe(),
                "value": _iso(await conn.fetchval(f"SELECT {fn}(datetime) {source}")),
            }
        assert agg.sql_key is not None
        rows = await conn.fetch(
            f"SELECT {agg.sql_key} AS key, count(*) AS frequency {source} GROUP BY 1 ORDER BY 2 DESC, 1"
        )
        bucket_type = "datetime" if agg.name == "datetime_frequency" else "string"
        buckets = [
            {"key": row["key"], "data_type": bucket_type, "frequency": row["frequency"]}
            for row in rows
            if row["key"] is not None
        ]
        # Items without the property are in no bucket: the spec calls that overflow.
        overflow = sum(row["frequency"] for row in rows if row["key"] is None)
        return {**agg.describe(), "overflow": overflow, "buckets": buckets}


def _validated_search(args: dict[str, Any]) -> dict[str, Any]:
    try:
        search = AggregatePostRequest(**args)
    except ValidationError as exc:
        raise HTTPException(status_code=400, detail=f"Invalid parameters provided: {exc}") from exc
    dumped: dict[str, Any] = orjson.loads(search.model_dump_json(exclude_none=True, by_alias=True))
    dumped.pop("aggregations", None)
    return dumped


def _search_from_get(params: Any) -> dict[str, Any]:
    kwargs = params.kwargs()
    base_args = {
        "collections": kwargs.get("collections"),
        "ids": kwargs.get("ids"),
        "bbox": kwargs.get("bbox"),
        "query": orjson.loads(kwargs["query"]) if kwargs.get("query") else None,
    }
    # Bad JSON in `query`/`intersects` becomes a 400 in the app's JSONDecodeError handler.
    clean = clean_search_args(
        base_args,
        intersects=kwargs.get("intersects"),
        datetime=kwargs.get("datetime"),
        filter_query=kwargs.get("filter_expr"),
        filter_lang=kwargs.get("filter_lang"),
    )
    return _validated_search(clean)


def _search_from_post(body: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = orjson.loads(body.model_dump_json(exclude_none=True, by_alias=True))
    dumped.pop("aggregations", None)
    return dumped


@attr.s
class AggregationExtension(_StacAggregationExtension):
    """Routes of the aggregation extension over our client.

    Subclassing stac-fastapi's extension keeps its conformance class and landing links.
    """

    client: AggregationClient = attr.ib(factory=AggregationClient)  # type: ignore[assignment]
    conformance_classes: list[str] = attr.ib(
        factory=lambda: [
            AGGREGATION_CONFORMANCE,
            f"{AGGREGATION_CONFORMANCE}#filter",
            f"{AGGREGATION_CONFORMANCE}#query",
        ]
    )
    router: APIRouter = attr.ib(factory=APIRouter)

    def register(self, app: FastAPI) -> None:
        client = self.client
        router = self.router
        router.prefix = app.state.router_prefix

        async def aggregations(request: Request) -> dict[str, Any]:
            return await client.get_aggregations(request, None)

        async def collection_aggregations(request: Request, collection_id: str) -> dict[str, Any]:
            return await client.get_aggregations(request, collection_id)

        async def aggregate_get(
            request: Request, params: Any = Depends(AggregateGetRequest)
        ) -> dict[str, Any]:
            return await client.aggregate(
                request, None, _search_from_get(params), params.aggregations
            )

        async def aggregate_post(
            request: Request,
            body: AggregatePostRequest,
        ) -> dict[str, Any]:
            aggs = body.aggregations
            return await client.aggregate(request, None, _search_from_post(body), aggs)

        async def collection_aggregate_get(
            request: Request, collection_id: str, params: Any = Depends(AggregateGetRequest)
        ) -> dict[str, Any]:
            search = _search_from_get(params)
            return await client.aggregate(request, collection_id, search, params.aggregations)

        async def collection_aggregate_post(
            request: Request,
            collection_id: str,
            body: AggregatePostRequest,
        ) -> dict[str, Any]:
            aggs = body.aggregations
            return await client.aggregate(request, collection_id, _search_from_post(body), aggs)

        routes = (
            ("/aggregations", aggregations, "GET", "getAggregations"),
            ("/aggregations", aggregations, "POST", "postAggregations"),
            (
                "/collections/{collection_id}/aggregations",
                collection_aggregations,
                "GET",
                "getCollectionAggregations",
            ),
            (
                "/collections/{collection_id}/aggregations",
                collection_aggregations,
                "POST",
                "postCollectionAggregations",
            ),
            ("/aggregate", aggregate_get, "GET", "getAggregate"),
            ("/aggregate", aggregate_post, "POST", "postAggregate"),
            (
                "/collections/{collection_id}/aggregate",
                collection_aggregate_get,
                "GET",
                "getCollectionAggregate",
            ),
            (
                "/collections/{collection_id}/aggregate",
                collection_aggregate_post,
                "POST",
                "postCollectionAggregate",
            ),
        )
        for path, endpoint, method, operation_id in routes:
            # Distinct operation ids: FastAPI would otherwise warn about duplicates.
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                operation_id=operation_id,
                tags=["Aggregation Extension"],
                # Described, not validated (pydantic would drop what the TypedDict does
                # not name): answers are built to the extension's shape.
                response_model=None,
                responses={200: {"model": AggregationCollection}},
            )
        app.include_router(router)
