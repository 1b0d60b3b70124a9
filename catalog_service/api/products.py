"""Product routes: product versions written with their collection and job item in one
transaction, the harvest state of campaign tiles, and the local product store's files
served with Range requests (GDAL, QGIS and STAC Browser read COGs by ranges)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import FileResponse, JSONResponse

from catalog_service import products
from catalog_service.api.auth import current_identity, require
from catalog_service.api.deps import BodyRoute, FreshConnection, Json, WriteConnection
from catalog_service.api.errors import error_response
from catalog_service.api.visibility import (
    missing_campaign,
    named_collection,
    require_owner,
)
from catalog_service.api.write_checks import check_item_shape
from catalog_service.ids import ID_PATTERN, campaign_products_id
from catalog_service.settings import ProductSettings

MAX_PRODUCTS_PER_REQUEST = 1000

PRODUCT_WRITE = [Depends(require("products:write"))]


class JobRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    campaign: str = Field(pattern=ID_PATTERN)
    tile: str = Field(min_length=1, max_length=200)


class ProductWrite(BaseModel):
    """Product items (one per product) and, for a campaign tile, its job."""

    model_config = ConfigDict(extra="forbid")
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_PRODUCTS_PER_REQUEST)
    job: JobRef | None = None


class ProductsIn(BaseModel):
    """Writes applied in one transaction: all or none."""

    model_config = ConfigDict(extra="forbid")
    writes: list[ProductWrite] = Field(min_length=1, max_length=MAX_PRODUCTS_PER_REQUEST)


class Written(BaseModel):
    id: str
    version: int
    result: Literal["created", "updated", "unchanged"]


class WriteOut(BaseModel):
    items: list[Written]


class ProductsOut(BaseModel):
    writes: list[WriteOut]


class HarvestStateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["pending", "failed"]
    error: str | None = Field(default=None, max_length=products.MAX_ERROR)


class HarvestStateOut(BaseModel):
    tile: str
    state: Literal["pending", "failed"]


class HarvestTile(BaseModel):
    tile: str
    properties: dict[str, Any]


class HarvestOut(BaseModel):
    tiles: list[HarvestTile]


_PRODUCT_SCHEMES = ("http", "https", "s3")


def product_href_problem(href: Any) -> str | None:
    """A product's file is on the web, in a bucket, or the API's own
    (``products/files/...``, relative to its root): anything else (``javascript:``, a
    local path, ``../``) broke GDAL's STACIT mosaic of the whole collection for everyone."""
    if not isinstance(href, str) or not href:
        return "href must be a URL"
    parts = urlsplit(href)
    if parts.scheme:
        if parts.scheme.lower() in _PRODUCT_SCHEMES and parts.netloc:
            return None
        return f"href must be an http(s) or s3 URL or relative to the API, not {parts.scheme}:"
    if href.startswith("/") or ".." in href.split("/") or not href.startswith("products/files/"):
        return "a relative href must be the API's own products/files/<key>"
    return None


def _check_items(items: list[dict[str, Any]], max_chars: int) -> None:
    """Product items as every item write checks them (id, geometry, strings, datetime),
    with a bbox."""
    for item in items:
        check_item_shape(item, max_chars)
        if not isinstance(item.get("bbox"), list) or item.get("geometry") is None:
            raise HTTPException(400, f"product {item['id']}: bbox and geometry are required")
        assets = item.get("assets")
        for key, asset in assets.items() if isinstance(assets, dict) else []:
            href = asset.get("href") if isinstance(asset, dict) else None
            if problem := product_href_problem(href):
                raise HTTPException(400, f"product {item['id']}: asset {key}: {problem}")


async def _check_product_target(request: Request, collection_id: str, body: ProductsIn) -> None:
    """Products go into a product collection, never a campaign's tiles; a job is marked
    only by an owner of its campaign; a plain collection needs the STAC write scope (the
    route's guard already checked the owners of a campaign's own ``X-products``)."""
    identity = await current_identity(request)
    target = await named_collection(request, collection_id)
    if target.is_campaign:
        raise HTTPException(
            409,
            f"{collection_id} holds a campaign's tile jobs; its products go to "
            f"{campaign_products_id(collection_id)}",
        )
    if target.governing is None and identity is not None and not identity.may("stac:write"):
        raise HTTPException(
            403, f"{identity.name} lacks the scope stac:write to write into {collection_id}"
        )
    for campaign in sorted({w.job.campaign for w in body.writes if w.job is not None}):
        named = await named_collection(request, campaign)
        if not named.is_campaign or not named.visible_to(identity):
            raise missing_campaign(campaign)
        require_owner(request, identity, named.governing, campaign)


