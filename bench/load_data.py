"""The load bench's data: a campaign of N utm-10km tiles part-way through its run.

Tiles are registered through the API (CampaignJobDatabase, as a user does); the run's
progress is then written in one SQL statement per status as the admin (a million job
changes over HTTP would take the bench an hour and measure nothing it reports), with the
job store's counters recomputed so counts and summaries answer as in a real run."""

from __future__ import annotations

import time

from jobdb import frame
from psycopg import connect
from rich.console import Console

from catalog_service import CampaignJobDatabase
from catalog_service.jobs import figures

console = Console()
# Where a campaign is after a week of its run: share of tiles per status (the rest not_started).
MIX = {"finished": 0.55, "error": 0.02, "running": 0.03, "queued": 0.02}
BACKENDS = ("alpha", "beta")


def has_campaign(admin_dsn: str, campaign: str, n: int) -> bool:
    with connect(admin_dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM tilekeeper.status_counts WHERE collection = %s",
            (campaign,),
        ).fetchone()
    return row is not None and int(row[0]) == n


def make_campaign(url: str, admin_dsn: str, campaign: str, n: int) -> None:
    """Register ``n`` tiles and move them along as a week of the run would."""
    started = time.perf_counter()
    console.print(f"making {n:,} tiles ...")
    gdf = frame(n)
    CampaignJobDatabase(campaign, url).initialize_from_df(gdf)
    console.print(f"registered {n:,} tiles in {time.perf_counter() - started:.0f} s")
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")
        low = 0.0
        for name, share in MIX.items():
            high = low + share
            # The processing order spreads statuses over the whole campaign.
            conn.execute(
                """
                UPDATE pgstac.items SET content = jsonb_set(content, '{properties}',
                    content->'properties' || jsonb_build_object(
                        'status', %(status)s::text,
                        'backend_name', (%(backends)s::text[])[1 + (hashtext(id) & 1)],
                        'openeo:job_id', 'j-' || md5(id),
                        'costs', 100 + (hashtext(id) & 63)))
                WHERE collection = %(c)s
                  AND ((content->'properties'->>'tilekeeper:order')::bigint * 7919 %% %(n)s)::float8
                      / %(n)s >= %(low)s
                  AND ((content->'properties'->>'tilekeeper:order')::bigint * 7919 %% %(n)s)::float8
                      / %(n)s < %(high)s
                """,
                {
                    "status": name,
                    "backends": list(BACKENDS),
                    "c": campaign,
                    "n": n,
                    "low": low,
                    "high": high,
                },
            )
            low = high
        conn.execute("DELETE FROM tilekeeper.status_counts WHERE collection = %s", (campaign,))
        conn.execute(
            """
            INSERT INTO tilekeeper.status_counts (collection, status, n)
            SELECT collection, content->'properties'->>'status', count(*)
            FROM pgstac.items WHERE collection = %s GROUP BY 1, 2
            """,
            (campaign,),
        )
        figures.refill(
            conn.cursor(), campaign
        )  # the summary's figures, as the job store keeps them
        conn.execute("VACUUM ANALYZE pgstac.items")
    console.print(f"campaign {campaign} ready in {time.perf_counter() - started:.0f} s")
