"""Connection details for the catalogue database, embedded or external."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

from catalog_service.errors import ConfigurationError
from catalog_service.private_files import write_private
from catalog_service.settings import DatabaseSettings

WRITER_ROLE = "tilekeeper_writer"
READER_ROLE = "tilekeeper_reader"
ADMIN_ROLE = "tilekeeper_admin"


@dataclass(frozen=True)
class ConnectionInfo:
    """One login to one database."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    # The DSN's other parameters (sslmode, sslrootcert, target_session_attrs, ...), kept:
    # dropping them silently turned `sslmode=verify-full` into libpq's default `prefer`.
    options: tuple[tuple[str, str], ...] = ()

    @property
    def dsn(self) -> str:
        """A libpq URL (psycopg, asyncpg and psql all take it)."""
        host = self.host if not self.host.startswith("/") else quote(self.host, safe="")
        query = f"?{urlencode(self.options)}" if self.options else ""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host}:{self.port}/{quote(self.dbname, safe='')}{query}"
        )

    def redacted(self) -> str:
        """The DSN without its password, for messages."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def with_user(self, user: str, password: str) -> ConnectionInfo:
        return replace(self, user=user, password=password)

    def with_dbname(self, dbname: str) -> ConnectionInfo:
        return replace(self, dbname=dbname)

    def same_server(self, other: ConnectionInfo) -> bool:
        return (self.host, self.port, self.dbname) == (other.host, other.port, other.dbname)


@dataclass(frozen=True)
class Credentials:
    """Passwords of the embedded cluster's roles, kept beside it (mode 0600)."""

    admin: str
    writer: str
    reader: str

    @classmethod
    def load(cls, path: Path) -> Credentials:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self)))


@dataclass(frozen=True)
class DatabaseLogins:
    """The three logins the service needs: admin (migrations), writer and reader."""

    admin: ConnectionInfo
    writer: ConnectionInfo
    reader: ConnectionInfo


def credentials_path(settings: DatabaseSettings) -> Path:
    return settings.data_dir / "credentials.json"


def _from_conninfo(dsn: str) -> ConnectionInfo:
    """Parse a DSN, filling gaps from the standard PG* variables as libpq does."""
    parts = conninfo_to_dict(dsn)
    env = os.environ
    named = ("host", "port", "user", "password", "dbname")
    try:
        return ConnectionInfo(
            host=str(parts.get("host") or env.get("PGHOST") or "localhost"),
            port=int(parts.get("port") or env.get("PGPORT") or 5432),
            user=str(parts.get("user") or env.get("PGUSER") or "postgres"),
            password=str(parts.get("password") or env.get("PGPASSWORD") or ""),
            dbname=str(parts.get("dbname") or env.get("PGDATABASE") or "postgres"),
            options=tuple(sorted((k, str(v)) for k, v in parts.items() if k not in named)),
        )
    except ValueError as exc:
        raise ConfigurationError(f"Cannot parse the database DSN: {exc}") from exc


def resolve_logins(settings: DatabaseSettings) -> DatabaseLogins:
    """The logins to use: from the DSN/PG* variables, or the embedded cluster's credentials."""
    if settings.external:
        writer = _from_conninfo(settings.dsn or "")
        reader = _from_conninfo(settings.read_dsn) if settings.read_dsn else writer
        return DatabaseLogins(admin=writer, writer=writer, reader=reader)
    path = credentials_path(settings)
    if not path.exists():
        raise ConfigurationError(
            f"No embedded database at {settings.data_dir}. "
            "Run `tilekeeper db up` first, or set TILEKEEPER_DB_DSN for an external PostgreSQL."
        )
    creds = Credentials.load(path)
    base = ConnectionInfo(settings.host, settings.port, ADMIN_ROLE, creds.admin, settings.name)
    return DatabaseLogins(
        admin=base,
        writer=base.with_user(WRITER_ROLE, creds.writer),
        reader=base.with_user(READER_ROLE, creds.reader),
    )