def create_router(products_dir: Path | None) -> APIRouter:
    router = APIRouter(tags=["Products"], route_class=BodyRoute)

    @router.post(
        "/collections/{collection_id}/products",
        dependencies=PRODUCT_WRITE,
        summary="Write product items: new versions, extent and job back-links together",
        response_model=ProductsOut,
    )
    async def write_products(
        request: Request, collection_id: str, body: Annotated[ProductsIn, Json(ProductsIn)]
    ) -> dict[str, Any]:
        if sum(len(w.items) for w in body.writes) > MAX_PRODUCTS_PER_REQUEST:
            raise HTTPException(400, f"at most {MAX_PRODUCTS_PER_REQUEST} items per request")
        await _check_product_target(request, collection_id, body)
        writes = []
        for write in body.writes:
            _check_items(write.items, request.app.state.api_settings.max_string_chars)
            job = (write.job.campaign, write.job.tile) if write.job else None
            writes.append(products.ProductWrite(write.items, job))
        # Taken once the checks pass: a refused write holds no write connection.
        async with request.app.state.get_connection(request, "w") as conn:
            written = await products.write_products(conn, collection_id, writes)
        return {"writes": [{"items": [w.as_dict() for w in ws]} for ws in written]}

    @router.put(
        "/campaigns/{campaign_id}/jobs/{tile_id}/product",
        dependencies=PRODUCT_WRITE,
        summary="Record a tile's harvest as pending or failed",
        response_model=HarvestStateOut,
    )
    async def harvest_state(
        campaign_id: str,
        tile_id: str,
        body: Annotated[HarvestStateIn, Json(HarvestStateIn)],
        conn: WriteConnection,
    ) -> HarvestStateOut:
        await products.set_harvest_state(conn, campaign_id, tile_id, body.state, body.error)
        return HarvestStateOut(tile=tile_id, state=body.state)

    @router.get(
        "/campaigns/{campaign_id}/harvest",
        summary="Finished tiles by harvest state (missing: never harvested)",
        response_model=HarvestOut,
    )
    async def to_harvest(
        campaign_id: str,
        conn: FreshConnection,
        state: list[Literal["missing", "pending", "failed", "ingested"]] = Query(
            default=["missing", "pending", "failed"]
        ),
        limit: int = Query(default=1000, ge=1, le=10_000),
    ) -> dict[str, Any]:
        tiles = await products.tiles_to_harvest(conn, campaign_id, list(state), limit)
        return {"tiles": tiles}

    if products_dir is not None:
        root = products_dir.resolve()

        async def product_file(request: Request, key: str) -> FileResponse:
            # Authorised on the canonical key (what the file system opens), never on the
            # key as sent: `./`, `x/../` and absolute paths normalise first.
            missing = HTTPException(404, f"no product file {key[:300]}")
            try:
                path = (root / key).resolve()
                found = path.is_file()
            except (OSError, ValueError):  # a NUL byte, a name too long for the disk
                raise missing from None
            if not path.is_relative_to(root) or path == root:
                raise missing
            canonical = path.relative_to(root).as_posix()
            named = await named_collection(request, canonical.split("/", 1)[0])
            identity = await current_identity(request)
            # Files of a collection that is gone are served to nobody (a deleted private
            # campaign's files must not turn public).
            if not (named.exists and named.visible_to(identity)):
                raise missing
            if not found or ".staging" in path.parts:
                raise missing
            media = "image/tiff; application=geotiff; profile=cloud-optimized"
            return FileResponse(path, media_type=media if path.suffix == ".tif" else None)

        # One route per method: one operation id each in the OpenAPI document.
        for method in ("GET", "HEAD"):
            router.add_api_route(
                "/products/files/{key:path}",
                product_file,
                methods=[method],
                operation_id=f"product_file_{method.lower()}",
                summary="A product file of the local store (Range requests answered with 206)",
                response_class=FileResponse,
            )

    return router


def add_product_routes(app: FastAPI, settings: ProductSettings) -> None:
    app.state.products_dir = settings.local_dir()
    app.include_router(create_router(settings.local_dir()))

    async def product_error(request: Request, exc: Exception) -> JSONResponse:
        code = 404 if isinstance(exc, products.CollectionNotFound | products.JobNotFound) else 400
        name = "NotFoundError" if code == 404 else "BadRequest"
        return error_response(name, str(exc), code)

    app.add_exception_handler(products.ProductError, product_error)
