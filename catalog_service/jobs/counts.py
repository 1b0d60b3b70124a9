"""Tiles per status, kept as counters by every write that moves a status.

Counting a million job items takes ~0.9 s even through an index; the manager asks for
counts on every loop. The job store adds each transition's delta in the same
transaction that moves the tiles, so the counters are exactly as true as the items."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import asyncpg

_APPLY = """
INSERT INTO tilekeeper.status_counts AS c (collection, status, n)
SELECT $1, s, d FROM unnest($2::text[], $3::bigint[]) AS u(s, d) ORDER BY s
ON CONFLICT (collection, status) DO UPDATE SET n = c.n + excluded.n
"""
_READ = "SELECT status, n FROM tilekeeper.status_counts WHERE collection = $1 AND n <> 0"


async def apply(
    conn: asyncpg.Connection, campaign: str, transitions: Iterable[tuple[str, str]]
) -> None:
    """Add the deltas of (from, to) transitions (in the caller's transaction)."""
    delta: Counter[str] = Counter()
    for before, after in transitions:
        if before != after:
            delta[before] -= 1
            delta[after] += 1
    changed = sorted(s for s, d in delta.items() if d)
    if changed:
        # Sorted: concurrent writers lock the counter rows in one order (no deadlock).
        await conn.execute(_APPLY, campaign, changed, [delta[s] for s in changed])


async def read(conn: asyncpg.Connection, campaign: str) -> dict[str, int]:
    return {r["status"]: int(r["n"]) for r in await conn.fetch(_READ, campaign)}


# The registrar's (psycopg) form of `apply` for newly registered tiles.
REGISTER_SQL = """
INSERT INTO tilekeeper.status_counts AS c (collection, status, n)
SELECT %s, s, d FROM unnest(%s::text[], %s::bigint[]) AS u(s, d) ORDER BY s
ON CONFLICT (collection, status) DO UPDATE SET n = c.n + excluded.n
"""
