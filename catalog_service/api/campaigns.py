"""Campaign and job routes: HTTP in, job-store calls, HTTP out.

Status changes of campaign tiles go through these routes only; the standard STAC
transaction routes refuse to touch a campaign's items (see ``clients.py``).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ValidationError
from shapely.geometry import shape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response

from catalog_service import geojson_check
from catalog_service.api.auth import actor_of, current_identity, require
from catalog_service.api.campaign_models import (
    MAX_TILES_PER_REQUEST,
    WORKER_PATTERN,
    CampaignOut,
    CampaignPatch,
    CampaignsOut,
    ChangesIn,
    ChangesOut,
    ClaimIn,
    CountsOut,
    HeartbeatIn,
    HeartbeatOut,
    HistoryOut,
    JobsOut,
    LeaveOut,
    ResetIn,
    ResetOut,
    SummaryOut,
    TilesIn,
    TilesRegistered,
    WorkersOut,
)
from catalog_service.api.errors import error_response, validation_problems
from catalog_service.api.limits import string_limit_problem
from catalog_service.api.mapview import campaign_list_page, wants_html
from catalog_service.api.openapi import answers, json_body
from catalog_service.api.visibility import hidden_collections, shown_campaign
from catalog_service.bulk import paused_gc
from catalog_service.database.queryables import value_problem
from catalog_service.egress import EgressRefused, check_stored
from catalog_service.ids import id_problem
from catalog_service.jobs import definitions, queries, store, workers
from catalog_service.jobs import status as job_status
from catalog_service.jobs.campaign import (
    RESERVED_KEYS,
    CampaignDefinition,
    reserved_message,
)
from catalog_service.jobs.errors import CampaignExists, CampaignInUse, StoreError
from catalog_service.jobs.registration import TileRegistrar
from catalog_service.jobs.summary import summarize
from catalog_service.products import PRODUCTS_SUFFIX, campaign_products_id

M = TypeVar("M", bound=BaseModel)

# Loader runs hold a database connection and a thread each; a few at a time is plenty.
CONCURRENT_REGISTRATIONS = 2

CAMPAIGN_WRITE = [Depends(require("campaigns:write"))]


class BadRequest(Exception):
    """Input the routes reject before anything is written."""


async def parse_body(request: Request, model: type[M]) -> M:
    """Strict JSON (NaN and Infinity are refused, unlike json.loads) into ``model``, with
    no string over the service's limit."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON (NaN/Infinity are not JSON): {exc}") from None
    too_long = string_limit_problem(data, request.app.state.api_settings.max_string_chars, "body")
    if too_long:
        raise BadRequest(too_long)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"invalid request body: {validation_problems(exc.errors())}") from None


@asynccontextmanager
async def _conn(request: Request, mode: str) -> AsyncIterator[asyncpg.Connection]:
    async with request.app.state.get_connection(request, mode) as conn:
        yield conn


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


async def parse_tiles(request: Request) -> list[dict[str, Any]]:
    raw = await request.body()
    with paused_gc():
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                f"the body is not valid JSON (NaN/Infinity are not JSON): {exc}"
            ) from None
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


def _check_worker(worker: str) -> None:
    if not re.match(WORKER_PATTERN, worker):
        raise BadRequest(f"worker id {worker!r} must match {WORKER_PATTERN}")


