"""Campaign progress figures: the arithmetic of the EU27 production guide.

Projected cost = tiles x mean cost of a finished tile; time left = tiles left x mean
runtime / parallel jobs over all back-ends, and also from the throughput observed so far.
Runtimes are finish_time (server clock) minus start_time (the manager's clock).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from catalog_service.jobs import budget, status
from catalog_service.jobs.campaign import CampaignDefinition

_COUNTS = """
SELECT content->'properties'->>'status' AS status,
       coalesce(content->'properties'->>'backend_name', '') AS backend,
       count(*) AS n,
       coalesce(sum(CASE WHEN jsonb_typeof(content->'properties'->'costs') = 'number'
                         THEN (content->'properties'->>'costs')::float8 END), 0) AS spent
FROM pgstac.items WHERE collection = $1
GROUP BY 1, 2
"""
_FINISHED = """
WITH f AS (
    SELECT (content->'properties'->>'start_time')::timestamptz AS started,
           (content->'properties'->>'finish_time')::timestamptz AS finished,
           CASE WHEN jsonb_typeof(content->'properties'->'costs') = 'number'
                THEN (content->'properties'->>'costs')::float8 END AS costs
    FROM pgstac.items
    WHERE collection = $1 AND content->'properties'->>'status' = 'finished'
)
SELECT count(*) AS n,
       avg(extract(epoch FROM finished - started))::float8 AS mean_runtime_s,
       avg(costs) AS mean_costs,
       sum(costs) AS costs,
       min(started) AS first_start,
       max(finished) AS last_finish
FROM f
"""
_FIRST_START = """
SELECT min((content->'properties'->>'start_time')::timestamptz)
FROM pgstac.items WHERE collection = $1 AND content->'properties' ? 'start_time'
"""


async def summarize(conn: asyncpg.Connection, definition: CampaignDefinition) -> dict[str, Any]:
    rows = await conn.fetch(_COUNTS, definition.id)
    by_status: dict[str, int] = {}
    by_backend: dict[str, dict[str, int]] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["backend"]:
            by_backend.setdefault(row["backend"], {})[row["status"]] = row["n"]
    total = sum(by_status.values())
    done = sum(n for s, n in by_status.items() if s in status.TERMINAL)
    finished = await conn.fetchrow(_FINISHED, definition.id)
    first_start = await conn.fetchval(_FIRST_START, definition.id)
    now = datetime.now(UTC)
    remaining = total - done
    mean_runtime = finished["mean_runtime_s"]
    mean_costs = finished["mean_costs"]
    parallel = sum(b.parallel_jobs for b in definition.backends)
    elapsed_h = (now - first_start).total_seconds() / 3600 if first_start else None
    throughput = done / elapsed_h if elapsed_h and done else None
    return {
        "campaign": definition.id,
        "tiles": total,
        "by_status": dict(sorted(by_status.items())),
        "by_backend": {b: dict(sorted(c.items())) for b, c in sorted(by_backend.items())},
        "done": done,
        "remaining": remaining,
        "progress": done / total if total else None,
        "finished": {
            "count": finished["n"],
            "mean_runtime_s": mean_runtime,
            "mean_costs": mean_costs,
            "costs": finished["costs"],
        },
        "throughput_per_hour": throughput,
        "eta_s": remaining / throughput * 3600 if throughput else None,
        "eta_by_parallelism_s": (
            remaining * mean_runtime / parallel if mean_runtime is not None and parallel else None
        ),
        "parallel_jobs": parallel,
        "projected_costs": mean_costs * total if mean_costs is not None else None,
        "first_start": first_start.isoformat() if first_start else None,
        "budget": budget.figures(
            definition.budget,
            float(sum(row["spent"] for row in rows)),
            sum(n for s, n in by_status.items() if s in status.ACTIVE),
            mean_costs,
        ),
    }
