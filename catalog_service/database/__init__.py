"""The catalogue database: embedded cluster lifecycle, schema installation, logins."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

from catalog_service.auth.keys import admin_key_path, ensure_admin_key
from catalog_service.database.cluster import ClusterStatus, EmbeddedCluster
from catalog_service.database.connection import (
    ConnectionInfo,
    Credentials,
    DatabaseLogins,
    credentials_path,
    resolve_logins,
)
from catalog_service.database.schema import SchemaReport, ensure_login_roles, install
from catalog_service.settings import DatabaseSettings

__all__ = [
    "ClusterStatus",
    "ConnectionInfo",
    "DatabaseLogins",
    "EmbeddedCluster",
    "UpReport",
    "bring_down",
    "bring_up",
    "resolve_logins",
]


@dataclass(frozen=True)
class UpReport:
    external: bool
    created: bool
    started: bool
    schema: SchemaReport
    logins: DatabaseLogins
    admin_key: Path | None
    admin_key_created: bool

    @property
    def changed(self) -> bool:
        return (
            self.created
            or self.started
            or self.schema.database_created
            or self.schema.pgstac_before != self.schema.pgstac_version
        )


def _admin_key(logins: DatabaseLogins, settings: DatabaseSettings) -> tuple[Path | None, bool]:
    path = admin_key_path(settings)
    if path is None:
        return None, False
    with psycopg.connect(logins.admin.dsn, autocommit=True) as conn:
        return path, ensure_admin_key(conn, path)


def bring_up(settings: DatabaseSettings) -> UpReport:
    """Create (first time), start and migrate the database, and keep an admin API key
    beside it. A second call changes nothing."""
    if settings.external:
        logins = resolve_logins(settings)
        schema = install(logins.admin, None)
        report = UpReport(True, False, False, schema, logins, *_admin_key(logins, settings))
        if settings.writer_password and settings.reader_password:
            ensure_login_roles(
                logins.admin,
                Credentials(
                    admin="",
                    writer=settings.writer_password.get_secret_value(),
                    reader=settings.reader_password.get_secret_value(),
                ),
            )
        return report
    cluster = EmbeddedCluster(settings)
    created = cluster.init()
    started = cluster.start()
    logins = resolve_logins(settings)
    schema = install(logins.admin, Credentials.load(credentials_path(settings)))
    return UpReport(False, created, started, schema, logins, *_admin_key(logins, settings))


def bring_down(settings: DatabaseSettings) -> bool:
    """Stop the embedded cluster. Returns True when it was running."""
    if settings.external:
        return False
    return EmbeddedCluster(settings).stop()
