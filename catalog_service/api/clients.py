"""stac-fastapi-pgstac clients, adjusted where tilekeeper promises more.

Just over 400 lines: the core, transactions and bulk clients subclass upstream's together,
each override a few lines next to the others of its client; how items are served is in
served_items.py, what searches may ask in search_input.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin

import asyncpg
import attr
import orjson
from cql2 import Expr
from fastapi import HTTPException, Request
from stac_fastapi.extensions.bulk_transactions import BulkTransactionMethod, Items
from stac_fastapi.pgstac.core import CoreCrudClient
from stac_fastapi.pgstac.db import dbfunc
from stac_fastapi.pgstac.transactions import BulkTransactionsClient, TransactionsClient
from stac_fastapi.types.errors import NotFoundError, StacApiError
from stac_fastapi.types.requests import get_base_url
from starlette.responses import JSONResponse, Response

from catalog_service.api.auth import current_identity
from catalog_service.api.campaign_pages import campaign_page
from catalog_service.api.errors import MISSING_COLLECTION, BulkWriteRejected
from catalog_service.api.responses import geojson
from catalog_service.api.search_guards import checked_search, refuse_hidden_token
from catalog_service.api.search_input import property_names, validated_filter
from catalog_service.api.served_items import Shown, as_served
from catalog_service.api.visibility import (
    excluding,
    hidden_collections,
    may_change,
    named_collection,
    owning_campaign_id,
    shown_collection,
    visible_collections,
)
from catalog_service.api.write_checks import (
    check_collection,
    check_collection_patch,
    check_item,
    check_item_patch,
    check_item_shape,
    max_chars,
    plain,
    refuse_campaign_definition,
    same_id,
)
from catalog_service.jobs.campaign import CAMPAIGN_KEY
from catalog_service.raster.render import mosaic_links, with_web_map_links


class CampaignItemsAreManaged(Exception):
    """A raw STAC write aimed at a campaign's tile jobs."""


async def _is_campaign(request: Request, collection_id: str) -> bool:
    async with request.app.state.get_connection(request, "r") as conn:
        return bool(
            await conn.fetchval(
                "SELECT content ? $2 FROM pgstac.collections WHERE id = $1",
                collection_id,
                CAMPAIGN_KEY,
            )
        )


async def refuse_campaign_writes(request: Request, collection_id: str) -> None:
    """Campaign tiles change only through the job store (transition rules, history).

    A raw write would bypass both, so it fails loudly with 409 and says where to go:
    this is what makes the stock STACAPIJobDatabase fail instead of corrupting a campaign.
    """
    if await _is_campaign(request, collection_id):
        raise CampaignItemsAreManaged(
            f"{collection_id} is a tilekeeper campaign: its tile jobs change only through "
            f"/campaigns/{collection_id}/jobs/changes (status transitions with history). "
            "Use catalog_service.CampaignJobDatabase as the job database, or register tiles "
            f"with POST /campaigns/{collection_id}/tiles."
        )


async def refuse_campaign_collection_writes(request: Request, collection_id: str) -> None:
    """A campaign's collection is its definition and its tiles: it changes through the
    campaign routes only (which keep the two consistent and apply their rules)."""
    if await _is_campaign(request, collection_id):
        raise CampaignItemsAreManaged(
            f"{collection_id} is a tilekeeper campaign: change it with PATCH "
            f"/campaigns/{collection_id} and delete it with DELETE /campaigns/{collection_id}."
        )


async def check_product_collection_owner(request: Request, collection_id: str) -> None:
    """``X-products`` is campaign X's own: only X's owners (or an admin) create it. The
    same answer whether X is missing or hidden, so it tells nothing about X."""
    campaign_id = owning_campaign_id(collection_id)
    if campaign_id is None:
        return
    named = await named_collection(request, campaign_id)
    identity = await current_identity(request)
    visible = named.is_campaign and named.visible_to(identity)
    if not (visible and may_change(request, identity, named.governing)):
        raise HTTPException(
            400,
            f"{collection_id} is the product collection of campaign {campaign_id}: only an "
            f"owner of that campaign (or an admin) may create it, once the campaign exists",
        )


