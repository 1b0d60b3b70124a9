"""Installing and upgrading what tilekeeper needs inside PostgreSQL.

pgstac comes from ``pypgstac migrate``; tilekeeper's own tables live in the
``tilekeeper`` schema and are versioned by the ordered statements in ``MIGRATIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from pypgstac.db import PgstacDB
from pypgstac.migrate import Migrate
from pypgstac.version import __version__ as PGSTAC_VERSION

from catalog_service.database import (
    campaign_search,
    figures_schema,
    hrefs,
    overview_schema,
    queryables,
)
from catalog_service.database.connection import (
    READER_ROLE,
    WRITER_ROLE,
    ConnectionInfo,
    Credentials,
)
from catalog_service.errors import DatabaseSetupError

# The tile's openEO job id was the property `id`, which GIS clients took for the item's id
# (the tile's) and stac-geoparquet dropped; it is `openeo:job_id` (jobs/campaign.py).
RENAME_JOB_ID_SQL = """
UPDATE pgstac.items i
SET content = jsonb_set(i.content #- '{properties,id}', '{properties,openeo:job_id}',
                        i.content->'properties'->'id')
FROM pgstac.collections c
WHERE c.id = i.collection AND c.content ? 'tilekeeper:campaign'
  AND jsonb_typeof(i.content->'properties') = 'object' AND i.content->'properties' ? 'id';
