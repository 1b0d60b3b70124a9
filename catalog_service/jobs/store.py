"""The job store: status changes of tile jobs, resets (retries) and their history, on pgstac.

Every status change goes through ``apply_changes``: one transaction that locks the
tiles' rows (in id order, so concurrent writers cannot deadlock), checks each move
against the transition table and any expected status or revision the caller sends,
writes the new properties, appends one history row per tile and keeps the campaign's
counters and summary figures (``counts``, ``figures``). Either every change of a request
lands or none does.

Tile items keep a fixed datetime and geometry, so a change only rewrites the item's
properties in place: no partition is ever touched again after registration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import ValidationError

from catalog_service.database.jsonb import decoded
from catalog_service.jobs import counts, figures, status, workers
from catalog_service.jobs.campaign import REVISION_KEY
from catalog_service.jobs.changes import Change, Conflict, TileState, plan, retry_changes
from catalog_service.jobs.definitions import campaign_exists, get_definition
from catalog_service.jobs.errors import (
    CampaignNotFound,
    ChangesRejected,
    InvalidChange,
    TilesNotFound,
)
from catalog_service.jobs.queries import jobs_by_id, jobs_by_status


@dataclass
class Outcome:
    applied: list[dict[str, Any]]
    stale: list[str]
    conflicts: list[Conflict] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Rows of one campaign's tiles, in the order the job database pages them.
_LOCK_TILES = """
SELECT id, content->'properties' AS props, content->'links' AS links
FROM pgstac.items
WHERE collection = $1 AND id = ANY($2::text[])
ORDER BY id
FOR UPDATE
"""
_UPDATE_TILES = """
UPDATE pgstac.items AS i
SET content = jsonb_set(
        jsonb_set(i.content, '{properties}', u.props::jsonb),
        '{links}', coalesce(u.links::jsonb, i.content->'links', '[]'::jsonb))
FROM unnest($2::text[], $3::text[], $4::text[]) AS u(id, props, links)
WHERE i.collection = $1 AND i.id = u.id
"""
_HISTORY = """
INSERT INTO tilekeeper.job_history (collection, item_id, from_status, to_status, actor, details)
SELECT $1, u.id, u.from_status, u.to_status, $2, u.details::jsonb
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])
    AS u(id, from_status, to_status, details)
"""


async def apply_changes(
    conn: asyncpg.Connection,
    campaign: str,
    changes: Sequence[Change],
    actor: str,
    *,
    partial: bool = False,
    worker: str | None = None,
) -> Outcome:
    """Apply all changes atomically, or raise and write nothing. With ``partial`` the
    changes that break a rule are reported as conflicts and the others are applied
    (still in one transaction): each tile of a runner's batch is news of its own.

    ``worker``, the runner worker making the changes, is refused tiles another live
    worker holds and recorded as the holder of the others."""
    tiles = sorted({c.tile for c in changes})
    when = _now()
    async with conn.transaction():
        rows = {r["id"]: r for r in await conn.fetch(_LOCK_TILES, campaign, tiles)}
        missing = [t for t in tiles if t not in rows]
        if missing:
            if not await campaign_exists(conn, campaign):
                raise CampaignNotFound(f"no campaign {campaign!r}")
            raise TilesNotFound(campaign, missing)
        live: frozenset[str] = frozenset()
        if worker is not None:
            live = await workers.live(conn, campaign)
        current: dict[str, TileState] = {
            tile: (decoded(row["props"]), decoded(row["links"]) or []) for tile, row in rows.items()
        }
        planned = plan(changes, current, when, worker=worker, live_workers=live)
        if planned.conflicts and not partial:
            raise ChangesRejected(planned.conflicts)
        repeated = [
            {"tile": t, "status": p["status"], "revision": p.get(REVISION_KEY, 0)}
            for t, p in planned.repeated.items()
        ]
        if not planned.planned:
            return Outcome(repeated, planned.stale, planned.conflicts)
        final = planned.final()
        ids = list(final)
        await conn.execute(
            _UPDATE_TILES,
            campaign,
            ids,
            [json.dumps(final[t][0]) for t in ids],
            [json.dumps(final[t][1]) if final[t][1] is not None else None for t in ids],
        )
        await conn.execute(
            _HISTORY,
            campaign,
            actor,
            [p.tile for p in planned.planned],
            [p.from_status for p in planned.planned],
            [p.to_status for p in planned.planned],
            [json.dumps(p.change.history_details()) for p in planned.planned],
        )
        moves = [(p.from_status, p.to_status) for p in planned.planned]
        await counts.apply(conn, campaign, moves)
        await figures.apply(conn, campaign, [(current[t][0], final[t][0]) for t in ids])
    applied = [
        {
            "tile": t,
            "status": final[t][0]["status"],
            "revision": final[t][0][REVISION_KEY],
            "attempts": final[t][0].get("attempts", 0),
        }
        for t in ids
    ]
    return Outcome(applied + repeated, planned.stale, planned.conflicts)


async def history(conn: asyncpg.Connection, campaign: str, tile: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT seq, at, from_status, to_status, actor, details FROM tilekeeper.job_history"
        " WHERE collection = $1 AND item_id = $2 ORDER BY seq",
        campaign,
        tile,
    )
    if not rows and not await conn.fetchval(
        "SELECT 1 FROM pgstac.items WHERE collection = $1 AND id = $2", campaign, tile
    ):
        if not await campaign_exists(conn, campaign):
            raise CampaignNotFound(f"no campaign {campaign!r}")
        raise TilesNotFound(campaign, [tile])
    return [
        {
            "at": r["at"].isoformat(),
            "from": r["from_status"],
            "to": r["to_status"],
            "by": r["actor"],
            "details": decoded(r["details"]) or {},
        }
        for r in rows
    ]


async def reset_tiles(
    conn: asyncpg.Connection,
    campaign: str,
    statuses: Sequence[str],
    actor: str,
    set_properties: dict[str, Any] | None = None,
    *,
    tiles: Sequence[str] | None = None,
    below_attempts: int | None = None,
    reason: str | None = None,
) -> int:
    """Reset tiles in ``statuses`` to not_started (a retry), in one transaction: all of
    them, or only the ``tiles`` named, or only those with fewer than ``below_attempts``
    attempts (the campaign's retry policy); ``reason`` goes to each tile's history."""
    bad = [s for s in statuses if s in status.ACTIVE or s not in status.ALL]
    if bad:
        raise InvalidChange(
            f"cannot reset tiles in {', '.join(bad)}: only statuses a job is over in can be "
            "retried (cancel active jobs first)"
        )
    if tiles:
        jobs = await jobs_by_id(conn, campaign, tiles)
        missing = sorted(set(tiles) - {j["tile"] for j in jobs})
        if missing:
            await get_definition(conn, campaign)
            raise TilesNotFound(campaign, missing)
    else:
        jobs = await jobs_by_status(conn, campaign, statuses, 10**9)
    try:
        changes = retry_changes(jobs, set(statuses), set_properties, below_attempts, reason)
    except ValidationError as exc:
        # Properties to set that no change may set (the route's 400).
        raise InvalidChange(str(exc.errors()[0]["msg"])) from None
    if not changes:
        await get_definition(conn, campaign)  # 404 for an unknown campaign
        return 0
    outcome = await apply_changes(conn, campaign, changes, actor)
    return len(outcome.applied)