async def _collection_exists(request: Request, collection_id: str) -> bool:
    async with request.app.state.get_connection(request, "r") as conn:
        found = await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", collection_id)
        return found is not None


@asynccontextmanager
async def writing_items_into(request: Request, collection_id: str) -> AsyncIterator[None]:
    """An item write racing its collection's deletion fails inside pgstac in one of
    several ways (the foreign key: upstream's 424; a dropped partition's name: a 400
    about an identifier). Whichever way, the collection is gone: 404, nothing stored."""
    try:
        yield
    except (asyncpg.PostgresError, StacApiError) as exc:
        if await _collection_exists(request, collection_id):
            raise
        raise NotFoundError(MISSING_COLLECTION) from exc


@attr.s
class GuardedTransactionsClient(TransactionsClient):  # type: ignore[misc]
    """Standard STAC transactions, except on campaigns: their items change through the
    job store, their collections through the campaign routes."""

    async def create_collection(self, collection: Any, request: Request, **kwargs: Any) -> Any:
        check_collection(request, collection)
        refuse_campaign_definition(collection.model_dump(mode="json"))
        await check_product_collection_owner(request, collection.id)
        return await super().create_collection(collection, request=request, **kwargs)

    async def update_collection(self, collection: Any, request: Request, **kwargs: Any) -> Any:
        check_collection(request, collection)
        # Upstream writes whatever id the body names (PUT /collections/A could replace B).
        same_id(request, collection.id)
        await refuse_campaign_collection_writes(request, collection.id)
        refuse_campaign_definition(collection.model_dump(mode="json"))
        return await super().update_collection(collection, request=request, **kwargs)

    async def patch_collection(
        self, collection_id: str, patch: Any, request: Request, **kwargs: Any
    ) -> Any:
        if not isinstance(patch, list):
            same_id(request, getattr(patch, "id", None))
        await refuse_campaign_collection_writes(request, collection_id)
        check_collection_patch(request, plain(patch))
        return await super().patch_collection(collection_id, patch, request=request, **kwargs)

    async def delete_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Any:
        await refuse_campaign_collection_writes(request, collection_id)
        return await super().delete_collection(collection_id, request=request, **kwargs)

    async def create_item(
        self, collection_id: str, item: Any, request: Request, **kwargs: Any
    ) -> Any:
        await refuse_campaign_writes(request, collection_id)
        features = getattr(item, "features", None)
        for feature in features or [item]:
            check_item(request, feature)
        if features is not None and not features:
            # Upstream answers an empty 201, even for no features.
            raise HTTPException(400, "the FeatureCollection has no features; nothing was stored")
        async with writing_items_into(request, collection_id):
            created = await super().create_item(collection_id, item, request=request, **kwargs)
        if features is None:
            return created
        ids = [feature.id for feature in features]
        return JSONResponse({"created": len(ids), "ids": ids}, status_code=201)

    async def update_item(
        self, request: Request, collection_id: str, item_id: str, item: Any, **kwargs: Any
    ) -> Any:
        await refuse_campaign_writes(request, collection_id)
        check_item(request, item)
        async with writing_items_into(request, collection_id):
            return await super().update_item(request, collection_id, item_id, item, **kwargs)

    async def patch_item(
        self, collection_id: str, item_id: str, patch: Any, request: Request, **kwargs: Any
    ) -> Any:
        await refuse_campaign_writes(request, collection_id)
        check_item_patch(request, plain(patch))
        async with writing_items_into(request, collection_id):
            return await super().patch_item(
                collection_id, item_id, patch, request=request, **kwargs
            )

    async def delete_item(self, item_id: str, collection_id: str, *args: Any, **kwargs: Any) -> Any:
        await refuse_campaign_writes(kwargs["request"], collection_id)
        return await super().delete_item(item_id, collection_id, *args, **kwargs)


def _aggregation_links(request: Request, collection_id: str) -> list[dict[str, str]]:
    base = urljoin(str(request.base_url), f"collections/{collection_id}/")
    return [
        {
            "rel": "aggregate",
            "type": "application/json",
            "title": "Aggregate",
            "href": urljoin(base, "aggregate"),
        },
        {
            "rel": "aggregations",
            "type": "application/json",
            "title": "Aggregations",
            "href": urljoin(base, "aggregations"),
        },
    ]