"""

# Each entry is applied once, in order, and recorded in tilekeeper.migrations.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS tilekeeper.migrations (
        version int PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # The job-tracking properties every campaign filters and counts by: registered as
    # pgstac queryables (so /queryables, STAC Browser and <name>_frequency see them) with
    # a BTREE index, which takes a status count at 100k items from ~190 ms to ~1 ms.
    """
    INSERT INTO pgstac.queryables (name, definition, property_wrapper, property_index_type)
    SELECT name, definition::jsonb, 'to_text', 'BTREE'
    FROM (VALUES
        ('status', '{"type": "string", "title": "Job status", "description": "openEO or job-manager status of the tile job"}'),
        ('backend_name', '{"type": "string", "title": "Back-end", "description": "openEO back-end running the tile job"}'),
        ('grid:code', '{"type": "string", "title": "Grid code", "description": "Tile id in its grid (grid extension)"}')
    ) AS q(name, definition)
    WHERE NOT EXISTS (SELECT 1 FROM pgstac.queryables e WHERE e.name = q.name);
    """,
    # The job store: an append-only history of every status change, and the indexes the
    # job database reads through (jobs of a status in processing order; a job by its
    # order number). On the partitioned parent, so every campaign's partition gets them.
    """
    CREATE TABLE tilekeeper.job_history (
        seq bigserial PRIMARY KEY,
        collection text NOT NULL,
        item_id text NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        from_status text,
        to_status text NOT NULL,
        actor text NOT NULL,
        details jsonb
    );
    CREATE INDEX job_history_tile ON tilekeeper.job_history (collection, item_id, seq);
    CREATE INDEX IF NOT EXISTS tilekeeper_jobs_queue ON pgstac.items (
        collection,
        (content->'properties'->>'status'),
        ((content->'properties'->>'tilekeeper:order')::bigint),
        id
    ) WHERE content->'properties' ? 'tilekeeper:order';
    CREATE INDEX IF NOT EXISTS tilekeeper_jobs_order ON pgstac.items (
        collection, ((content->'properties'->>'tilekeeper:order')::bigint)
    ) WHERE content->'properties' ? 'tilekeeper:order';
    """,
    # Runner workers with their leases (jobs/workers.py), and tiles per status kept as
    # counters by the job store (jobs/counts.py), filled from the tiles already stored.
    """
    CREATE TABLE tilekeeper.workers (
        collection text NOT NULL,
        worker text NOT NULL,
        info jsonb,
        started timestamptz NOT NULL DEFAULT clock_timestamp(),
        seen timestamptz NOT NULL DEFAULT clock_timestamp(),
        lease_until timestamptz NOT NULL,
        PRIMARY KEY (collection, worker)
    );
    CREATE TABLE tilekeeper.status_counts (
        collection text NOT NULL,
        status text NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (collection, status)
    );
    INSERT INTO tilekeeper.status_counts (collection, status, n)
    SELECT collection, content->'properties'->>'status', count(*)
    FROM pgstac.items WHERE content->'properties' ? 'tilekeeper:order'
    GROUP BY 1, 2;
    CREATE FUNCTION tilekeeper.forget_collection() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM tilekeeper.status_counts WHERE collection = OLD.id;
        DELETE FROM tilekeeper.workers WHERE collection = OLD.id;
        RETURN OLD;
    END;
    $$;
    CREATE TRIGGER tilekeeper_forget_collection AFTER DELETE ON pgstac.collections
    FOR EACH ROW EXECUTE FUNCTION tilekeeper.forget_collection();
    """,
    # The campaign map's feed of changes: a campaign's history rows after a cursor.
    """
    CREATE INDEX IF NOT EXISTS job_history_feed ON tilekeeper.job_history (collection, seq);
    """,
    # API keys: only their tokens' digests, with scopes, expiry and revocation.
    """
    CREATE TABLE tilekeeper.api_keys (
        id text PRIMARY KEY,
        name text NOT NULL,
        secret_sha256 text NOT NULL UNIQUE,
        scopes text[] NOT NULL,
        created timestamptz NOT NULL DEFAULT now(),
        expires timestamptz,
        revoked timestamptz
    );
    """,
    # pgstac's delete_collection runs as pgstac_admin (SECURITY DEFINER), which may not
    # enter our schema: the clean-up trigger runs as its owner instead.
    """
    ALTER FUNCTION tilekeeper.forget_collection() SECURITY DEFINER
        SET search_path = tilekeeper, pg_temp;
    """,
    # Numbers and dates sort and compare as such: every numeric or date property of job
    # and product items typed (database/queryables.py), pgstac's core queryables without
    # $refs to the internet.
    queryables.migration_sql(),
    # numberMatched where counting is cheap: pgstac counts a search whose plan it
    # estimates below either threshold, and answers the planner's estimate above both
    # (docs/http-api.md, "Sorting, counts and queryables": counting 100,000 tiles took 19 ms, at a
    # planner cost of 9,329). Counts are kept 10 s, not a day: tiles change all the time.
    # Only pgstac's defaults change; an operator's own settings stay.
    """
    UPDATE pgstac.pgstac_settings SET value = 'auto'
    WHERE name = 'context' AND value = 'off';
    UPDATE pgstac.pgstac_settings SET value = '10000'
    WHERE name = 'context_estimated_count' AND value = '100000';
    UPDATE pgstac.pgstac_settings SET value = '50000'
    WHERE name = 'context_estimated_cost' AND value = '100000';
    UPDATE pgstac.pgstac_settings SET value = '10 seconds'
    WHERE name = 'context_stats_ttl' AND value = '1 day';
    """,
    # Hrefs to the API's own files and items stored relative to its root (database/hrefs.py).
    hrefs.MIGRATION_SQL,
    # The job id property renamed, and registered as a queryable.
    RENAME_JOB_ID_SQL + queryables.migration_sql(),
    # A campaign's searches answered from indexes (database/campaign_search.py).
    campaign_search.MIGRATION_SQL,
    # A campaign's summary figures kept by every write of its tiles (jobs/figures.py).
    figures_schema.MIGRATION_SQL,
    # The campaign overviews and the products they have yet to take in (raster/overview.py).
    overview_schema.MIGRATION_SQL,
)


@dataclass(frozen=True)
class SchemaReport:
    database_created: bool
    pgstac_before: str | None
    pgstac_version: str
    tilekeeper_version: int


def _connect(info: ConnectionInfo) -> psycopg.Connection[tuple[object, ...]]:
    try:
        conn = psycopg.connect(info.dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseSetupError(
            f"Cannot connect to {info.redacted()}: {str(exc).strip()}"
        ) from exc
    # pgstac's triggers call its functions unqualified.
    conn.execute("SET search_path TO pgstac, public")
    return conn


def ensure_database(admin: ConnectionInfo) -> bool:
    """Create the catalogue database if missing. Returns True when it was created."""
    with _connect(admin.with_dbname("postgres")) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [admin.dbname]
        ).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(admin.dbname)))
        return True


def _check_postgis(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").fetchone()
    if not row:
        major = conn.info.server_version // 10000
        raise DatabaseSetupError(
            f"PostGIS is not installed for PostgreSQL {major}. pgstac needs it: run "
            f"`apt-get update && apt-get install -y postgresql-{major}-postgis-3` "
            "(or install PostGIS on your managed PostgreSQL), then run `tilekeeper db up` again."
        )


def installed_pgstac_version(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    row = conn.execute("SELECT to_regclass('pgstac.migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute(
        "SELECT version FROM pgstac.migrations ORDER BY datetime DESC, version DESC LIMIT 1"
    ).fetchone()
    return str(version[0]) if version else None


def _migrate_tilekeeper(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    conn.execute("CREATE SCHEMA IF NOT EXISTS tilekeeper")
    with conn.transaction():
        conn.execute(MIGRATIONS[0])
        conn.execute("LOCK TABLE tilekeeper.migrations IN EXCLUSIVE MODE")
        row = conn.execute("SELECT coalesce(max(version), 0) FROM tilekeeper.migrations").fetchone()
        current = int(str(row[0])) if row else 0
        for version, statement in enumerate(MIGRATIONS, start=1):
            if version > current:
                conn.execute(statement)
                conn.execute("INSERT INTO tilekeeper.migrations (version) VALUES (%s)", [version])
    # pgstac's roles read and write our tables through the same grants as pgstac's.
    conn.execute("GRANT USAGE ON SCHEMA tilekeeper TO pgstac_read, pgstac_ingest")
    conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA tilekeeper TO pgstac_read")
    conn.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tilekeeper TO pgstac_ingest"
    )
    conn.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA tilekeeper TO pgstac_ingest")
    return len(MIGRATIONS)


def _ensure_login_roles(conn: psycopg.Connection[tuple[object, ...]], creds: Credentials) -> None:
    for role, password, member_of in (
        (WRITER_ROLE, creds.writer, "pgstac_ingest"),
        (READER_ROLE, creds.reader, "pgstac_read"),
    ):
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("ALTER ROLE {} SET search_path TO pgstac, public").format(sql.Identifier(role))
        )


def ensure_login_roles(admin: ConnectionInfo, creds: Credentials) -> None:
    """The writer and reader logins with these passwords (created or updated)."""
    with _connect(admin) as conn:
        _ensure_login_roles(conn, creds)


def install(admin: ConnectionInfo, creds: Credentials | None) -> SchemaReport:
    """Bring the database to the schema this tilekeeper needs. Safe to call repeatedly.

    ``creds`` are the embedded cluster's role passwords; for an external database the
    login roles are the operator's business and ``creds`` is None.
    """
    created = ensure_database(admin) if creds is not None else False
    with _connect(admin) as conn:
        _check_postgis(conn)
        before = installed_pgstac_version(conn)
    if before != PGSTAC_VERSION:
        db = PgstacDB(dsn=admin.dsn)
        try:
            Migrate(db).run_migration()
        except psycopg.Error as exc:
            raise DatabaseSetupError(
                f"pgstac migration to {PGSTAC_VERSION} failed: {exc}. The login needs the "
                "rights to create extensions and roles (a superuser, or rds_superuser-like)."
            ) from exc
        finally:
            db.close()
    with _connect(admin) as conn:
        # JIT makes pgstac's single-row upserts 10-20x slower (to_text() COST 5000).
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET jit = off").format(sql.Identifier(admin.dbname))
        )
        if creds is not None:
            _ensure_login_roles(conn, creds)
        version = _migrate_tilekeeper(conn)
    return SchemaReport(created, before, PGSTAC_VERSION, version)
