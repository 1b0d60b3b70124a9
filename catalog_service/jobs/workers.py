"""Runner workers and the tiles they hold: leases, heartbeats and claims.

A worker holds a lease on a campaign (a row in ``tilekeeper.workers`` that it renews
with heartbeats); a tile names its holder in ``tilekeeper:worker``. A tile is free when
it names no worker or one whose lease ran out, so one heartbeat keeps all of a worker's
tiles and a dead worker's tiles are taken over once its lease expires (Element 84's
Cirrus claims work the same way: a conditional write, not a lock held for the job's
life)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from catalog_service.database.jsonb import decoded
from catalog_service.jobs.campaign import ORDER_KEY, WORKER_KEY

_HEARTBEAT = """
INSERT INTO tilekeeper.workers AS w (collection, worker, info, lease_until)
VALUES ($1, $2, $3::text::jsonb, clock_timestamp() + make_interval(secs => $4))
ON CONFLICT (collection, worker) DO UPDATE
SET lease_until = excluded.lease_until, seen = clock_timestamp(),
    info = coalesce(excluded.info, w.info)
"""
_LIVE = """
SELECT worker FROM tilekeeper.workers WHERE collection = $1 AND lease_until > clock_timestamp()
"""
_LIST = """
SELECT worker, info, started, seen, lease_until FROM tilekeeper.workers
WHERE collection = $1 AND lease_until > clock_timestamp() ORDER BY started, worker
"""
_CLAIM_TURN = "SELECT pg_advisory_xact_lock(hashtext('tilekeeper.claim'), hashtext($1))"
# Free tiles of one status (or the worker's own), in processing order; tiles another
# claim holds locked are skipped, never waited for.
# Only the holder changes: no status counter or summary figure moves (jobs/figures.py).
_CLAIM = f"""
WITH free AS (
    SELECT id FROM pgstac.items
    WHERE collection = $1
      AND content->'properties' ? '{ORDER_KEY}'
      AND content->'properties'->>'status' = $2
      AND coalesce(content->'properties'->>'{WORKER_KEY}', '') <> ALL($5::text[])
      AND ($6::text[] IS NULL OR id = ANY($6::text[]))
    ORDER BY content->'properties'->>'status',
             (content->'properties'->>'{ORDER_KEY}')::bigint, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE pgstac.items AS i
SET content = jsonb_set(i.content, '{{properties,{WORKER_KEY}}}', to_jsonb($3::text))
FROM free
WHERE i.collection = $1 AND i.id = free.id
RETURNING i.id, i.content->'properties' AS props
"""


async def heartbeat(
    conn: asyncpg.Connection,
    campaign: str,
    worker: str,
    lease_s: float,
    info: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        _HEARTBEAT, campaign, worker, json.dumps(info) if info is not None else None, lease_s
    )


async def live(conn: asyncpg.Connection, campaign: str) -> frozenset[str]:
    return frozenset(r["worker"] for r in await conn.fetch(_LIVE, campaign))


async def listing(conn: asyncpg.Connection, campaign: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(_LIST, campaign)
    return [
        {
            "worker": r["worker"],
            "info": decoded(r["info"]) or {},
            "started": r["started"].isoformat(),
            "seen": r["seen"].isoformat(),
            "lease_until": r["lease_until"].isoformat(),
        }
        for r in rows
    ]


async def leave(conn: asyncpg.Connection, campaign: str, worker: str) -> bool:
    """End a worker's lease now: its tiles are free for the others at once."""
    result = await conn.execute(
        "DELETE FROM tilekeeper.workers WHERE collection = $1 AND worker = $2", campaign, worker
    )
    return str(result).endswith(" 1")


async def claim(
    conn: asyncpg.Connection,
    campaign: str,
    worker: str,
    statuses: Sequence[str],
    limit: int,
    lease_s: float,
    tiles: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Renew the worker's lease and hand it up to ``limit`` tiles per status that are
    its own or free, in processing order (only ``tiles`` when given: a pilot)."""
    jobs: list[dict[str, Any]] = []
    async with conn.transaction():
        # Claims of one campaign take turns: a claim that ran beside another would judge
        # the other's tiles by a list of live workers read before it committed, and
        # take them too (measured: 4 workers x 50 tiles got 101 distinct tiles).
        await conn.execute(_CLAIM_TURN, campaign)
        await heartbeat(conn, campaign, worker, lease_s)
        others = sorted((await live(conn, campaign)) - {worker})
        wanted = list(tiles) if tiles is not None else None
        for st in sorted(set(statuses)):
            rows = await conn.fetch(_CLAIM, campaign, st, worker, limit, others, wanted)
            jobs.extend({"tile": r["id"], "properties": decoded(r["props"])} for r in rows)
    jobs.sort(key=lambda j: (int(j["properties"].get(ORDER_KEY, 0)), j["tile"]))
    return jobs
