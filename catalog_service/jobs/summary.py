"""Campaign progress figures: the arithmetic of the EU27 production guide.

Projected cost = tiles x mean cost of a finished tile; time left = tiles left x mean
runtime / parallel jobs over all back-ends, and also from the throughput observed so far.
Runtimes are finish_time (server clock) minus start_time (the manager's clock). The
figures are kept by the job store (``jobs/figures.py``); the first start never moves back,
not even when the tile that started first is reset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from catalog_service.jobs import budget, status
from catalog_service.jobs.campaign import CampaignDefinition

# The figures the job store keeps (jobs/figures.py): a few rows per campaign, where the
# full scan of every tile took 4-6 s at a million tiles. One statement, so the rows and
# the totals are one snapshot. The mean runtime divides in numeric as the scan's
# avg(extract(epoch ...)) did, so it is the same float.
_FINISHED = f"FILTER (WHERE status = '{status.FINISHED}')"
_FIGURES = f"""
SELECT r.status, r.backend, r.n, t.*
FROM (
    SELECT sum(costs_sum) AS spent,
           sum(n) {_FINISHED} AS finished_n,
           sum(costs_n) {_FINISHED} AS costs_n,
           sum(costs_sum) {_FINISHED} AS costs,
           (sum(runtime_sum) {_FINISHED} / nullif(sum(runtime_n) {_FINISHED}, 0))::float8
               AS mean_runtime_s,
           (SELECT first_start FROM tilekeeper.campaign_times WHERE collection = $1)
               AS first_start
    FROM tilekeeper.campaign_figures WHERE collection = $1
) t
LEFT JOIN tilekeeper.campaign_figures r ON r.collection = $1 AND r.n <> 0
"""


async def summarize(
    conn: asyncpg.Connection, definition: CampaignDefinition, now: datetime | None = None
) -> dict[str, Any]:
    """The campaign's figures; ``now`` (default: the clock) dates the throughput."""
    # At least one row (the totals); a campaign without tiles has no figure rows.
    rows = await conn.fetch(_FIGURES, definition.id)
    totals = rows[0]
    by_status: dict[str, int] = {}
    by_backend: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["status"] is None:
            continue
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["backend"]:
            by_backend.setdefault(row["backend"], {})[row["status"]] = row["n"]
    total = sum(by_status.values())
    done = sum(n for s, n in by_status.items() if s in status.TERMINAL)
    first_start = totals["first_start"]
    now = now or datetime.now(UTC)
    remaining = total - done
    mean_runtime = totals["mean_runtime_s"]
    costs_n = int(totals["costs_n"] or 0)
    # As the scan's sum and avg of float8 costs: None without a finished tile's costs.
    costs = float(totals["costs"]) if costs_n else None
    mean_costs = costs / costs_n if costs is not None else None
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
            "count": int(totals["finished_n"] or 0),
            "mean_runtime_s": mean_runtime,
            "mean_costs": mean_costs,
            "costs": costs,
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
            float(totals["spent"] or 0),
            sum(n for s, n in by_status.items() if s in status.ACTIVE),
            mean_costs,
        ),
    }
