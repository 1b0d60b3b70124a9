"""The job store: campaigns, tile registration and status changes, on pgstac.

Every status change goes through ``apply_changes``: one transaction that locks the
tiles' rows (in id order, so concurrent writers cannot deadlock), checks each move
against the transition table and any expected status or revision the caller sends,
writes the new properties and appends one history row per tile. Either every change of
a request lands or none does.

Tile items keep a fixed datetime and geometry, so a change only rewrites the item's
properties in place: no partition is ever touched again after registration.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import numpy as np
import orjson
import psycopg
import shapely
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from pypgstac.hydration import dehydrate

from catalog_service.bulk import paused_gc
from catalog_service.database.queryables import value_problem
from catalog_service.jobs import counts, status, workers
from catalog_service.jobs.campaign import (
    ATTEMPT_KEYS,
    CAMPAIGN_KEY,
    JOB_ID_KEY,
    JOB_ITEM_TEMPLATE,
    MANAGED_KEYS,
    MANAGED_PREFIX,
    NO_AREA_YET,
    ORDER_KEY,
    RESERVED_KEYS,
    REVISION_KEY,
    STORED,
    WORKER_KEY,
    CampaignDefinition,
    job_extensions,
    job_properties,
    reserved_message,
)


class StoreError(Exception):
    """Base of the job store's refusals; the API maps each to an HTTP status."""


class CampaignNotFound(StoreError):
    pass


class CampaignExists(StoreError):
    pass


class TilesNotFound(StoreError):
    def __init__(self, campaign: str, tiles: Sequence[str]) -> None:
        self.tiles = list(tiles)
        shown = ", ".join(self.tiles[:10]) + (" ..." if len(self.tiles) > 10 else "")
        super().__init__(f"campaign {campaign} has no tile(s) {shown}")


class InvalidChange(StoreError):
    pass


class CampaignInUse(StoreError):
    """A campaign that cannot be removed as asked (it has products)."""


@dataclass
class Conflict:
    tile: str
    current: str
    requested: str
    reason: str


