"""stac-fastapi-pgstac clients, adjusted where tilekeeper promises more."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import attr
import orjson
from fastapi import HTTPException, Request
from stac_fastapi.extensions.bulk_transactions import BulkTransactionMethod, Items
from stac_fastapi.pgstac.core import CoreCrudClient
from stac_fastapi.pgstac.db import dbfunc
from stac_fastapi.pgstac.transactions import BulkTransactionsClient, TransactionsClient
from starlette.responses import JSONResponse, Response

from catalog_service import geojson_check
from catalog_service.api.errors import BulkWriteRejected
from catalog_service.api.limits import string_limit_problem
from catalog_service.api.search_input import check_filter, check_ids, flat_bbox
from catalog_service.api.visibility import (
    hidden_collections,
    visible_collections,
    without_hidden,
)
from catalog_service.ids import id_problem
from catalog_service.jobs.campaign import CAMPAIGN_KEY


class CampaignItemsAreManaged(Exception):
    """A raw STAC write aimed at a campaign's tile jobs."""


async def refuse_campaign_writes(request: Request, collection_id: str) -> None:
    """Campaign tiles change only through the job store (transition rules, history).

    A raw write would bypass both, so it fails loudly with 409 and says where to go:
    this is what makes the stock STACAPIJobDatabase fail instead of corrupting a campaign.
    """
    async with request.app.state.get_connection(request, "r") as conn:
        managed = await conn.fetchval(
            "SELECT content ? $2 FROM pgstac.collections WHERE id = $1", collection_id, CAMPAIGN_KEY
        )
    if managed:
        raise CampaignItemsAreManaged(
            f"{collection_id} is a tilekeeper campaign: its tile jobs change only through "
            f"/campaigns/{collection_id}/jobs/changes (status transitions with history). "
            "Use catalog_service.CampaignJobDatabase as the job database, or register tiles "
            f"with POST /campaigns/{collection_id}/tiles."
        )


async def refuse_campaign_collection_writes(request: Request, collection_id: str) -> None:
    """A campaign's collection is its definition and its tiles: it changes through the
    campaign routes only (which keep the two consistent and apply their rules)."""
    async with request.app.state.get_connection(request, "r") as conn:
        managed = await conn.fetchval(
            "SELECT content ? $2 FROM pgstac.collections WHERE id = $1", collection_id, CAMPAIGN_KEY
        )
    if managed:
        raise CampaignItemsAreManaged(
            f"{collection_id} is a tilekeeper campaign: change it with PATCH "
            f"/campaigns/{collection_id} and delete it with DELETE /campaigns/{collection_id}."
        )


def _refuse_campaign_definition(body: Any) -> None:
    text = body if isinstance(body, str) else repr(body)
    if CAMPAIGN_KEY in text:
        raise HTTPException(
            400, f"`{CAMPAIGN_KEY}` is made by POST /campaigns, not by a collection write"
        )


def _check_item(request: Request, item: Any) -> None:
    """An item (request model) as the catalogue stores it: id rule, geometry, strings."""
    plain = _plain(item) if item is not None else {}
    check_item_shape(plain, _max_chars(request))


def _max_chars(request: Request) -> int:
    limit: int = request.app.state.api_settings.max_string_chars
    return limit


def _check_collection(request: Request, collection: Any) -> None:
    plain = _plain(collection)
    problem = id_problem(plain.get("id"), "collection id") or string_limit_problem(
        plain, _max_chars(request), "collection"
    )
    if problem:
        raise HTTPException(400, problem)