@attr.s
class TilekeeperCoreClient(CoreCrudClient):  # type: ignore[misc]
    """Collections also link to their aggregation endpoints (the extension requires it),
    and searches are checked for what pgstac cannot answer."""

    async def _search_base(self, search_request: Any, request: Request) -> Any:
        checked_search(request, search_request)
        await refuse_hidden_token(request, getattr(search_request, "token", None))
        search_request.collections = await visible_collections(request, search_request.collections)
        result = await campaign_page(request, search_request)
        if result is None:
            result = await super()._search_base(search_request, request=request)
        shown = Shown.of(getattr(search_request, "fields", None))
        base_url = get_base_url(request)
        for item in result.get("features", []):
            as_served(item, base_url, shown)
        return result

    # Searches and items answer as bytes (responses.py).
    async def get_search(self, request: Request, **kwargs: Any) -> Any:
        return geojson(await super().get_search(request=request, **kwargs))

    async def post_search(self, search_request: Any, request: Request, **kwargs: Any) -> Any:
        return geojson(await super().post_search(search_request, request=request, **kwargs))

    async def item_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Any:
        return geojson(await super().item_collection(collection_id, request=request, **kwargs))

    async def get_item(
        self, item_id: str, collection_id: str, request: Request, **kwargs: Any
    ) -> Any:
        return geojson(await super().get_item(item_id, collection_id, request=request, **kwargs))

    def _clean_search_args(
        self,
        base_args: dict[str, Any],
        filter_query: str | None = None,
        filter_lang: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        args: dict[str, Any] = super()._clean_search_args(base_args, **kwargs)
        if filter_query:  # parsed and validated once per distinct filter (search_input.py)
            args["filter"], args["filter_lang"] = validated_filter(filter_query, filter_lang)
        return args

    async def get_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Any:
        collection = await super().get_collection(collection_id, request=request, **kwargs)
        collection["links"].extend(_aggregation_links(request, collection_id))
        with_web_map_links(collection, mosaic_links(get_base_url(request), collection))
        return shown_collection(collection, await current_identity(request))

    async def all_collections(self, request: Request, **kwargs: Any) -> Any:
        fields = kwargs.get("fields")
        if fields:
            # The id stays: upstream links each collection by it (KeyError without).
            kwargs["fields"] = [f for f in fields if f.strip() != "-id"] + ["id"]
        refuse_definition_search(kwargs.get("filter_expr"), kwargs.get("filter_lang"), kwargs)
        hidden = await hidden_collections(request)
        if hidden:
            # Excluded inside the query: pages and numberMatched count visible ones only.
            own = collection_filter(kwargs.get("filter_expr"), kwargs.get("filter_lang"))
            if kwargs.get("query"):
                own = _and(own, query_as_cql2(kwargs.pop("query")))
            kwargs["filter_expr"] = orjson.dumps(excluding(own, hidden)).decode()
            kwargs["filter_lang"] = "cql2-json"
        answer = await super().all_collections(request=request, **kwargs)
        # With `fields`, upstream answers a ready JSONResponse.
        result = orjson.loads(answer.body) if isinstance(answer, Response) else answer
        identity = await current_identity(request)
        result["collections"] = [
            shown_collection(c, identity) for c in result.get("collections", [])
        ]
        for collection in result.get("collections", []):
            if isinstance(collection, dict) and "id" in collection:
                collection.setdefault("links", []).extend(
                    _aggregation_links(request, collection["id"])
                )
                with_web_map_links(collection, mosaic_links(get_base_url(request), collection))
        return JSONResponse(result) if isinstance(answer, Response) else result


def refuse_definition_search(text: str | None, lang: str | None, kwargs: dict[str, Any]) -> None:
    """A campaign's definition (webhook URLs with their secrets, owners) is shown to
    readers redacted; filtering or sorting collections by it would read it one guess at a
    time, so collection search does not look into it."""
    names = property_names(collection_filter(text, lang))
    sortby = kwargs.get("sortby") or []
    names += sortby.split(",") if isinstance(sortby, str) else [str(s) for s in sortby]
    if kwargs.get("query"):
        names += property_names(query_as_cql2(kwargs["query"]))
    if any(CAMPAIGN_KEY in name for name in names):
        raise HTTPException(
            400,
            f"collections cannot be searched or sorted by {CAMPAIGN_KEY}: a campaign's "
            "definition is read with GET /campaigns/{id}",
        )


def collection_filter(text: str | None, lang: str | None) -> dict[str, Any] | None:
    """A collection search's own filter as CQL2-JSON (400 as upstream words it)."""
    if not text:
        return None
    try:
        if lang == "cql2-json" or text.lstrip().startswith("{"):
            parsed = orjson.loads(text)
            Expr(parsed).validate()
            return dict(parsed)
        expr = Expr(text)
        expr.validate()
        return dict(expr.to_json())
    except Exception as exc:  # cql2 raises bare Exceptions for parse errors
        raise HTTPException(400, f"Invalid filter: {exc}") from None


_QUERY_OPS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def query_as_cql2(query: Any) -> dict[str, Any]:
    """The Query extension's ``{"property": {"op": value}}`` as CQL2-JSON, so that it
    combines with a filter (pgstac takes one or the other)."""
    parsed = orjson.loads(query) if isinstance(query, str | bytes) else query
    if not isinstance(parsed, dict):
        raise HTTPException(400, "query must be a JSON object")
    terms: list[dict[str, Any]] = []
    for name, ops in parsed.items():
        if not isinstance(ops, dict):
            raise HTTPException(400, f"query.{name} must be an object of operators")
        prop = {"property": name}
        for op, value in ops.items():
            if op in _QUERY_OPS:
                terms.append({"op": _QUERY_OPS[op], "args": [prop, value]})
            elif op == "in" and isinstance(value, list):
                terms.append({"op": "in", "args": [prop, value]})
            elif op in ("startsWith", "endsWith", "contains") and isinstance(value, str):
                pattern = {"startsWith": "{}%", "endsWith": "%{}", "contains": "%{}%"}[op]
                terms.append({"op": "like", "args": [prop, pattern.format(value)]})
            else:
                raise HTTPException(400, f"query.{name}: unsupported operator {op!r}")
    if not terms:
        raise HTTPException(400, "query has no conditions")
    return terms[0] if len(terms) == 1 else {"op": "and", "args": terms}


def _and(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    return b if a is None else {"op": "and", "args": [a, b]}


@attr.s
class AtomicBulkTransactionsClient(BulkTransactionsClient):  # type: ignore[misc]
    """Bulk writes are all or nothing.

    Upstream stores the valid items of a batch and answers 200 with the invalid ones in
    the body, which clients (the openEO job database among them) take for success.
    Here one invalid item rejects the batch with 400, listing every invalid item, and
    the valid ones go to pgstac in a single statement, which is atomic.
    """

    async def bulk_item_insert(self, items: Items, **kwargs: Any) -> dict[str, Any]:
        request: Request = kwargs["request"]
        collection_id = request.path_params["collection_id"]
        await refuse_campaign_writes(request, collection_id)
        valid: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for key, item in items.items.items():
            try:
                check_item_shape(item, max_chars(request))
                self._validate_item(request, item, collection_id, key)
            except HTTPException as exc:
                errors.append({"id": key, "msg": exc.detail})
                continue
            except Exception as exc:  # validation of arbitrary JSON: report, don't crash
                errors.append({"id": key, "msg": str(exc)})
                continue
            item["collection"] = collection_id
            valid.append(item)
        if errors:
            raise BulkWriteRejected(len(items.items), errors)
        if valid:
            func = (
                "create_items" if items.method == BulkTransactionMethod.INSERT else "upsert_items"
            )
            async with (
                writing_items_into(request, collection_id),
                request.app.state.get_connection(request, "w") as conn,
            ):
                await dbfunc(conn, func, valid)
        return {"received": len(items.items), "success": len(valid), "skipped": 0, "errors": []}
