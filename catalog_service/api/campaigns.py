"""Campaign routes: HTTP in, job-store calls, HTTP out (the tile jobs' routes are in
job_routes.py).

Status changes of campaign tiles go through these routes only; the standard STAC
transaction routes refuse to touch a campaign's items (see ``clients.py``).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import ValidationError
from shapely.geometry import shape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response

from catalog_service import geojson_check
from catalog_service.api.auth import current_identity, require
from catalog_service.api.campaign_models import (
    MAX_TILES_PER_REQUEST,
    CampaignOut,
    CampaignPatch,
    CampaignsOut,
    SummaryOut,
    TilesIn,
    TilesRegistered,
)
from catalog_service.api.deps import (
    BodyRoute,
    Campaign,
    Json,
    ReadConnection,
    WriteConnection,
    document_body,
    strict_json,
)
from catalog_service.api.errors import BadRequest, error_response, validation_problems
from catalog_service.api.job_routes import create_jobs_router
from catalog_service.api.limits import string_limit_problem
from catalog_service.api.mapview import campaign_list_page, wants_html
from catalog_service.api.openapi import documented
from catalog_service.api.visibility import hidden_collections, shown_campaign
from catalog_service.bulk import paused_gc
from catalog_service.database.queryables import value_problem
from catalog_service.egress import EgressRefused, check_stored
from catalog_service.ids import PRODUCTS_SUFFIX, campaign_products_id, id_problem
from catalog_service.jobs import definitions, queries, workers
from catalog_service.jobs import status as job_status
from catalog_service.jobs.campaign import (
    RESERVED_KEYS,
    CampaignDefinition,
    reserved_message,
)
from catalog_service.jobs.errors import CampaignExists, CampaignInUse, StoreError
from catalog_service.jobs.registration import TileRegistrar
from catalog_service.jobs.summary import summarize

# Loader runs hold a database connection and a thread each; a few at a time is plenty.
CONCURRENT_REGISTRATIONS = 2

CAMPAIGN_WRITE = [Depends(require("campaigns:write"))]


def _links(request: Request, campaign: str) -> list[dict[str, str]]:
    base = str(request.base_url).rstrip("/")
    return [
        {"rel": "self", "href": f"{base}/campaigns/{campaign}", "type": "application/json"},
        {"rel": "collection", "href": f"{base}/collections/{campaign}", "type": "application/json"},
        {"rel": "jobs", "href": f"{base}/campaigns/{campaign}/jobs", "type": "application/json"},
        {
            "rel": "summary",
            "href": f"{base}/campaigns/{campaign}/summary",
            "type": "application/json",
        },
    ]


def _campaign_out(request: Request, definition: CampaignDefinition) -> dict[str, Any]:
    identity = getattr(request.state, "identity", None)
    shown = shown_campaign(definition.model_dump(mode="json", exclude_none=True), identity)
    return {**shown, "links": _links(request, definition.id)}


_GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
)


def _check_tile(raw: Any, n: int, max_chars: int) -> dict[str, Any]:
    """One tile of a registration, checked by hand: a pydantic model per tile costs
    more than storing it. PostGIS reads the coordinates (errors become 400s)."""
    if not isinstance(raw, dict):
        raise BadRequest(f"tiles.{n}: a tile is an object with id, geometry, bbox, properties")
    tile_id, geometry = raw.get("id"), raw.get("geometry")
    bad_id = id_problem(tile_id, f"tiles.{n}.id")
    if bad_id:
        raise BadRequest(bad_id)
    if not isinstance(geometry, dict):
        raise BadRequest(f"tile {tile_id}: a GeoJSON geometry is required")
    if geometry.get("type") not in _GEOMETRY_TYPES or not isinstance(
        geometry.get("coordinates"), list
    ):
        raise BadRequest(
            f"tile {tile_id}: geometry is not GeoJSON (a type among "
            f"{', '.join(sorted(_GEOMETRY_TYPES))} with coordinates)"
        )
    bbox = raw.get("bbox")
    if bbox is None:
        try:
            bbox = list(shape(geometry).bounds)
        except Exception as exc:
            raise BadRequest(f"tile {tile_id}: geometry is not GeoJSON ({exc})") from None
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) for v in bbox)
    ):
        raise BadRequest(f"tile {tile_id}: bbox must have 4 numbers")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise BadRequest(f"tile {tile_id}: properties must be an object")
    too_long = string_limit_problem(properties, max_chars, f"tile {tile_id}")
    if too_long:
        raise BadRequest(too_long)
    given = properties.get("status")
    if given is not None and given != job_status.NOT_STARTED:
        raise BadRequest(
            f"tile {tile_id}: tiles enter as {job_status.NOT_STARTED}; a status changes only "
            f"through job changes (POST /campaigns/{{id}}/jobs/changes), not {given!r}"
        )
    if typed := value_problem(properties, f"tile {tile_id}"):
        raise BadRequest(typed)
    if reserved := RESERVED_KEYS.intersection(properties):
        raise BadRequest(reserved_message(str(tile_id), reserved))
    return {"id": tile_id, "geometry": geometry, "bbox": bbox, "properties": properties}


@document_body(TilesIn)
async def parse_tiles(request: Request) -> list[dict[str, Any]]:
    """A registration's tiles, read as strict JSON and checked by hand: not through
    ``TilesIn`` (which describes the same body in the OpenAPI), because a registration
    carries up to 100,000 footprints whose every coordinate pydantic would validate one by
    one, while the geometry checks here run vectorised (geojson_check, shapely)."""
    raw = await request.body()
    with paused_gc():
        data = strict_json(raw)
        tiles = data.get("tiles") if isinstance(data, dict) else None
        if not isinstance(tiles, list):
            raise BadRequest('the body must be {"tiles": [...]}')
        if len(tiles) > MAX_TILES_PER_REQUEST:
            raise BadRequest(f"at most {MAX_TILES_PER_REQUEST:,} tiles per request; send batches")
        max_chars = request.app.state.api_settings.max_string_chars
        checked = [_check_tile(t, n, max_chars) for n, t in enumerate(tiles)]
    if len({t["id"] for t in checked}) != len(checked):
        raise BadRequest("tile ids must be unique within a request")
    found = geojson_check.problems([t["geometry"] for t in checked])
    if found:
        listed = "; ".join(
            f"tile {checked[n]['id']}: {why}" for n, why in sorted(found.items())[:10]
        )
        raise BadRequest(f"{len(found)} tiles have a geometry that cannot be stored: {listed}")
    return checked


async def _with_creator(request: Request, definition: CampaignDefinition) -> CampaignDefinition:
    """Whoever creates a campaign (or makes it private) is one of its owners: only owners
    and admins change a campaign, and a private one is seen by them alone."""
    identity = await current_identity(request)
    if identity is None:
        if definition.visibility == "private":
            raise BadRequest("a private campaign needs an owner: send a key or token")
        return definition
    if identity.name in definition.owners:
        return definition
    return definition.model_copy(update={"owners": [*definition.owners, identity.name]})


def _delete_local_files(request: Request, collection_id: str) -> None:
    """A deleted campaign's product files go with their records (a campaign of the same
    id made later by somebody else must not find them)."""
    root: Path | None = request.app.state.products_dir
    if root is not None and collection_id:
        shutil.rmtree(root / collection_id, ignore_errors=True)


def create_router() -> APIRouter:
    router = APIRouter(prefix="/campaigns", tags=["Campaigns"], route_class=BodyRoute)

    @router.post(
        "",
        dependencies=CAMPAIGN_WRITE,
        status_code=201,
        summary="Create a campaign (a collection of tile jobs)",
        response_model=CampaignOut,
    )
    async def create_campaign(
        request: Request,
        definition: Annotated[CampaignDefinition, Json(CampaignDefinition)],
        conn: WriteConnection,
    ) -> JSONResponse:
        check_stored(definition.fetched_urls())
        if definition.id.endswith(PRODUCTS_SUFFIX):
            raise BadRequest(
                f"a campaign id may not end with {PRODUCTS_SUFFIX}: that names a campaign's "
                "product collection"
            )
        definition = await _with_creator(request, definition)
        bbox = list(shape(definition.aoi).bounds) if definition.aoi else None
        products_id = campaign_products_id(definition.id)
        if await queries.collection_exists(conn, products_id):
            raise CampaignExists(
                f"the collection {products_id} exists: campaign {definition.id}'s products "
                "would go there; choose another campaign id"
            )
        await definitions.create_campaign(conn, definition, bbox)
        return documented(_campaign_out(request, definition), 201)

    @router.get(
        "",
        summary="List campaigns (an HTML page with their maps when a browser asks)",
        response_model=CampaignsOut,
        responses={200: {"content": {"text/html": {}}}},
    )
    async def list_campaigns(request: Request, conn: ReadConnection) -> Response:
        hidden = await hidden_collections(request)
        shown = [d for d in await definitions.list_definitions(conn) if d.id not in hidden]
        if wants_html(request):
            counts = {d.id: await queries.status_counts(conn, d.id) for d in shown}
            return HTMLResponse(campaign_list_page(request, shown, counts))
        return documented({"campaigns": [_campaign_out(request, d) for d in shown]})

    @router.get("/{campaign_id}", summary="A campaign's definition", response_model=CampaignOut)
    async def get_campaign(request: Request, campaign: Campaign) -> JSONResponse:
        return documented(_campaign_out(request, campaign))

    @router.patch(
        "/{campaign_id}",
        dependencies=CAMPAIGN_WRITE,
        summary="Change a campaign's title, description, visibility, owners, back-ends, "
        "process, job options, retry policy or order",
        response_model=CampaignOut,
    )
    async def patch_campaign(
        request: Request,
        campaign_id: str,
        body: Annotated[CampaignPatch, Json(CampaignPatch)],
        current: Campaign,
        conn: WriteConnection,
    ) -> JSONResponse:
        patch = body.model_dump(mode="json", exclude_unset=True)
        try:
            wanted = CampaignDefinition.model_validate({**current.model_dump(), **patch})
        except ValidationError as exc:
            raise BadRequest(
                f"the changed campaign is not valid: {validation_problems(exc.errors())}"
            ) from None
        check_stored(wanted.fetched_urls())
        wanted = await _with_creator(request, wanted)
        patch["owners"] = wanted.owners
        definition = await definitions.update_definition(conn, campaign_id, patch)
        return documented(_campaign_out(request, definition))

    @router.delete(
        "/{campaign_id}",
        dependencies=CAMPAIGN_WRITE,
        status_code=204,
        summary="Delete a campaign with its tile jobs and their history",
    )
    async def delete_campaign(
        request: Request,
        campaign_id: str,
        _: Campaign,
        conn: WriteConnection,
        products: bool = Query(
            False,
            description="Also delete its products: their catalogue records and their files "
            "in the local product store (`tilekeeper campaign delete --products` empties its "
            "folder in object storage too). "
            "Without it, a campaign with products is kept.",
        ),
    ) -> Response:
        products_id = campaign_products_id(campaign_id)
        count = await queries.item_count(conn, products_id)
        if count and not products:
            raise CampaignInUse(
                f"campaign {campaign_id} has {count} products in {products_id}; "
                "delete with ?products=true to remove their records too"
            )
        exists = await queries.collection_exists(conn, products_id)
        await definitions.delete_campaign(conn, campaign_id, products_id if exists else None)
        if products:
            await run_in_threadpool(_delete_local_files, request, products_id)
        return Response(status_code=204)

    @router.post(
        "/{campaign_id}/tiles",
        dependencies=CAMPAIGN_WRITE,
        summary="Register tiles as not_started jobs",
        response_model=TilesRegistered,
    )
    async def register_tiles(
        request: Request,
        tiles: Annotated[list[dict[str, Any]], Depends(parse_tiles)],
        campaign: Campaign,
    ) -> TilesRegistered:
        registrar: TileRegistrar = request.app.state.tile_registrar
        async with request.app.state.registrations:
            new = await run_in_threadpool(registrar.register, campaign, tiles)
        return TilesRegistered(received=len(tiles), registered=new, existing=len(tiles) - new)

    @router.get(
        "/{campaign_id}/summary",
        summary="Progress, runtime, cost and ETA figures",
        response_model=SummaryOut,
    )
    async def summary(campaign_id: str, campaign: Campaign, conn: ReadConnection) -> JSONResponse:
        figures = await summarize(conn, campaign)
        figures["workers"] = await workers.listing(conn, campaign_id)
        return documented(figures)

    return router


def add_campaign_routes(app: FastAPI) -> None:
    # Per app (not per module): an asyncio semaphore belongs to one event loop.
    app.state.registrations = asyncio.Semaphore(CONCURRENT_REGISTRATIONS)
    app.include_router(create_router())
    app.include_router(create_jobs_router())

    async def egress_refused(request: Request, exc: Exception) -> JSONResponse:
        return error_response("BadRequest", str(exc), 400)

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        # Each store error says its HTTP status, STAC code and extra fields itself.
        assert isinstance(exc, StoreError)
        return error_response(exc.code, str(exc), exc.status, **exc.extra())

    app.add_exception_handler(EgressRefused, egress_refused)
    app.add_exception_handler(StoreError, store_error)


__all__ = ["add_campaign_routes"]
