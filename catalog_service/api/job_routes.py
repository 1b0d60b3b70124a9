"""The tile jobs' routes of a campaign: listing, status changes (the job store's only
way in), counts, workers' leases and claims, history and retries."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import JSONResponse

from catalog_service.api.auth import actor_of, require
from catalog_service.api.campaign_models import (
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
    WorkersOut,
)
from catalog_service.api.deps import (
    BodyRoute,
    Campaign,
    FreshConnection,
    Json,
    ReadConnection,
    WorkerId,
    WriteConnection,
)
from catalog_service.api.errors import BadRequest
from catalog_service.api.openapi import documented
from catalog_service.jobs import queries, store, workers
from catalog_service.jobs import status as job_status

CAMPAIGN_WRITE = [Depends(require("campaigns:write"))]


def _statuses(listed: str) -> list[str]:
    statuses = [s for s in listed.split(",") if s]
    unknown = [s for s in statuses if s not in job_status.ALL]
    if unknown:
        raise BadRequest(f"unknown status {', '.join(unknown)}")
    return statuses


def create_jobs_router() -> APIRouter:
    router = APIRouter(prefix="/campaigns", tags=["Campaigns"], route_class=BodyRoute)

    @router.get(
        "/{campaign_id}/jobs",
        summary="Tile jobs by status, order number or tile id",
        response_model=JobsOut,
    )
    async def list_jobs(
        campaign_id: str,
        _: Campaign,
        conn: FreshConnection,
        status: str | None = Query(None, description="Comma-separated statuses"),
        order: str | None = Query(None, description="Comma-separated order numbers"),
        tile: str | None = Query(None, description="Comma-separated tile ids"),
        limit: int = Query(1000, ge=1, le=100_000),
        after: int = Query(-1, description="Only jobs with a larger order number (paging)"),
    ) -> JSONResponse:
        given = [p for p in (status, order, tile) if p is not None]
        if len(given) > 1:
            raise BadRequest("give at most one of `status`, `order` or `tile`")
        if not given:  # every job, by order number (the campaign's `jobs` link)
            status = ",".join(sorted(job_status.ALL))
        if status is not None:
            statuses = _statuses(status)
            jobs = await queries.jobs_by_status(conn, campaign_id, statuses, limit, after)
        elif order is not None:
            try:
                orders = [int(o) for o in order.split(",") if o]
            except ValueError:
                raise BadRequest("`order` must be comma-separated integers") from None
            jobs = await queries.jobs_by_order(conn, campaign_id, orders)
        else:
            jobs = await queries.jobs_by_id(conn, campaign_id, (tile or "").split(","))
        return documented({"jobs": jobs})

    @router.post(
        "/{campaign_id}/jobs/changes",
        dependencies=CAMPAIGN_WRITE,
        summary="Apply status changes, all or nothing",
        response_model=ChangesOut,
    )
    async def change_jobs(
        request: Request,
        campaign_id: str,
        body: Annotated[ChangesIn, Json(ChangesIn)],
        conn: WriteConnection,
    ) -> JSONResponse:
        outcome = await store.apply_changes(
            conn,
            campaign_id,
            body.changes,
            actor_of(request, body.actor),
            partial=body.partial,
            worker=body.worker,
        )
        return documented(
            {
                "applied": outcome.applied,
                "stale": outcome.stale,
                "conflicts": [asdict(c) for c in outcome.conflicts],
            }
        )

    @router.get(
        "/{campaign_id}/counts",
        summary="Tiles per status (maintained counters)",
        response_model=CountsOut,
    )
    async def counts(campaign_id: str, conn: FreshConnection) -> CountsOut:
        return CountsOut(counts=await queries.status_counts(conn, campaign_id))

    @router.get(
        "/{campaign_id}/workers",
        summary="The runner workers holding a live lease",
        response_model=WorkersOut,
    )
    async def list_workers(campaign_id: str, _: Campaign, conn: ReadConnection) -> JSONResponse:
        return documented({"workers": await workers.listing(conn, campaign_id)})

    @router.put(
        "/{campaign_id}/workers/{worker}",
        dependencies=CAMPAIGN_WRITE,
        summary="Renew a worker's lease",
        response_model=HeartbeatOut,
    )
    async def heartbeat(
        campaign_id: str,
        body: Annotated[HeartbeatIn, Json(HeartbeatIn)],
        worker: WorkerId,
        _: Campaign,
        conn: WriteConnection,
    ) -> JSONResponse:
        await workers.heartbeat(conn, campaign_id, worker, body.lease_s, body.info)
        return documented({"worker": worker, "lease_s": body.lease_s})

    @router.delete(
        "/{campaign_id}/workers/{worker}",
        dependencies=CAMPAIGN_WRITE,
        summary="End a worker's lease now",
        response_model=LeaveOut,
    )
    async def leave(campaign_id: str, worker: WorkerId, conn: WriteConnection) -> LeaveOut:
        return LeaveOut(worker=worker, left=await workers.leave(conn, campaign_id, worker))

    @router.post(
        "/{campaign_id}/workers/{worker}/claim",
        dependencies=CAMPAIGN_WRITE,
        summary="Renew the lease and claim free tiles of some statuses, in processing order",
        response_model=JobsOut,
    )
    async def claim(
        campaign_id: str,
        body: Annotated[ClaimIn, Json(ClaimIn)],
        worker: WorkerId,
        _: Campaign,
        conn: WriteConnection,
    ) -> JSONResponse:
        jobs = await workers.claim(
            conn, campaign_id, worker, body.statuses, body.limit, body.lease_s, body.tiles
        )
        return documented({"jobs": jobs})

    @router.get(
        "/{campaign_id}/jobs/{tile_id}/history",
        summary="A tile's status history",
        response_model=HistoryOut,
    )
    async def tile_history(campaign_id: str, tile_id: str, conn: ReadConnection) -> JSONResponse:
        rows = await store.history(conn, campaign_id, tile_id)
        return documented({"campaign": campaign_id, "tile": tile_id, "history": rows})

    @router.post(
        "/{campaign_id}/reset",
        dependencies=CAMPAIGN_WRITE,
        summary="Reset finished-with-failure tiles for a retry",
        response_model=ResetOut,
    )
    async def reset(
        request: Request,
        campaign_id: str,
        body: Annotated[ResetIn, Json(ResetIn)],
        conn: WriteConnection,
    ) -> ResetOut:
        count = await store.reset_tiles(
            conn,
            campaign_id,
            body.statuses,
            actor_of(request, body.actor),
            body.set,
            tiles=body.tiles,
            below_attempts=body.below_attempts,
            reason=body.reason,
        )
        return ResetOut(reset=count, statuses=body.statuses)

    return router