class ChangesRejected(StoreError):
    """At least one change broke a rule; nothing was written."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        first = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        super().__init__(f"tile {first.tile}: {first.reason}{more}; nothing was changed")


@dataclass
class Change:
    """One tile's requested change.

    ``set`` merges properties (None removes one); ``expect_status``/``expect_revision``
    make it a compare-and-set; ``reset`` moves a job that is over back to not_started.
    A change repeated after it was applied (its answer lost) is reported as applied.
    """

    tile: str
    status: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    expect_status: str | None = None
    expect_revision: int | None = None
    reset: bool = False
    links: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] | None = None
    # The runner worker making the change: refused on a tile another live worker holds,
    # and recorded as the tile's holder.
    worker: str | None = None

    def validate(self) -> None:
        if reserved := RESERVED_KEYS.intersection(self.set):
            raise InvalidChange(reserved_message(self.tile, reserved))
        bad = [k for k in self.set if k in MANAGED_KEYS or k.startswith(MANAGED_PREFIX)]
        if bad:
            raise InvalidChange(
                f"tile {self.tile}: {', '.join(sorted(bad))} cannot be set directly"
                " (status is the `status` field of a change; the rest is kept by tilekeeper)"
            )
        if self.status is not None and self.status not in status.ALL:
            raise InvalidChange(
                f"tile {self.tile}: unknown status {self.status!r}; "
                f"known: {', '.join(sorted(status.ALL))}"
            )
        if self.reset and self.status not in (None, status.NOT_STARTED):
            raise InvalidChange(f"tile {self.tile}: a reset goes to not_started")
        for link in self.links:
            if not isinstance(link.get("href"), str) or not isinstance(link.get("rel"), str):
                raise InvalidChange(f"tile {self.tile}: a link needs string `rel` and `href`")
        costs = self.set.get("costs")
        if costs is not None and not _is_costs(costs):
            raise InvalidChange(
                f"tile {self.tile}: costs must be a number of credits from 0 to "
                f"{MAX_COSTS:g}, not {costs!r:.60}"
            )
        if typed := value_problem(self.set, f"tile {self.tile}"):
            raise InvalidChange(typed)


# Credits of one job: the budget and the summaries add them up, so each is a finite,
# non-negative number (a string, -4000 or 1.7e308 would break both).
MAX_COSTS = 1e12


def _is_costs(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_COSTS
    )


@dataclass
class Outcome:
    applied: list[dict[str, Any]]
    stale: list[str]
    conflicts: list[Conflict] = field(default_factory=list)


def _json(value: Any) -> Any:
    """jsonb as Python: the API's pools decode it already (stac-fastapi's con_init)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _merge_links(existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = {(link["rel"], link["href"]) for link in new}
    return [link for link in existing if (link.get("rel"), link.get("href")) not in keys] + new


def _next_properties(
    props: dict[str, Any], change: Change, new_status: str, when: str
) -> dict[str, Any]:
    current = props.get("status", status.NOT_STARTED)
    out = dict(props)
    if change.reset or (current == status.CREATING and new_status == status.NOT_STARTED):
        for key in ATTEMPT_KEYS:
            out.pop(key, None)
    for key, value in change.set.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    out["status"] = new_status
    if current == status.NOT_STARTED and new_status in status.ACTIVE:
        out["attempts"] = int(out.get("attempts") or 0) + 1
    elif current == status.CREATING and new_status == status.NOT_STARTED:
        # The job never reached a back-end: that was no attempt.
        out["attempts"] = max(0, int(out.get("attempts") or 0) - 1)
    if new_status in status.TERMINAL and current not in status.TERMINAL:
        out.setdefault("finish_time", when)
    if change.worker is not None:
        out[WORKER_KEY] = change.worker
    out[REVISION_KEY] = int(out.get(REVISION_KEY) or 0) + 1
    out["updated"] = when
    return out


def _already_applied(change: Change, props: dict[str, Any], links: list[dict[str, Any]]) -> bool:
    """True when the tile already is what ``change`` asks for: a change repeated after
    its answer was lost (a timeout, an outage), which must not count as a conflict."""
    if change.reset or change.status is None or change.status != props.get("status"):
        return False
    if any(props.get(key) != value for key, value in change.set.items()):
        return False
    present = {(link.get("rel"), link.get("href")) for link in links}
    return all((link["rel"], link["href"]) in present for link in change.links)


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


class Planned(NamedTuple):
    tile: str
    props: dict[str, Any]
    links: list[dict[str, Any]] | None
    from_status: str
    to_status: str
    change: Change


@dataclass
class Plan:
    planned: list[Planned] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    repeated: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)


def _plan(
    changes: Sequence[Change],
    rows: Mapping[str, asyncpg.Record],
    when: str,
    live_workers: frozenset[str] = frozenset(),
) -> Plan:
    plan = Plan()
    # Several changes of one tile in one request apply in order.
    state: dict[str, tuple[dict[str, Any], Any]] = {
        tile: (_json(row["props"]), _json(row["links"]) or []) for tile, row in rows.items()
    }
    for change in changes:
        props, links = state[change.tile]
        current = str(props.get("status", status.NOT_STARTED))
        new = status.NOT_STARTED if change.reset else (change.status or current)
        owner = props.get(WORKER_KEY)
        if (
            change.worker is not None
            and owner not in (None, change.worker)
            and owner in live_workers
            and current in status.ACTIVE | {status.NOT_STARTED}
        ):
            plan.conflicts.append(
                Conflict(change.tile, current, new, f"the tile is worked on by {owner}")
            )
            continue
        if change.expect_status is not None and change.expect_status != current:
            if _already_applied(change, props, links):
                plan.repeated[change.tile] = props
                continue
            plan.conflicts.append(
                Conflict(
                    change.tile, current, new, f"expected {change.expect_status}, is {current}"
                )
            )
            continue
        revision = int(props.get(REVISION_KEY) or 0)
        if change.expect_revision is not None and change.expect_revision != revision:
            plan.conflicts.append(
                Conflict(
                    change.tile,
                    current,
                    new,
                    f"expected revision {change.expect_revision}, is {revision}",
                )
            )
            continue
        job = props.get(JOB_ID_KEY)
        same_job = change.set.get(JOB_ID_KEY, job) == job
        if not change.reset and same_job and job and status.is_stale(current, new):
            # Older news about the job the tile already tracks: newer facts win.
            plan.stale.append(change.tile)
            continue
        try:
            status.check(current, new, reset=change.reset)
        except status.IllegalTransition as exc:
            plan.conflicts.append(Conflict(change.tile, current, new, str(exc)))
            continue
        new_props = _next_properties(props, change, new, when)
        new_links = _merge_links(links, change.links) if change.links else None
        state[change.tile] = (new_props, new_links if new_links is not None else links)
        plan.planned.append(Planned(change.tile, new_props, new_links, current, new, change))
    return plan