def _plain(value: Any) -> Any:
    """A request model as plain JSON values."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


COLLECTION_REQUIRED = ("type", "stac_version", "id", "description", "links", "license", "extent")
ITEM_REQUIRED = ("type", "stac_version", "id", "properties", "links", "assets")


def _keeps_required(patch: Any, required: tuple[str, ...]) -> None:
    """A patch may not remove (or null) what STAC requires: the stored object would be
    invalid and every later read of it would fail its schema."""
    if isinstance(patch, dict):
        gone = [key for key in required if key in patch and patch[key] is None]
    else:
        gone = [
            op.get("path", "").strip("/")
            for op in patch
            if isinstance(op, dict)
            and op.get("path", "").strip("/") in required
            and (op.get("op") in ("remove", "move") or op.get("value", ...) is None)
        ]
    if gone:
        raise HTTPException(400, f"a patch may not remove required fields: {', '.join(gone)}")


def _patched_geometry_is_storable(patch: Any) -> None:
    """A patch sets an item's geometry whole, to a geometry that can be stored."""
    if isinstance(patch, dict):
        if "geometry" in patch:
            reason = geojson_check.problem(patch["geometry"])
            if reason:
                raise HTTPException(400, f"geometry: {reason}")
        return
    for op in patch:
        if not isinstance(op, dict):
            continue
        path = str(op.get("path", ""))
        if path == "/geometry" and op.get("op") in ("add", "replace"):
            reason = geojson_check.problem(op.get("value"))
            if reason:
                raise HTTPException(400, f"geometry: {reason}")
        elif path.startswith("/geometry") or str(op.get("from", "")).startswith("/geometry"):
            raise HTTPException(
                400,
                "a patch replaces the geometry whole "
                '({"op": "replace", "path": "/geometry", "value": {...}})',
            )


def _same_id(request: Request, body_id: Any) -> None:
    path_id = request.path_params.get("collection_id")
    if body_id is not None and path_id is not None and body_id != path_id:
        raise HTTPException(400, f"the body's id {body_id!r} differs from the path's {path_id!r}")


@attr.s
class GuardedTransactionsClient(TransactionsClient):  # type: ignore[misc]
    """Standard STAC transactions, except on campaigns: their items change through the
    job store, their collections through the campaign routes."""

    async def create_collection(self, collection: Any, request: Request, **kwargs: Any) -> Any:
        _check_collection(request, collection)
        _refuse_campaign_definition(collection.model_dump(mode="json"))
        return await super().create_collection(collection, request=request, **kwargs)

    async def update_collection(self, collection: Any, request: Request, **kwargs: Any) -> Any:
        _check_collection(request, collection)
        # Upstream writes whatever id the body names (PUT /collections/A could replace B).
        _same_id(request, collection.id)
        await refuse_campaign_collection_writes(request, collection.id)
        _refuse_campaign_definition(collection.model_dump(mode="json"))
        return await super().update_collection(collection, request=request, **kwargs)

    async def patch_collection(
        self, collection_id: str, patch: Any, request: Request, **kwargs: Any
    ) -> Any:
        if not isinstance(patch, list):
            _same_id(request, getattr(patch, "id", None))
        await refuse_campaign_collection_writes(request, collection_id)
        _refuse_campaign_definition(_plain(patch))
        _keeps_required(_plain(patch), COLLECTION_REQUIRED)
        too_long = string_limit_problem(_plain(patch), _max_chars(request), "patch")
        if too_long:
            raise HTTPException(400, too_long)
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
            _check_item(request, feature)
        if features is None:
            return await super().create_item(collection_id, item, request=request, **kwargs)
        # A FeatureCollection: upstream answers an empty 201, even for no features.
        if not features:
            raise HTTPException(400, "the FeatureCollection has no features; nothing was stored")
        await super().create_item(collection_id, item, request=request, **kwargs)
        ids = [feature.id for feature in features]
        return JSONResponse({"created": len(ids), "ids": ids}, status_code=201)

    async def update_item(
        self, request: Request, collection_id: str, item_id: str, item: Any, **kwargs: Any
    ) -> Any:
        await refuse_campaign_writes(request, collection_id)
        _check_item(request, item)
        return await super().update_item(request, collection_id, item_id, item, **kwargs)

    async def patch_item(
        self, collection_id: str, item_id: str, patch: Any, request: Request, **kwargs: Any
    ) -> Any:
        await refuse_campaign_writes(request, collection_id)
        _keeps_required(_plain(patch), ITEM_REQUIRED)
        _patched_geometry_is_storable(_plain(patch))
        too_long = string_limit_problem(_plain(patch), _max_chars(request), "patch")
        if too_long:
            raise HTTPException(400, too_long)
        return await super().patch_item(collection_id, item_id, patch, request=request, **kwargs)

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


