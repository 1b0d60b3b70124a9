"""The catalogue database: embedded cluster lifecycle, schema installation, logins."""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def changed(self) -> bool:
        return (
            self.created
            or self.started
            or self.schema.database_created
            or self.schema.pgstac_before != self.schema.pgstac_version
        )


def bring_up(settings: DatabaseSettings) -> UpReport:
    """Create (first time), start and migrate the database. A second call changes nothing."""
    if settings.external:
        logins = resolve_logins(settings)
        report = UpReport(True, False, False, install(logins.admin, None), logins)
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
    return UpReport(False, created, started, schema, logins)


def bring_down(settings: DatabaseSettings) -> bool:
    """Stop the embedded cluster. Returns True when it was running."""
    if settings.external:
        return False
    return EmbeddedCluster(settings).stop()
