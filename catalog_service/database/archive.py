"""pg_dump archives of the catalogue: the PostgreSQL client tools, what an archive holds,
and replaying one into a database in a single transaction.

Why not plain pg_restore: it empties search_path on every connection (CVE-2018-1058),
and pgstac's SQL functions call PostGIS unqualified, so a plain restore fails
(``st_makeenvelope(...) does not exist``, pgstac issue #64). pg_restore turns the archive
into SQL instead, its search_path line is set to ``pgstac, public`` (every name in a dump
is qualified: only pgstac's own function bodies look it up), and psql runs it all in one
transaction after dropping the old schemas. COMMIT is sent only when every pg_restore step
read its part of the archive, so a damaged archive changes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from catalog_service.database.cluster import PG_MAJOR
from catalog_service.errors import DatabaseSetupError

log = logging.getLogger(__name__)

# The catalogue: pgstac's schema and every schema of tilekeeper's, all named tilekeeper*
# (tilekeeper_search came later), so backups hold the ones added since.
DUMPED = ("pgstac", "tilekeeper*")
REQUIRED = ("pgstac", "tilekeeper")
OURS_SQL = "SELECT nspname FROM pg_namespace WHERE nspname = 'pgstac' OR nspname LIKE 'tilekeeper%'"
_EMPTY_PATH = "SELECT pg_catalog.set_config('search_path', '', false);"
_SEARCH_PATH = "SET search_path = pgstac, public;"
# Where a dump's DDL names a role: owners, default privileges, grants.
_ROLE_REFS = re.compile(
    r"(^ALTER .* OWNER TO |^ALTER DEFAULT PRIVILEGES FOR ROLE |^GRANT .* TO |^REVOKE .* FROM )"
    r"(\"[^\"]+\"|\w+)",
    re.M,
)
# A restore that waits longer for the service's locks gives up (and changes nothing).
_LOCK_TIMEOUT = "2min"


@dataclass(frozen=True)
class PgTarget:
    """How the client tools reach a database: a conninfo without its password (kept off
    command lines, which `ps` shows) and the password, passed as PGPASSWORD."""

    conninfo: str
    password: str | None
    bin: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(
                self.conninfo, password=self.password, connect_timeout=10, autocommit=True
            )
        except psycopg.OperationalError as exc:
            raise DatabaseSetupError(
                f"Cannot connect to the catalogue database: {str(exc).strip()}. Is it up? "
                "(`tilekeeper db up`, or check TILEKEEPER_DB_DSN)"
            ) from exc

    def tool(self, name: str) -> str:
        return str(self.bin / name)


def client_bin(configured: Path | None) -> Path:
    """pg_dump, pg_restore and psql of the server's major version (pg_dump refuses a newer
    server; Debian's /usr/bin wrappers may pick another version)."""
    candidates = [configured] if configured else []
    candidates += [Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"), Path(f"/usr/pgsql-{PG_MAJOR}/bin")]
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if candidate and all((candidate / t).exists() for t in ("pg_dump", "pg_restore", "psql")):
            return candidate
    raise DatabaseSetupError(
        f"pg_dump, pg_restore and psql of PostgreSQL {PG_MAJOR} not found: install them "
        f"(`apt-get install postgresql-client-{PG_MAJOR}`) or set TILEKEEPER_DB_PG_BIN."
    )


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", env=env, check=False)
    if proc.returncode != 0:
        raise DatabaseSetupError(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()}")
    return proc.stdout


def check_archive(bin_dir: Path, archive: Path) -> None:
    """An error that says so when ``archive`` is no readable archive of a catalogue."""
    proc = subprocess.run(
        [str(bin_dir / "pg_restore"), "-l", str(archive)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DatabaseSetupError(
            f"{archive} is not a readable backup ({proc.stderr.strip()}). Nothing was changed."
        )
    missing = [s for s in REQUIRED if not re.search(rf" SCHEMA - {s} ", proc.stdout)]
    if missing:
        raise DatabaseSetupError(
            f"{archive} is a pg_dump archive but not of a tilekeeper catalogue (no schema "
            f"{', '.join(missing)}); make backups with `tilekeeper db backup`. Nothing was changed."
        )


def archived_versions(bin_dir: Path, archive: Path) -> tuple[str, int]:
    """pgstac's version and tilekeeper's migration recorded in the archive."""
    cmd = [str(bin_dir / "pg_restore"), "-a", "-t", "migrations", "-f", "-", str(archive)]
    try:
        text = run([*cmd, "-n", "pgstac", "-n", "tilekeeper"])
    except DatabaseSetupError as exc:
        raise DatabaseSetupError(f"{archive} is damaged ({exc}). Nothing was changed.") from exc
    pgstac, tilekeeper, table = "", 0, ""
    for line in text.splitlines():
        if line.startswith("COPY "):
            table = line.split()[1]
        elif line == "\\.":
            table = ""
        elif table == "pgstac.migrations":
            pgstac = max(pgstac, line.split("\t")[0], key=version_key)
        elif table == "tilekeeper.migrations":
            tilekeeper = max(tilekeeper, int(line.split("\t")[0]))
    return pgstac, tilekeeper


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def _ddl(db: PgTarget, archive: Path, section: str, roles: set[str], me: str) -> str:
    """A section's SQL with the roles missing here (the source's admin login, say) mapped
    to the login restoring, so a backup moves between the embedded and a managed
    PostgreSQL."""
    text = run([db.tool("pg_restore"), f"--section={section}", "-f", "-", str(archive)])
    mine = sql.Identifier(me).as_string(None)

    def mapped(match: re.Match[str]) -> str:
        role = match.group(2).strip('"')
        known = role in roles or role.upper() == "PUBLIC"
        return match.group(0) if known else match.group(1) + mine

    return _ROLE_REFS.sub(mapped, text.replace(_EMPTY_PATH, _SEARCH_PATH, 1))


def replace_catalogue(
    db: PgTarget, archive: Path, roles: set[str], me: str, drop: list[str]
) -> None:
    """Drop the schemas ``drop`` and restore ``archive`` in their place, in one transaction."""
    pre = _ddl(db, archive, "pre-data", roles, me)
    post = _ddl(db, archive, "post-data", roles, me)
    start = sql.SQL("BEGIN;\nSET client_min_messages = warning;\nSET lock_timeout = {};\n").format(
        sql.Literal(_LOCK_TIMEOUT)
    )
    if drop:
        schemas = sql.SQL(", ").join(sql.Identifier(s) for s in drop)
        start += sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE;\n").format(schemas)
    failure: str | None = "psql stopped"
    with tempfile.TemporaryFile() as errors:
        cmd = [db.tool("psql"), "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", db.conninfo]
        psql = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=db.env()
        )
        assert psql.stdin is not None
        try:
            psql.stdin.write(start.as_string(None).encode() + pre.encode())
            log.info("Schema restored; restoring the data...")
            failure = _copy_data(db, archive, psql.stdin)
            if failure is None:
                log.info("Data restored; building indexes and committing...")
                psql.stdin.write(post.encode() + _WHOLE_CATALOGUE.encode() + b"COMMIT;\n")
            psql.stdin.close()
        except BrokenPipeError:
            pass  # psql stopped at an error: its message is read below
        except BaseException:
            psql.kill()  # interrupted: the transaction dies with psql's session
            psql.wait()
            raise
        # Without COMMIT, psql ends its session and PostgreSQL rolls it all back.
        code = psql.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if code != 0 or failure is not None:
        raise DatabaseSetupError(
            f"Restore from {archive} failed and was rolled back; the catalogue is as it was. "
            f"{message or failure}{_advice(message)}"
        )


# Checked before the COMMIT, in the restore's transaction: what the archive made lies in the
# catalogue's schemas only (an outside tester's crafted archive also made tables in
# public), and the catalogue it leaves is whole (a crafted one left the service answering
# 500 and the next `db up` failing). An archive is still SQL run as the admin login, as any
# pg_dump is: restore only backups you made (docs/operations.md, "Backups").
_WHOLE_CATALOGUE = r"""
DO $check$
DECLARE
    mine xid := pg_current_xact_id()::text::xid;
    stray text;
BEGIN
    SELECT string_agg(format('%I.%I', n.nspname, made.name), ', ') INTO stray
    FROM (
        SELECT relnamespace AS ns, relname::text AS name FROM pg_class WHERE xmin = mine
        UNION ALL SELECT pronamespace, proname::text FROM pg_proc WHERE xmin = mine
        UNION ALL SELECT typnamespace, typname::text FROM pg_type WHERE xmin = mine
    ) AS made
    JOIN pg_namespace n ON n.oid = made.ns
    WHERE n.nspname <> 'pgstac' AND n.nspname NOT LIKE 'tilekeeper%'
      AND n.nspname NOT LIKE 'pg\_toast%';
    IF stray IS NOT NULL THEN
        RAISE EXCEPTION 'not a tilekeeper backup: it makes objects outside the catalogue''s '
            'schemas (%)', left(stray, 200);
    END IF;
    IF to_regclass('pgstac.collections') IS NULL OR to_regclass('pgstac.items') IS NULL
        OR to_regclass('pgstac.queryables') IS NULL OR to_regclass('pgstac.migrations') IS NULL
        OR to_regclass('tilekeeper.migrations') IS NULL
    THEN
        RAISE EXCEPTION 'not a whole tilekeeper catalogue: pgstac''s or tilekeeper''s tables are missing';
    END IF;
END
$check$;
"""


def _advice(message: str) -> str:
    if "max_locks_per_transaction" in message:
        return (
            " The restore takes ~50 locks per collection in its one transaction: raise "
            "max_locks_per_transaction (`ALTER SYSTEM SET max_locks_per_transaction = 512`, "
            "then restart PostgreSQL: `tilekeeper db down && tilekeeper db up`) and run again."
        )
    if "lock timeout" in message:
        return (
            " Something held the catalogue's tables: stop runners and the service, then run again."
        )
    return ""


def _copy_data(db: PgTarget, archive: Path, sink: IO[bytes]) -> str | None:
    """Pipe the data section into psql; pg_restore's error when it could not read it all."""
    cmd = [db.tool("pg_restore"), "--section=data", "-f", "-", str(archive)]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=db.env())
        assert proc.stdout is not None
        try:
            for line in proc.stdout:  # the preamble, up to its search_path line
                if line.decode(errors="replace").strip() == _EMPTY_PATH:
                    sink.write(_SEARCH_PATH.encode() + b"\n")
                    break
                sink.write(line)
            shutil.copyfileobj(proc.stdout, sink, 1 << 20)
        finally:
            proc.stdout.close()
            code = proc.wait()
        errors.seek(0)
        return None if code == 0 else errors.read().decode(errors="replace").strip()