def checked_search(request: Request, search: Any) -> None:
    """A search model (or dict) made safe for pgstac: a 2D bbox, bounded ids and filter."""
    settings = request.app.state.api_settings

    def get(name: str) -> Any:
        return search.get(name) if isinstance(search, dict) else getattr(search, name, None)

    bbox = flat_bbox(get("bbox"))
    if isinstance(search, dict):
        search["bbox"] = bbox
    elif bbox is not None:
        search.bbox = tuple(bbox)
    check_ids(get("ids"), settings.max_ids)
    check_filter(get("filter") or get("filter_expr"), settings.max_filter_terms)


@attr.s
class TilekeeperCoreClient(CoreCrudClient):  # type: ignore[misc]
    """Collections also link to their aggregation endpoints (the extension requires it),
    and searches are checked for what pgstac cannot answer."""

    async def _search_base(self, search_request: Any, request: Request) -> Any:
        checked_search(request, search_request)
        search_request.collections = await visible_collections(request, search_request.collections)
        return await super()._search_base(search_request, request=request)

    async def get_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Any:
        collection = await super().get_collection(collection_id, request=request, **kwargs)
        collection["links"].extend(_aggregation_links(request, collection_id))
        return collection

    async def all_collections(self, request: Request, **kwargs: Any) -> Any:
        hidden = await hidden_collections(request)
        fields = kwargs.get("fields")
        if fields:
            # The id stays: upstream links each collection by it (KeyError without), and
            # hidden collections are recognised by it.
            kwargs["fields"] = [f for f in fields if f.strip() != "-id"] + ["id"]
        answer = await super().all_collections(request=request, **kwargs)
        # With `fields`, upstream answers a ready JSONResponse.
        result = orjson.loads(answer.body) if isinstance(answer, Response) else answer
        listed = result.get("collections", [])
        shown = without_hidden(listed, hidden)
        if len(shown) != len(listed):
            # Hidden ones are dropped from the page (which may come out short).
            result["collections"] = shown
            for count in ("numberMatched", "numberReturned"):
                if isinstance(result.get(count), int):
                    result[count] -= len(listed) - len(shown)
        for collection in result.get("collections", []):
            if isinstance(collection, dict) and "id" in collection:
                collection.setdefault("links", []).extend(
                    _aggregation_links(request, collection["id"])
                )
        return JSONResponse(result) if isinstance(answer, Response) else result


def check_item_shape(item: Any, max_chars: int) -> None:
    """What pgstac needs of a raw item, checked before anything is written."""
    if not isinstance(item, dict):
        raise HTTPException(400, "an item must be a JSON object")
    bad = id_problem(item.get("id"), "item id") or string_limit_problem(
        item, max_chars, f"item {item.get('id')}"
    )
    if bad:
        raise HTTPException(400, bad)
    if item.get("type") != "Feature":
        raise HTTPException(400, "`type` must be 'Feature'")
    geometry = item.get("geometry")
    if geometry is not None:
        reason = geojson_check.problem(geometry)
        if reason:
            raise HTTPException(400, f"item {item['id']}: {reason}")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise HTTPException(400, "`properties` must be an object")
    stamps = (
        [props.get("datetime")]
        if props.get("datetime")
        else [props.get("start_datetime"), props.get("end_datetime")]
    )
    if not all(stamps):
        raise HTTPException(
            400, "`properties.datetime` (or both start_datetime and end_datetime) is required"
        )
    for stamp in stamps:
        try:
            datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            raise HTTPException(400, f"{stamp!r} is not an RFC 3339 datetime") from None


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
                check_item_shape(item, _max_chars(request))
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
            async with request.app.state.get_connection(request, "w") as conn:
                await dbfunc(conn, func, valid)
        return {"received": len(items.items), "success": len(valid), "skipped": 0, "errors": []}