async def apply_changes(
    conn: asyncpg.Connection,
    campaign: str,
    changes: Sequence[Change],
    actor: str,
    *,
    partial: bool = False,
) -> Outcome:
    """Apply all changes atomically, or raise and write nothing. With ``partial`` the
    changes that break a rule are reported as conflicts and the others are applied
    (still in one transaction): each tile of a runner's batch is news of its own."""
    for change in changes:
        change.validate()
    tiles = sorted({c.tile for c in changes})
    when = _now()
    async with conn.transaction():
        rows = {r["id"]: r for r in await conn.fetch(_LOCK_TILES, campaign, tiles)}
        missing = [t for t in tiles if t not in rows]
        if missing:
            if not await _campaign_exists(conn, campaign):
                raise CampaignNotFound(f"no campaign {campaign!r}")
            raise TilesNotFound(campaign, missing)
        live: frozenset[str] = frozenset()
        if any(c.worker is not None for c in changes):
            live = await workers.live(conn, campaign)
        plan = _plan(changes, rows, when, live)
        if plan.conflicts and not partial:
            raise ChangesRejected(plan.conflicts)
        repeated = [
            {"tile": t, "status": p["status"], "revision": p.get(REVISION_KEY, 0)}
            for t, p in plan.repeated.items()
        ]
        if not plan.planned:
            return Outcome(repeated, plan.stale, plan.conflicts)
        # The last planned state per tile is what is written.
        final: dict[str, tuple[dict[str, Any], Any]] = {}
        for p in plan.planned:
            links = p.links if p.links is not None else final.get(p.tile, (None, None))[1]
            final[p.tile] = (p.props, links)
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
            [p.tile for p in plan.planned],
            [p.from_status for p in plan.planned],
            [p.to_status for p in plan.planned],
            [json.dumps(_history_details(p.change)) for p in plan.planned],
        )
        await counts.apply(conn, campaign, [(p.from_status, p.to_status) for p in plan.planned])
    applied = [
        {
            "tile": t,
            "status": final[t][0]["status"],
            "revision": final[t][0][REVISION_KEY],
            "attempts": final[t][0].get("attempts", 0),
        }
        for t in ids
    ]
    return Outcome(applied + repeated, plan.stale, plan.conflicts)


def _history_details(change: Change) -> dict[str, Any]:
    details: dict[str, Any] = dict(change.details or {})
    if change.reset:
        details["reset"] = True
    if change.set:
        details["set"] = change.set
    return details


async def _campaign_exists(conn: asyncpg.Connection, campaign: str) -> bool:
    row = await conn.fetchval(
        "SELECT content ? $2 FROM pgstac.collections WHERE id = $1", campaign, CAMPAIGN_KEY
    )
    return bool(row)


async def get_definition(conn: asyncpg.Connection, campaign: str) -> CampaignDefinition:
    raw = await conn.fetchval(
        "SELECT content->$2 FROM pgstac.collections WHERE id = $1", campaign, CAMPAIGN_KEY
    )
    if raw is None:
        exists = await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", campaign)
        if exists:
            raise CampaignNotFound(f"collection {campaign!r} is not a tilekeeper campaign")
        raise CampaignNotFound(f"no campaign {campaign!r}")
    return CampaignDefinition.model_validate(_json(raw), context=STORED)


async def list_definitions(conn: asyncpg.Connection) -> list[CampaignDefinition]:
    rows = await conn.fetch(
        "SELECT content->$1 AS d FROM pgstac.collections WHERE content ? $1 ORDER BY id",
        CAMPAIGN_KEY,
    )
    return [CampaignDefinition.model_validate(_json(r["d"]), context=STORED) for r in rows]


