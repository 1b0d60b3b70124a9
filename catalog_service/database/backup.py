"""Backups of the catalogue (`tilekeeper db backup` and `db restore`): its schemas in one
pg_dump archive from a consistent snapshot, restored all or nothing (database/archive.py).

A backup holds campaigns, tile jobs, their history, counters, workers, product records,
API keys, queryables and pgstac's settings; not the product files (the product store),
not the roles (cluster-wide: `db up` makes them on the target before a restore, and
migrates and grants after it, so credentials.json and the login roles keep working).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pypgstac.version import __version__ as PGSTAC_VERSION

from catalog_service.database.archive import (
    DUMPED,
    OURS_SQL,
    PgTarget,
    archived_versions,
    check_archive,
    client_bin,
    replace_catalogue,
    run,
    version_key,
)
from catalog_service.database.schema import MIGRATIONS
from catalog_service.errors import DatabaseSetupError
from catalog_service.settings import DatabaseSettings

log = logging.getLogger(__name__)

_COUNTS = """
SELECT (SELECT count(*) FROM pgstac.collections),
       (SELECT count(*) FROM pgstac.collections WHERE content ? 'tilekeeper:campaign'),
       (SELECT count(*) FROM pgstac.items),
       (SELECT count(*) FROM tilekeeper.job_history)
"""


@dataclass(frozen=True)
class CatalogueCounts:
    collections: int
    campaigns: int
    items: int
    history_rows: int


@dataclass(frozen=True)
class BackupReport:
    path: Path
    bytes: int
    counts: CatalogueCounts  # what the archive holds (read in the dump's snapshot)
    pgstac_version: str
    seconds: float


@dataclass(frozen=True)
class RestoreReport:
    source: Path
    bytes: int
    counts: CatalogueCounts  # the catalogue now
    replaced: CatalogueCounts  # the catalogue before
    pgstac_version: str  # of the backup (`db up` migrated it after when older)
    seconds: float
    admin_key: Path | None  # a new admin key written here: the backup knew not the old one


def _target(settings: DatabaseSettings) -> PgTarget:
    from catalog_service.database import resolve_logins

    admin = resolve_logins(settings).admin
    # An external DSN keeps its own options (sslmode...), which the parsed login drops.
    parts = conninfo_to_dict(settings.dsn if settings.external and settings.dsn else admin.dsn)
    password = parts.pop("password", None) or admin.password or None
    parts.setdefault("dbname", admin.dbname)
    conninfo = make_conninfo("", **parts)
    return PgTarget(conninfo, str(password) if password else None, client_bin(settings.pg_bin))


def _counts(conn: psycopg.Connection[tuple[object, ...]]) -> CatalogueCounts:
    if conn.execute("SELECT to_regclass('tilekeeper.job_history')").fetchone() == (None,):
        return CatalogueCounts(0, 0, 0, 0)
    row = conn.execute(_COUNTS).fetchone()
    assert row is not None
    return CatalogueCounts(*(int(str(n)) for n in row))


def _one(conn: psycopg.Connection[tuple[object, ...]], query: str) -> str:
    row = conn.execute(query).fetchone()
    return "" if row is None or row[0] is None else str(row[0])


def _private_file(path: Path) -> None:
    """An empty file only its owner reads (the archive holds API key digests)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def backup_database(settings: DatabaseSettings, target: Path) -> BackupReport:
    """Write the catalogue to ``target`` (a pg_dump custom archive, mode 0600) while the
    service runs. ``target`` appears only when complete and read back."""
    started = time.monotonic()
    db = _target(settings)
    partial = target.with_name(target.name + ".partial")
    with db.connect() as conn:
        # The counts and pg_dump read one snapshot: the report is what the file holds.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = _one(conn, "SELECT pg_export_snapshot()")
        if not _one(conn, "SELECT to_regclass('tilekeeper.migrations')"):
            raise DatabaseSetupError(
                "No tilekeeper catalogue in this database (run `tilekeeper db up`): nothing "
                "to back up."
            )
        counts = _counts(conn)
        version = _one(conn, "SELECT pgstac.get_version()")
        log.info("Dumping %d collections, %d items...", counts.collections, counts.items)
        target.parent.mkdir(parents=True, exist_ok=True)
        _private_file(partial)
        try:
            cmd = [db.tool("pg_dump"), "-Fc", "-w", f"--snapshot={snapshot}", "-f", str(partial)]
            run([*cmd, *(f"--schema={s}" for s in DUMPED), "-d", db.conninfo], db.env())
            check_archive(db.bin, partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, target)
    size = target.stat().st_size
    return BackupReport(target, size, counts, version, time.monotonic() - started)


