"""The tables a campaign's summary figures are kept in (jobs/figures.py keeps them), the
SQL that reads stored values by the same rules as the Python side, and the migration
that makes and fills them."""

from __future__ import annotations

from catalog_service.database.forget import forget_sql

# The timestamps read, in both Python and PostgreSQL: RFC 3339-like text whose every
# reading agrees in both (PostgreSQL rounds a 7th fractional digit, Python truncates it;
# PostgreSQL refuses offsets from 16 h on, Python takes them). Anything else counts as
# no time at all. Without an offset a time is UTC, as in a UTC session.
TIME_PATTERN = (
    r"^((?!0000)[0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
    r"(Z|([+-])(0[0-9]|1[0-5])(?::?([0-5][0-9]))?)?)?$"
)
# Costs beyond these (no job costs 1e300 credits) are not read: a float8 cannot hold all
# of them, and PostgreSQL and Python disagree at the edges.
SMALLEST_COSTS, LARGEST_COSTS = 1e-300, 1e300
# Read stored values by the rules above, for the migration's fill and for checks: the
# same pattern; costs through float8 (printed shortest, as Python's repr); times in UTC.
FUNCTIONS_SQL = f"""
CREATE OR REPLACE FUNCTION tilekeeper.figures_time(value jsonb) RETURNS timestamptz
LANGUAGE sql STABLE SET timezone = 'UTC' AS $$
SELECT CASE WHEN jsonb_typeof(value) = 'string' AND (value #>> '{{}}') ~ '{TIME_PATTERN}' THEN
    CASE WHEN substr(value #>> '{{}}', 9, 2)::int <= extract(day FROM make_date(
                  substr(value #>> '{{}}', 1, 4)::int, substr(value #>> '{{}}', 6, 2)::int, 1)
                  + interval '1 month - 1 day')
         THEN (value #>> '{{}}')::timestamptz END
END
$$;
CREATE OR REPLACE FUNCTION tilekeeper.figures_costs(value jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE SET extra_float_digits = 1 AS $$
SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN
    CASE WHEN (value::text)::numeric = 0
              OR abs((value::text)::numeric) BETWEEN {SMALLEST_COSTS} AND {LARGEST_COSTS}
         THEN ((value::text)::float8)::text::numeric END
END
$$;
"""

# The tables the job store keeps.
TABLES_SQL = """
CREATE TABLE tilekeeper.campaign_figures (
    collection text NOT NULL,
    status text NOT NULL,
    backend text NOT NULL,
    n bigint NOT NULL DEFAULT 0,
    costs_n bigint NOT NULL DEFAULT 0,
    costs_sum numeric NOT NULL DEFAULT 0,
    runtime_n bigint NOT NULL DEFAULT 0,
    runtime_sum numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, status, backend)
);
CREATE TABLE tilekeeper.campaign_times (
    collection text PRIMARY KEY,
    first_start timestamptz,
    last_finish timestamptz
);
"""
# The tables filled from the tiles already stored (campaign collections only; a value the
# rules above do not read counts as absent, so no stored value fails the migration).
_FILL = """
WITH tiles AS (
    SELECT i.collection,
           coalesce(p->>'status', 'not_started') AS status,
           coalesce(p->>'backend_name', '') AS backend,
           -- The attempt's credits and the earlier attempts' (jobs/campaign.py).
           CASE WHEN tilekeeper.figures_costs(p->'costs') IS NOT NULL
                  OR tilekeeper.figures_costs(p->'tilekeeper:earlier_costs') IS NOT NULL
                THEN coalesce(tilekeeper.figures_costs(p->'costs'), 0)
                   + coalesce(tilekeeper.figures_costs(p->'tilekeeper:earlier_costs'), 0)
           END AS costs,
           CASE WHEN p->>'status' = 'finished' THEN extract(epoch FROM
               tilekeeper.figures_time(p->'finish_time') - tilekeeper.figures_time(p->'start_time'))
           END AS runtime,
           tilekeeper.figures_time(p->'start_time') AS started,
           tilekeeper.figures_time(p->'finish_time') AS finished
    FROM pgstac.items i
    JOIN pgstac.collections c ON c.id = i.collection
    CROSS JOIN LATERAL (SELECT i.content->'properties' AS p) props
    WHERE c.content ? 'tilekeeper:campaign' {only}
), figures AS (
    INSERT INTO tilekeeper.campaign_figures
    SELECT collection, status, backend, count(*), count(costs), coalesce(sum(costs), 0),
           count(runtime), coalesce(sum(runtime), 0)
    FROM tiles GROUP BY 1, 2, 3
)
INSERT INTO tilekeeper.campaign_times
SELECT collection, min(started), max(finished) FROM tiles
GROUP BY 1 HAVING min(started) IS NOT NULL OR max(finished) IS NOT NULL;
"""
FILL_SQL = _FILL.format(only="")
REFILL = [
    "DELETE FROM tilekeeper.campaign_figures WHERE collection = %(c)s",
    "DELETE FROM tilekeeper.campaign_times WHERE collection = %(c)s",
    _FILL.format(only="AND i.collection = %(c)s"),
]


# A deleted collection takes its figures along (database/forget.py).
FORGOTTEN = ("status_counts", "workers", "campaign_figures", "campaign_times")
FORGET_SQL = forget_sql(FORGOTTEN)
MIGRATION_SQL = TABLES_SQL + FUNCTIONS_SQL + FILL_SQL + FORGET_SQL