async def create_campaign(
    conn: asyncpg.Connection, definition: CampaignDefinition, bbox: list[float] | None
) -> dict[str, Any]:
    collection = definition.to_collection(bbox)
    start, end = definition.job_interval()
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", definition.id):
            raise CampaignExists(f"collection {definition.id!r} already exists")
        await conn.execute(
            "SELECT pgstac.create_collection($1::text::jsonb)", json.dumps(collection)
        )
    # Create the partition with its final datetime range now, once, so tile writes never
    # rebuild its constraint (the race behind pgstac#211).
    await conn.execute(
        "SELECT pgstac.check_partition($1, tstzrange($2::text::timestamptz, $2::text::timestamptz, '[]'),"
        " tstzrange($3::text::timestamptz, $3::text::timestamptz, '[]'))",
        definition.id,
        start,
        end,
    )
    return collection


async def update_definition(
    conn: asyncpg.Connection, campaign: str, patch: dict[str, Any]
) -> CampaignDefinition:
    """Merge ``patch`` into the campaign's definition (validated as a whole) and store
    it with the collection's title and description."""
    async with conn.transaction():
        raw = await conn.fetchval(
            "SELECT content FROM pgstac.collections WHERE id = $1 AND content ? $2 FOR UPDATE",
            campaign,
            CAMPAIGN_KEY,
        )
        if raw is None:
            raise CampaignNotFound(f"no campaign {campaign!r}")
        content = _json(raw)
        merged = {**content[CAMPAIGN_KEY], **patch}
        try:
            definition = CampaignDefinition.model_validate(merged)
        except ValueError as exc:
            raise InvalidChange(f"the changed campaign is not valid: {exc}") from None
        fresh = definition.to_collection()
        content[CAMPAIGN_KEY] = fresh[CAMPAIGN_KEY]
        content["title"], content["description"] = fresh["title"], fresh["description"]
        await conn.execute("SELECT pgstac.update_collection($1::text::jsonb)", json.dumps(content))
    return definition


async def delete_campaign(conn: asyncpg.Connection, campaign: str, products: str | None) -> None:
    """Remove a campaign: its collection with every tile job, their history, and the
    catalogue records of ``products`` (its product collection) when given."""
    async with conn.transaction():
        if not await _campaign_exists(conn, campaign):
            raise CampaignNotFound(f"no campaign {campaign!r}")
        await conn.execute("DELETE FROM tilekeeper.job_history WHERE collection = $1", campaign)
        await conn.execute("SELECT pgstac.delete_collection($1)", campaign)
        if products is not None:
            await conn.execute("DELETE FROM pgstac.collections WHERE id = $1", products)


# Jobs by status, in processing order: served by the tilekeeper_jobs_queue index.
_JOBS_BY_STATUS = f"""
SELECT id, content->'properties' AS props
FROM pgstac.items
WHERE collection = $1
  AND content->'properties' ? '{ORDER_KEY}'
  AND content->'properties'->>'status' = $2
  AND (content->'properties'->>'{ORDER_KEY}')::bigint > $3
ORDER BY content->'properties'->>'status', (content->'properties'->>'{ORDER_KEY}')::bigint, id
LIMIT $4
"""
_JOBS_BY_ORDER = f"""
SELECT id, content->'properties' AS props
FROM pgstac.items
WHERE collection = $1
  AND content->'properties' ? '{ORDER_KEY}'
  AND (content->'properties'->>'{ORDER_KEY}')::bigint = ANY($2::bigint[])
ORDER BY (content->'properties'->>'{ORDER_KEY}')::bigint
"""
_JOBS_BY_ID = """
SELECT id, content->'properties' AS props FROM pgstac.items
WHERE collection = $1 AND id = ANY($2::text[]) ORDER BY id
"""


def _job(row: asyncpg.Record) -> dict[str, Any]:
    return {"tile": row["id"], "properties": _json(row["props"])}


