"""The embedded cluster: the code behind `tilekeeper db up | down | status | url`."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from support.database import Database, make_database

from catalog_service.database import bring_up, resolve_logins
from catalog_service.database.cluster import EmbeddedCluster
from catalog_service.database.connection import READER_ROLE, WRITER_ROLE
from catalog_service.errors import ConfigurationError, DatabaseSetupError
from catalog_service.settings import DatabaseSettings


def test_second_up_changes_nothing(database: Database) -> None:
    again = bring_up(database.settings)
    assert not again.changed
    assert again.schema.pgstac_version == "0.10.0"


def test_pgstac_installed_with_jit_off(database: Database) -> None:
    assert database.sql("SELECT pgstac.get_version()")[0][0] == "0.10.0"
    with psycopg.connect(database.report.logins.writer.dsn) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)


def test_reader_and_writer_roles(database: Database) -> None:
    membership = dict(
        database.sql(
            "SELECT r.rolname, g.rolname FROM pg_auth_members m "
            "JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid "
            "WHERE r.rolname IN (%s, %s)",
            WRITER_ROLE,
            READER_ROLE,
        )
    )
    assert membership == {WRITER_ROLE: "pgstac_ingest", READER_ROLE: "pgstac_read"}
    with (
        psycopg.connect(database.report.logins.reader.dsn) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("INSERT INTO pgstac.collections (content) VALUES ('{}')")


def test_server_runs_as_non_root_and_listens_on_loopback(database: Database) -> None:
    status = EmbeddedCluster(database.settings).status()
    assert status.running and status.pid
    owner = os.stat(f"/proc/{status.pid}").st_uid
    if os.geteuid() == 0:
        assert owner != 0
    assert database.sql("SHOW listen_addresses")[0][0] == "127.0.0.1"
    assert int(database.sql("SHOW port")[0][0]) == database.settings.port


def test_job_queryables_registered_with_index(database: Database) -> None:
    rows = dict(
        database.sql(
            "SELECT name, property_index_type FROM pgstac.queryables "
            "WHERE name IN ('status', 'backend_name', 'grid:code')"
        )
    )
    assert rows == {"status": "BTREE", "backend_name": "BTREE", "grid:code": "BTREE"}


def test_stale_pid_file_and_restart() -> None:
    db = make_database("tilekeeper-stale-")
    try:
        cluster = db.cluster
        assert cluster.stop()
        assert not cluster.status().running
        # A pid file naming a live process that is not PostgreSQL (this test runner),
        # as after a reboot: PostgreSQL itself would refuse to start.
        (cluster.pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n")
        report = bring_up(db.settings)
        assert report.started and not report.created
        assert cluster.status().running
        assert bring_up(db.settings).changed is False
    finally:
        db.destroy()


def test_unreachable_data_dir_is_explained(tmp_path_factory: pytest.TempPathFactory) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another OS user")
    hidden = tmp_path_factory.mktemp("hidden")  # under /tmp/pytest-of-root, mode 0700
    settings = DatabaseSettings(data_dir=hidden / "db", port=1)
    with pytest.raises(DatabaseSetupError, match="cannot reach"):
        EmbeddedCluster(settings).init()


def test_external_settings_skip_the_embedded_cluster(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> None:
    unused_dir = tmp_path_factory.mktemp("unused") / "never-created"
    settings = DatabaseSettings(dsn=database.report.logins.admin.dsn, data_dir=unused_dir)
    assert settings.external
    report = bring_up(settings)
    assert report.external and not report.created and not report.started
    assert not unused_dir.exists()
    assert resolve_logins(settings).writer == database.report.logins.admin


def test_external_db_up_creates_the_service_logins_from_secrets(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Deployed against an external PostgreSQL (compose), `db up` runs as the superuser
    and makes the writer and reader logins the API then connects as."""
    from catalog_service.database.connection import Credentials, credentials_path

    admin = database.report.logins.admin
    settings = DatabaseSettings(
        dsn=admin.dsn,
        data_dir=tmp_path_factory.mktemp("unused") / "db",
        writer_password="w-" + uuid.uuid4().hex,
        reader_password="r-" + uuid.uuid4().hex,
    )
    kept = Credentials.load(credentials_path(database.settings))
    try:
        bring_up(settings)
        for role, password in (
            ("writer", settings.writer_password),
            ("reader", settings.reader_password),
        ):
            assert password is not None
            login = admin.with_user(f"tilekeeper_{role}", password.get_secret_value())
            with psycopg.connect(login.dsn) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (f"tilekeeper_{role}",)
    finally:  # the other tests' logins, as they were
        from catalog_service.database.schema import ensure_login_roles

        ensure_login_roles(admin, kept)


def test_missing_embedded_database_says_what_to_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = DatabaseSettings(data_dir=tmp_path_factory.mktemp("empty") / "db", dsn=None)
    with pytest.raises(ConfigurationError, match="tilekeeper db up"):
        resolve_logins(settings)
