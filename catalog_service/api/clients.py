"""stac-fastapi-pgstac clients, adjusted where tilekeeper promises more."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import attr
from fastapi import HTTPException, Request
from stac_fastapi.extensions.bulk_transactions import BulkTransactionMethod, Items
from stac_fastapi.pgstac.core import CoreCrudClient
from stac_fastapi.pgstac.db import dbfunc
from stac_fastapi.pgstac.transactions import BulkTransactionsClient, TransactionsClient
from stac_fastapi.types.errors import InvalidQueryParameter

from catalog_service.api.errors import BulkWriteRejected
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


@attr.s
class GuardedTransactionsClient(TransactionsClient):  # type: ignore[misc]
    """Standard STAC transactions, except on campaign items."""

    async def create_item(self, collection_id: str, *args: Any, **kwargs: Any) -> Any:
        await refuse_campaign_writes(kwargs["request"], collection_id)
        return await super().create_item(collection_id, *args, **kwargs)

    async def update_item(
        self, request: Request, collection_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        await refuse_campaign_writes(request, collection_id)
        return await super().update_item(request, collection_id, *args, **kwargs)

    async def patch_item(self, collection_id: str, *args: Any, **kwargs: Any) -> Any:
        await refuse_campaign_writes(kwargs["request"], collection_id)
        return await super().patch_item(collection_id, *args, **kwargs)

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


def require_2d_bbox(bbox: Any) -> None:
    """pgstac stores 2D footprints and fails inside PostGIS on a 6-number bbox."""
    if bbox is not None and len(bbox) == 6:
        raise InvalidQueryParameter(
            "A 3D bbox (6 numbers) is not supported: this catalogue stores 2D footprints. "
            "Send bbox as minx,miny,maxx,maxy."
        )


@attr.s
class TilekeeperCoreClient(CoreCrudClient):  # type: ignore[misc]
    """Collections also link to their aggregation endpoints (the extension requires it),
    and searches are checked for what pgstac cannot answer."""

    async def _search_base(self, search_request: Any, request: Request) -> Any:
        require_2d_bbox(getattr(search_request, "bbox", None))
        return await super()._search_base(search_request, request=request)

    async def get_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Any:
        collection = await super().get_collection(collection_id, request=request, **kwargs)
        collection["links"].extend(_aggregation_links(request, collection_id))
        return collection

    async def all_collections(self, request: Request, **kwargs: Any) -> Any:
        result = await super().all_collections(request=request, **kwargs)
        for collection in result.get("collections", []):
            if isinstance(collection, dict) and "id" in collection:
                collection.setdefault("links", []).extend(
                    _aggregation_links(request, collection["id"])
                )
        return result


def _check_item_shape(item: Any) -> None:
    """What pgstac needs of a raw item, checked before anything is written."""
    if not isinstance(item, dict):
        raise HTTPException(400, "an item must be a JSON object")
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise HTTPException(400, "`id` must be a non-empty string")
    if item.get("type") != "Feature":
        raise HTTPException(400, "`type` must be 'Feature'")
    geometry = item.get("geometry")
    if geometry is not None and not (isinstance(geometry, dict) and "type" in geometry):
        raise HTTPException(400, "`geometry` must be a GeoJSON geometry object")
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
                _check_item_shape(item)
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