def existing_campaigns(settings: DatabaseSettings) -> list[str]:
    """The campaigns a restore would replace (none where there is no catalogue yet); the
    embedded cluster is started when it exists."""
    from catalog_service.database import EmbeddedCluster

    if not settings.external:
        cluster = EmbeddedCluster(settings)
        if not cluster.status().initialized:
            return []
        cluster.start()
    try:
        conn = _target(settings).connect()
    except DatabaseSetupError as exc:
        if f'"{settings.name}" does not exist' in str(exc) and not settings.external:
            return []  # `db up` never got as far as making it
        raise
    with conn:
        if not _one(conn, "SELECT to_regclass('pgstac.collections')"):
            return []
        rows = conn.execute(
            "SELECT id FROM pgstac.collections WHERE content ? 'tilekeeper:campaign' ORDER BY id"
        ).fetchall()
    return [str(row[0]) for row in rows]


def _check_versions(bin_dir: Path, archive: Path) -> str:
    pgstac, tilekeeper = archived_versions(bin_dir, archive)
    if version_key(pgstac) > version_key(PGSTAC_VERSION) or tilekeeper > len(MIGRATIONS):
        raise DatabaseSetupError(
            f"{archive} was made by a newer tilekeeper (pgstac {pgstac}, migration "
            f"{tilekeeper}; this one has pgstac {PGSTAC_VERSION}, migration {len(MIGRATIONS)}): "
            "upgrade tilekeeper, then restore. Nothing was changed."
        )
    return pgstac


def restore_database(settings: DatabaseSettings, source: Path) -> RestoreReport:
    """Replace the catalogue in the database of ``settings`` by the backup ``source``, all
    or nothing. The database (and embedded cluster) is made first when missing. Asks
    nobody: callers check `existing_campaigns` first."""
    from catalog_service.database import bring_up

    started = time.monotonic()
    if not source.is_file():
        raise DatabaseSetupError(f"No backup at {source}.")
    log.info("Checking %s...", source)
    check_archive(client_bin(settings.pg_bin), source)
    version = _check_versions(client_bin(settings.pg_bin), source)
    try:
        bring_up(settings)  # the cluster runs; PostGIS and pgstac's roles exist
    except DatabaseSetupError as exc:
        # A catalogue broken by hand (or by an older restore) must not stop the restore
        # that mends it: what the restore needs is a database that answers.
        log.warning("`db up` before the restore failed (%s); restoring anyway", exc)
    db = _target(settings)
    with db.connect() as conn:
        replaced = _counts(conn)
        roles = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        me = _one(conn, "SELECT current_user")
        ours = [str(r[0]) for r in conn.execute(OURS_SQL).fetchall()]
    log.info("Replacing %d collections, %d items...", replaced.collections, replaced.items)
    replace_catalogue(db, source, roles, me, ours)
    log.info("Catalogue replaced; migrating and granting (`tilekeeper db up`)...")
    up = bring_up(settings)
    with db.connect() as conn:
        counts = _counts(conn)
    return RestoreReport(
        source,
        source.stat().st_size,
        counts,
        replaced,
        version,
        time.monotonic() - started,
        up.admin_key if up.admin_key_created else None,
    )