def create_router() -> APIRouter:
    router = APIRouter(prefix="/campaigns", tags=["Campaigns"])

    @router.post(
        "",
        dependencies=CAMPAIGN_WRITE,
        status_code=201,
        summary="Create a campaign (a collection of tile jobs)",
        response_model=None,
        responses=answers(CampaignOut, 201),
        openapi_extra=json_body(CampaignDefinition),
    )
    async def create_campaign(request: Request) -> JSONResponse:
        definition = await parse_body(request, CampaignDefinition)
        check_stored(definition.fetched_urls())
        if definition.id.endswith(PRODUCTS_SUFFIX):
            raise BadRequest(
                f"a campaign id may not end with {PRODUCTS_SUFFIX}: that names a campaign's "
                "product collection"
            )
        definition = await _with_creator(request, definition)
        bbox = list(shape(definition.aoi).bounds) if definition.aoi else None
        async with _conn(request, "w") as conn:
            products_id = campaign_products_id(definition.id)
            if await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", products_id):
                raise CampaignExists(
                    f"the collection {products_id} exists: campaign {definition.id}'s products "
                    "would go there; choose another campaign id"
                )
            await definitions.create_campaign(conn, definition, bbox)
        return JSONResponse(_campaign_out(request, definition), status_code=201)

    @router.get(
        "",
        summary="List campaigns (an HTML page with their maps when a browser asks)",
        response_model=None,
        responses={200: {"model": CampaignsOut, "content": {"text/html": {}}}},
    )
    async def list_campaigns(request: Request) -> Any:
        hidden = await hidden_collections(request)
        async with _conn(request, "r") as conn:
            shown = [d for d in await definitions.list_definitions(conn) if d.id not in hidden]
            if wants_html(request):
                counts = {d.id: await queries.status_counts(conn, d.id) for d in shown}
                return HTMLResponse(campaign_list_page(request, shown, counts))
        return {"campaigns": [_campaign_out(request, d) for d in shown]}

    @router.get(
        "/{campaign_id}",
        summary="A campaign's definition",
        response_model=None,
        responses=answers(CampaignOut),
    )
    async def get_campaign(request: Request, campaign_id: str) -> dict[str, Any]:
        async with _conn(request, "r") as conn:
            definition = await definitions.get_definition(conn, campaign_id)
        return _campaign_out(request, definition)

    @router.patch(
        "/{campaign_id}",
        dependencies=CAMPAIGN_WRITE,
        summary="Change a campaign's title, description, visibility, owners, back-ends, "
        "process, job options, retry policy or order",
        response_model=None,
        responses=answers(CampaignOut),
        openapi_extra=json_body(CampaignPatch),
    )
    async def patch_campaign(request: Request, campaign_id: str) -> dict[str, Any]:
        patch = (await parse_body(request, CampaignPatch)).model_dump(
            mode="json", exclude_unset=True
        )
        async with _conn(request, "w") as conn:
            current = await definitions.get_definition(conn, campaign_id)
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
        return _campaign_out(request, definition)

    @router.delete(
        "/{campaign_id}",
        dependencies=CAMPAIGN_WRITE,
        status_code=204,
        summary="Delete a campaign with its tile jobs and their history",
    )
    async def delete_campaign(
        request: Request,
        campaign_id: str,
        products: bool = Query(
            False,
            description="Also delete its products: their catalogue records and their files "
            "in the local product store (`tilekeeper campaign delete --products` empties its "
            "folder in object storage too). "
            "Without it, a campaign with products is kept.",
        ),
    ) -> Response:
        products_id = campaign_products_id(campaign_id)
        async with _conn(request, "w") as conn:
            await definitions.get_definition(conn, campaign_id)
            count = await conn.fetchval(
                "SELECT count(*) FROM pgstac.items WHERE collection = $1", products_id
            )
            if count and not products:
                raise CampaignInUse(
                    f"campaign {campaign_id} has {count} products in {products_id}; "
                    "delete with ?products=true to remove their records too"
                )
            exists = await conn.fetchval(
                "SELECT 1 FROM pgstac.collections WHERE id = $1", products_id
            )
            await definitions.delete_campaign(conn, campaign_id, products_id if exists else None)
        if products:
            await run_in_threadpool(_delete_local_files, request, products_id)
        return Response(status_code=204)

    @router.post(
        "/{campaign_id}/tiles",
        dependencies=CAMPAIGN_WRITE,
        summary="Register tiles as not_started jobs",
        response_model=None,
        responses=answers(TilesRegistered),
        openapi_extra=json_body(TilesIn),
    )
    async def register_tiles(request: Request, campaign_id: str) -> dict[str, Any]:
        tiles = await parse_tiles(request)
        async with _conn(request, "r") as conn:
            definition = await definitions.get_definition(conn, campaign_id)
        registrar: TileRegistrar = request.app.state.tile_registrar
        async with request.app.state.registrations:
            new = await run_in_threadpool(registrar.register, definition, tiles)
        return {"received": len(tiles), "registered": new, "existing": len(tiles) - new}

    @router.get(
        "/{campaign_id}/jobs",
        summary="Tile jobs by status, order number or tile id",
        response_model=None,
        responses=answers(JobsOut),
    )
    async def list_jobs(
        request: Request,
        campaign_id: str,
        status: str | None = Query(None, description="Comma-separated statuses"),
        order: str | None = Query(None, description="Comma-separated order numbers"),
        tile: str | None = Query(None, description="Comma-separated tile ids"),
        limit: int = Query(1000, ge=1, le=100_000),
        after: int = Query(-1, description="Only jobs with a larger order number (paging)"),
    ) -> dict[str, Any]:
        given = [p for p in (status, order, tile) if p is not None]
        if len(given) > 1:
            raise BadRequest("give at most one of `status`, `order` or `tile`")
        if not given:  # every job, by order number (the campaign's `jobs` link)
            status = ",".join(sorted(job_status.ALL))
        async with _conn(request, "r") as conn:
            if status is not None:
                statuses = [s for s in status.split(",") if s]
                unknown = [s for s in statuses if s not in job_status.ALL]
                if unknown:
                    raise BadRequest(f"unknown status {', '.join(unknown)}")
                jobs = await queries.jobs_by_status(conn, campaign_id, statuses, limit, after)
            elif order is not None:
                try:
                    orders = [int(o) for o in order.split(",") if o]
                except ValueError:
                    raise BadRequest("`order` must be comma-separated integers") from None
                jobs = await queries.jobs_by_order(conn, campaign_id, orders)
            else:
                jobs = await queries.jobs_by_id(conn, campaign_id, (tile or "").split(","))
            if not jobs:
                await definitions.get_definition(conn, campaign_id)  # 404 for an unknown campaign
        return {"jobs": jobs}

    @router.post(
        "/{campaign_id}/jobs/changes",
        dependencies=CAMPAIGN_WRITE,
        summary="Apply status changes, all or nothing",
        response_model=None,
        responses=answers(ChangesOut),
        openapi_extra=json_body(ChangesIn),
    )
    async def change_jobs(request: Request, campaign_id: str) -> dict[str, Any]:
        body = await parse_body(request, ChangesIn)
        async with _conn(request, "w") as conn:
            outcome = await store.apply_changes(
                conn,
                campaign_id,
                body.changes,
                actor_of(request, body.actor),
                partial=body.partial,
                worker=body.worker,
            )
        return {
            "applied": outcome.applied,
            "stale": outcome.stale,
            "conflicts": [asdict(c) for c in outcome.conflicts],
        }

    @router.get(
        "/{campaign_id}/counts",
        summary="Tiles per status (maintained counters)",
        response_model=None,
        responses=answers(CountsOut),
    )
    async def counts(request: Request, campaign_id: str) -> dict[str, Any]:
        async with _conn(request, "r") as conn:
            return {"counts": await queries.status_counts(conn, campaign_id)}

    @router.get(
        "/{campaign_id}/workers",
        summary="The runner workers holding a live lease",
        response_model=None,
        responses=answers(WorkersOut),
    )
    async def list_workers(request: Request, campaign_id: str) -> dict[str, Any]:
        async with _conn(request, "r") as conn:
            await definitions.get_definition(conn, campaign_id)
            return {"workers": await workers.listing(conn, campaign_id)}

    @router.put(
        "/{campaign_id}/workers/{worker}",
        dependencies=CAMPAIGN_WRITE,
        summary="Renew a worker's lease",
        response_model=None,
        responses=answers(HeartbeatOut),
        openapi_extra=json_body(HeartbeatIn),
    )
    async def heartbeat(request: Request, campaign_id: str, worker: str) -> dict[str, Any]:
        body = await parse_body(request, HeartbeatIn)
        _check_worker(worker)
        async with _conn(request, "w") as conn:
            await definitions.get_definition(conn, campaign_id)
            await workers.heartbeat(conn, campaign_id, worker, body.lease_s, body.info)
        return {"worker": worker, "lease_s": body.lease_s}

    @router.delete(
        "/{campaign_id}/workers/{worker}",
        dependencies=CAMPAIGN_WRITE,
        summary="End a worker's lease now",
        response_model=None,
        responses=answers(LeaveOut),
    )
    async def leave(request: Request, campaign_id: str, worker: str) -> dict[str, Any]:
        _check_worker(worker)
        async with _conn(request, "w") as conn:
            left = await workers.leave(conn, campaign_id, worker)
        return {"worker": worker, "left": left}

    @router.post(
        "/{campaign_id}/workers/{worker}/claim",
        dependencies=CAMPAIGN_WRITE,
        summary="Renew the lease and claim free tiles of some statuses, in processing order",
        response_model=None,
        responses=answers(JobsOut),
        openapi_extra=json_body(ClaimIn),
    )
    async def claim(request: Request, campaign_id: str, worker: str) -> dict[str, Any]:
        body = await parse_body(request, ClaimIn)
        _check_worker(worker)
        unknown = [s for s in body.statuses if s not in job_status.ALL]
        if unknown:
            raise BadRequest(f"unknown status {', '.join(unknown)}")
        async with _conn(request, "w") as conn:
            await definitions.get_definition(conn, campaign_id)
            jobs = await workers.claim(
                conn, campaign_id, worker, body.statuses, body.limit, body.lease_s, body.tiles
            )
        return {"jobs": jobs}

    @router.get(
        "/{campaign_id}/jobs/{tile_id}/history",
        summary="A tile's status history",
        response_model=None,
        responses=answers(HistoryOut),
    )
    async def tile_history(request: Request, campaign_id: str, tile_id: str) -> dict[str, Any]:
        async with _conn(request, "r") as conn:
            rows = await store.history(conn, campaign_id, tile_id)
        return {"campaign": campaign_id, "tile": tile_id, "history": rows}

    @router.post(
        "/{campaign_id}/reset",
        dependencies=CAMPAIGN_WRITE,
        summary="Reset finished-with-failure tiles for a retry",
        response_model=None,
        responses=answers(ResetOut),
        openapi_extra=json_body(ResetIn),
    )
    async def reset(request: Request, campaign_id: str) -> dict[str, Any]:
        body = await parse_body(request, ResetIn)
        async with _conn(request, "w") as conn:
            count = await store.reset_tiles(
                conn,
                campaign_id,
                body.statuses,
                actor_of(request, body.actor),
                body.set,
                tiles=body.tiles,
                below_attempts=body.below_attempts,
            )
        return {"reset": count, "statuses": body.statuses}

    @router.get(
        "/{campaign_id}/summary",
        summary="Progress, runtime, cost and ETA figures",
        response_model=None,
        responses=answers(SummaryOut),
    )
    async def summary(request: Request, campaign_id: str) -> dict[str, Any]:
        async with _conn(request, "r") as conn:
            definition = await definitions.get_definition(conn, campaign_id)
            figures = await summarize(conn, definition)
            figures["workers"] = await workers.listing(conn, campaign_id)
            return figures

    return router


def add_campaign_routes(app: FastAPI) -> None:
    # Per app (not per module): an asyncio semaphore belongs to one event loop.
    app.state.registrations = asyncio.Semaphore(CONCURRENT_REGISTRATIONS)
    app.include_router(create_router())

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return error_response("BadRequest", str(exc), 400)

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        # Each store error says its HTTP status, STAC code and extra fields itself.
        assert isinstance(exc, StoreError)
        return error_response(exc.code, str(exc), exc.status, **exc.extra())

    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(EgressRefused, bad_request)
    app.add_exception_handler(StoreError, store_error)


__all__ = ["add_campaign_routes"]
