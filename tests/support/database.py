"""The test cluster and the API over it: a real PostgreSQL + PostGIS + pgstac cluster
started by the same code as `tilekeeper db up`, and helpers to reach it. The fixtures
that use them (``database``, ``api``, ``http``) are in tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from catalog_service.api.server import ServerThread, free_port
from catalog_service.database import EmbeddedCluster, UpReport, bring_up
from catalog_service.settings import ApiSettings, AuthSettings, DatabaseSettings, ProductSettings


@dataclass
class Database:
    settings: DatabaseSettings
    report: UpReport
    cluster: EmbeddedCluster

    def destroy(self) -> None:
        """Stop the cluster and remove its temporary directory."""
        self.cluster.destroy()
        shutil.rmtree(self.settings.data_dir.parent, ignore_errors=True)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL as the admin login (for checking what the API stored)."""
        with psycopg.connect(self.report.logins.admin.dsn, autocommit=True) as conn:
            conn.execute("SET search_path TO pgstac, public")
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []


def make_database(prefix: str) -> Database:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and as root the server runs
    # as another OS user that must reach its data dir.
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    settings = DatabaseSettings(data_dir=base / "db", port=free_port(), dsn=None)
    report = bring_up(settings)
    return Database(settings, report, EmbeddedCluster(settings))


@contextmanager
def own_database(prefix: str) -> Iterator[Database]:
    """A cluster of a test module's own (a crowd of others' data would get in its way)."""
    db = make_database(prefix)
    try:
        yield db
    finally:
        db.destroy()


def admin_token(db: Database) -> str:
    assert db.report.admin_key is not None
    return db.report.admin_key.read_text().strip()


def auth_headers() -> dict[str, str]:
    """The admin key of the test database, for raw HTTP writes."""
    return {"Authorization": f"Bearer {os.environ['TILEKEEPER_API_KEY']}"}


def products_settings(db: Database) -> ProductSettings:
    """The test database's local product store (beside its cluster)."""
    return ProductSettings(store=str(db.settings.data_dir.parent / "products"))


def start_api(db: Database, auth: AuthSettings | None = None, **overrides: Any) -> ServerThread:
    settings = ApiSettings(port=free_port(), **overrides)
    server = ServerThread(
        settings,
        logins=db.report.logins,
        products=products_settings(db),
        auth=auth,
        db_settings=db.settings,
    )
    return server.start()


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    from catalog_service.client.http import HttpSession

    HttpSession(url).wait_ready(timeout_s)