async def jobs_by_status(
    conn: asyncpg.Connection,
    campaign: str,
    statuses: Sequence[str],
    limit: int,
    after_order: int = -1,
) -> list[dict[str, Any]]:
    """Jobs in any of ``statuses``, in processing order (then id), at most ``limit``.

    Each status is read from its own stretch of the index, then merged, so the query
    stays an index range scan whatever the mix. (One status per query on purpose: with
    ``= ANY(array)`` PostgreSQL 15 cannot use the index order, reads every matching row
    and sorts them: 100 ms at 100,000 tiles instead of under 1.)"""
    jobs: list[dict[str, Any]] = []
    for st in sorted(set(statuses)):
        rows = await conn.fetch(_JOBS_BY_STATUS, campaign, st, after_order, limit)
        jobs.extend(_job(r) for r in rows)
    jobs.sort(key=lambda j: (int(j["properties"].get(ORDER_KEY, 0)), j["tile"]))
    return jobs[:limit]


async def jobs_by_order(
    conn: asyncpg.Connection, campaign: str, orders: Iterable[int]
) -> list[dict[str, Any]]:
    rows = await conn.fetch(_JOBS_BY_ORDER, campaign, list(orders))
    return [_job(r) for r in rows]


async def jobs_by_id(
    conn: asyncpg.Connection, campaign: str, tiles: Iterable[str]
) -> list[dict[str, Any]]:
    rows = await conn.fetch(_JOBS_BY_ID, campaign, list(tiles))
    return [_job(r) for r in rows]


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
        if not await _campaign_exists(conn, campaign):
            raise CampaignNotFound(f"no campaign {campaign!r}")
        raise TilesNotFound(campaign, [tile])
    return [
        {
            "at": r["at"].isoformat(),
            "from": r["from_status"],
            "to": r["to_status"],
            "by": r["actor"],
            "details": _json(r["details"]) or {},
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
) -> int:
    """Reset tiles in ``statuses`` to not_started (a retry), in one transaction: all of
    them, or only the ``tiles`` named, or only those with fewer than ``below_attempts``
    attempts (the campaign's retry policy)."""
    bad = [s for s in statuses if s in status.ACTIVE or s not in status.ALL]
    if bad:
        raise InvalidChange(
            f"cannot reset tiles in {', '.join(bad)}: only statuses a job is over in can be "
            "retried (cancel active jobs first)"
        )
    if tiles:
        rows = await jobs_by_id(conn, campaign, tiles)
        missing = sorted(set(tiles) - {r["tile"] for r in rows})
        if missing:
            await get_definition(conn, campaign)
            raise TilesNotFound(campaign, missing)
    else:
        rows = await jobs_by_status(conn, campaign, statuses, 10**9)
    wanted = set(statuses)
    rows = [
        r
        for r in rows
        if r["properties"].get("status") in wanted
        and (below_attempts is None or int(r["properties"].get("attempts") or 0) < below_attempts)
    ]
    if not rows:
        await get_definition(conn, campaign)  # 404 for an unknown campaign
        return 0
    changes = [
        Change(
            tile=r["tile"],
            reset=True,
            expect_status=r["properties"]["status"],
            set={"last_error": None, **(set_properties or {})},
            details={"previous_error": r["properties"].get("last_error")}
            if r["properties"].get("last_error")
            else None,
        )
        for r in rows
    ]
    outcome = await apply_changes(conn, campaign, changes, actor)
    return len(outcome.applied)


async def status_counts(conn: asyncpg.Connection, campaign: str) -> dict[str, int]:
    found = await counts.read(conn, campaign)
    if not found:
        await get_definition(conn, campaign)  # 404 for an unknown campaign
    return found


_LAST_ORDER = f"""
SELECT (content->'properties'->>'{ORDER_KEY}')::bigint FROM pgstac.items
WHERE collection = %s AND content->'properties' ? '{ORDER_KEY}'
ORDER BY collection DESC, (content->'properties'->>'{ORDER_KEY}')::bigint DESC
LIMIT 1
"""
_REGISTER_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tilekeeper.register'), hashtext(%s))"
_CAMPAIGN_PARTITION = """
SELECT c.base_item, ps.partition
FROM pgstac.collections c
LEFT JOIN pgstac.partition_stats ps
    ON ps.collection = c.id AND ps.partition_dtrange @> %s::timestamptz
WHERE c.id = %s
"""
_EXISTING = "SELECT id FROM pgstac.{partition} WHERE id = ANY(%s)"
_CAMPAIGN_BBOXES = (
    "SELECT content->'extent'->'spatial'->'bbox' FROM pgstac.collections WHERE id = %s FOR UPDATE"
)
_SET_CAMPAIGN_BBOXES = """
UPDATE pgstac.collections SET content = jsonb_set(content, '{extent,spatial,bbox}', %s::jsonb)
WHERE id = %s
"""
_COPY = (
    "COPY pgstac.{partition} (id, collection, datetime, end_datetime, geometry, content) FROM STDIN"
)
# Rows go to the database in chunks: it parses and indexes one chunk while this process
# builds the next, so the two cores work at once.
_COPY_CHUNK = 2_000


class InvalidTiles(StoreError):
    """Tiles the database refused to store (e.g. a geometry PostGIS cannot read)."""


def _copy_field(value: bytes) -> bytes:
    # orjson escapes tabs and newlines inside strings, so only backslashes need
    # doubling for COPY's text format.
    return value.replace(b"\\", b"\\\\")


class TileRegistrar:
    """Registers tiles with one COPY into the campaign's partition per request.

    It stores the rows pgstac's Loader would, specialised to job items: their common
    part is dehydrated once, footprints are converted in vectorised GEOS calls, and rows
    stream straight into the partition in chunks, so the database indexes one chunk
    while Python builds the next (no staging table: existing ids are known up front).
    Existing tiles are left as they are, so a repeated registration resumes instead of
    duplicating."""

    def __init__(self, writer_dsn: str) -> None:
        self.writer_dsn = writer_dsn

    def register(self, definition: CampaignDefinition, tiles: Sequence[dict[str, Any]]) -> int:
        """Store the tiles not yet in the campaign; returns how many were new."""
        start, _ = definition.job_interval()
        with psycopg.connect(self.writer_dsn) as conn, conn.cursor() as cur:
            # One registration at a time per campaign: it hands out the order numbers.
            cur.execute(_REGISTER_LOCK, [definition.id])
            row = cur.execute(_CAMPAIGN_PARTITION, [start, definition.id]).fetchone()
            if row is None:
                raise CampaignNotFound(f"campaign {definition.id!r} does not exist")
            base_item, partition = row
            if partition is None:
                raise StoreError(
                    f"campaign {definition.id!r} has no partition for {start}: "
                    "re-create the campaign"
                )
            table = sql.Identifier(partition)
            ids = [t["id"] for t in tiles]
            existing = {
                r[0] for r in cur.execute(sql.SQL(_EXISTING).format(partition=table), [ids])
            }
            new_tiles = [t for t in tiles if t["id"] not in existing]
            last = cur.execute(_LAST_ORDER, [definition.id]).fetchone()
            first_order = int(str(last[0])) + 1 if last else 0
            # Straight into the partition: the advisory lock above makes this request
            # the campaign's only tile writer, so the ids checked are still absent.
            copy_sql = sql.SQL(_COPY).format(partition=table)
            with paused_gc(), cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
                for at in range(0, len(new_tiles), _COPY_CHUNK):
                    chunk = new_tiles[at : at + _COPY_CHUNK]
                    copy.write(_copy_rows(definition, base_item, chunk, first_order + at))
            new = len(new_tiles)
            registered = Counter(
                (t.get("properties") or {}).get("status") or status.NOT_STARTED for t in new_tiles
            )
            if registered:
                cur.execute(
                    counts.REGISTER_SQL,
                    [definition.id, list(registered), list(registered.values())],
                )
            if tiles:
                # All tiles received, not only new ones: registering a campaign's tiles
                # again also mends the extent of one registered before it grew.
                _grow_extent(cur, definition.id, tiles)
            conn.commit()
            # As the Loader does: refresh the partition's observed extents (not in the
            # transaction above, so readers are not blocked meanwhile).
            cur.execute("SELECT pgstac.update_partition_stats_q(%s)", [partition])
            conn.commit()
        return new


def _union(boxes: Sequence[Sequence[float]]) -> list[float]:
    """The 2D bbox containing every bbox (2D, or 3D as STAC writes them)."""
    corners = np.asarray([[b[0], b[1], *(b[3:5] if len(b) == 6 else b[2:4])] for b in boxes])
    return [*corners[:, :2].min(axis=0).tolist(), *corners[:, 2:].max(axis=0).tolist()]


def _grow_extent(
    cur: psycopg.Cursor[tuple[Any, ...]], campaign: str, tiles: Sequence[dict[str, Any]]
) -> None:
    """Widen the campaign collection's spatial extent (its first, overall bbox) to contain
    every tile: it starts as the AOI's bbox (or, without an AOI, is the first tiles'),
    and grid cells stick out of the AOI. Only grows, in the registration's transaction (the row lock orders it with definition
    updates, which keep the extent as it is)."""
    row = cur.execute(_CAMPAIGN_BBOXES, [campaign]).fetchone()
    stored = _json(row[0]) if row else None
    boxes: list[list[float]] = stored if isinstance(stored, list) and stored else []
    tiles_box = _union([t["bbox"] for t in tiles])
    # No AOI: the tiles' extent, not the world's placeholder (OGR/QGIS zoom to it).
    grows = bool(boxes) and boxes[0] != list(NO_AREA_YET)
    overall = _union([boxes[0], tiles_box]) if grows else tiles_box
    if not boxes or overall != boxes[0]:
        cur.execute(_SET_CAMPAIGN_BBOXES, [orjson.dumps([overall, *boxes[1:]]).decode(), campaign])


def _content(base_item: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    content = dehydrate(base_item, item)
    for column in ("id", "collection", "geometry"):
        content.pop(column, None)
    return content


def _footprints(tiles: Sequence[dict[str, Any]]) -> list[str]:
    """GeoJSON footprints as hex EWKB (SRID 4326), pgstac's geometry column format;
    GEOS parses them all in one vectorised call."""
    try:
        geometries = shapely.from_geojson([orjson.dumps(t["geometry"]) for t in tiles])
    except shapely.errors.GEOSException as exc:
        raise InvalidTiles(f"a tile geometry is not valid GeoJSON: {exc}") from None
    if shapely.is_empty(geometries).any():
        empty = tiles[int(np.flatnonzero(shapely.is_empty(geometries))[0])]["id"]
        raise InvalidTiles(f"tile {empty}: geometry is empty")
    ewkb: list[str] = shapely.to_wkb(
        shapely.set_srid(geometries, 4326), hex=True, include_srid=True
    ).tolist()
    return ewkb


def _copy_rows(
    definition: CampaignDefinition,
    base_item: dict[str, Any],
    tiles: Sequence[dict[str, Any]],
    first_order: int,
) -> bytes:
    """COPY text rows (id, collection, datetime, end_datetime, EWKB, dehydrated
    content) for the tiles."""
    start, end = definition.job_interval()
    constant = _copy_field(f"\t{definition.id}\t{start}\t{end}\t".encode())
    common = {**JOB_ITEM_TEMPLATE, "collection": definition.id}
    # pgstac stores an item minus what equals its collection's base item (and without
    # the columns id, collection, geometry). bbox and properties are never part of a
    # base item, so the common part is dehydrated once for every tile (stac_extensions,
    # which follows each tile's fields, neither).
    varying = {"bbox", "properties", "stac_extensions"}
    shared = None if varying & base_item.keys() else _content(base_item, common)
    out = bytearray()
    for n, (tile, footprint) in enumerate(zip(tiles, _footprints(tiles), strict=True)):
        properties = job_properties(
            definition, tile["id"], tile.get("properties") or {}, first_order + n
        )
        extensions = job_extensions(properties)
        if shared is None:
            content = _content(
                base_item,
                {
                    **common,
                    "stac_extensions": extensions,
                    "bbox": tile["bbox"],
                    "properties": properties,
                },
            )
        else:
            content = {
                **shared,
                "stac_extensions": extensions,
                "bbox": tile["bbox"],
                "properties": properties,
            }
        out += _copy_field(tile["id"].encode())
        out += constant
        out += footprint.encode()
        out += b"\t"
        out += _copy_field(orjson.dumps(content))
        out += b"\n"
    return bytes(out)
