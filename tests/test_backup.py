"""`tilekeeper db backup` and `db restore` on real clusters: a catalogue with a campaign, its
tiles, job history, a worker, a product and an API key comes back exactly as it was backed
up, the service serves it, and bad archives or a missing --yes change nothing."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from support.campaigns import create_campaign, grid_tiles, register_tiles
from support.database import Database, admin_token, make_database, own_database, start_api
from support.stac import make_collection, make_item
from typer.testing import CliRunner

from catalog_service.api.server import ServerThread, free_port
from catalog_service.auth.keys import create_key
from catalog_service.cli.main import app
from catalog_service.client.http import HttpSession
from catalog_service.database import EmbeddedCluster, bring_up
from catalog_service.database.backup import backup_database, existing_campaigns, restore_database
from catalog_service.database.schema import MIGRATIONS
from catalog_service.errors import DatabaseSetupError
from catalog_service.settings import DatabaseSettings

# Every table of the catalogue a restore must bring back, by content.
CATALOGUE = {
    "collections": "SELECT id, content FROM pgstac.collections ORDER BY id",
    "items": "SELECT collection, id, content, geometry::text, datetime, end_datetime "
    "FROM pgstac.items ORDER BY collection, id",
    "job_history": "SELECT * FROM tilekeeper.job_history ORDER BY seq",
    "status_counts": "SELECT * FROM tilekeeper.status_counts ORDER BY collection, status",
    "workers": "SELECT * FROM tilekeeper.workers ORDER BY collection, worker",
    "api_keys": "SELECT * FROM tilekeeper.api_keys ORDER BY id",
    "queryables": "SELECT name, collection_ids, definition, property_wrapper "
    "FROM pgstac.queryables ORDER BY name, collection_ids",
}


def catalogue(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {name: db.sql(query) for name, query in CATALOGUE.items()}


def cli(db: Database, *args: str) -> Any:
    env = {
        "COLUMNS": "1000",
        "TILEKEEPER_DB_DATA_DIR": str(db.settings.data_dir),
        "TILEKEEPER_DB_PORT": str(db.settings.port),
    }
    return CliRunner().invoke(app, ["db", *args], env=env)


def client(server: ServerThread, db: Database) -> httpx.Client:
    headers = {"Authorization": f"Bearer {admin_token(db)}"}
    return httpx.Client(base_url=server.url, timeout=60, headers=headers)


def change(http: httpx.Client, campaign: str, tiles: list[str], status: str) -> None:
    body = {"actor": "test", "changes": [{"tile": t, "status": status} for t in tiles]}
    answer = http.post(f"/campaigns/{campaign}/jobs/changes", json=body)
    assert answer.status_code == 200, answer.text


def fill(http: httpx.Client, db: Database) -> str:
    """A campaign with tiles, history, a worker and a product; an extra API key."""
    campaign = create_campaign(http, prefix="backup")
    tiles = [t["id"] for t in register_tiles(http, campaign, grid_tiles())]
    change(http, campaign, tiles[:6], "queued_for_start")
    change(http, campaign, tiles[:3], "running")
    assert http.put(f"/campaigns/{campaign}/workers/w1", json={"lease_s": 3600}).is_success
    products = f"{campaign}-products"
    assert http.post("/collections", json=make_collection(products)).status_code == 201
    write = {"writes": [{"items": [make_item("P1", products)]}]}
    assert http.post(f"/collections/{products}/products", json=write).status_code == 200
    with psycopg.connect(db.report.logins.admin.dsn, autocommit=True) as conn:
        create_key(conn, "harvester", ["products:write"], None)
    return campaign


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, ServerThread]]:
    with own_database("tilekeeper-backup-") as db:
        server = start_api(db)
        HttpSession(server.url, api_key=admin_token(db)).wait_ready(120)
        try:
            yield db, server
        finally:
            server.stop()


def test_round_trip_brings_back_every_row_and_the_service_serves_it(
    world: tuple[Database, ServerThread], tmp_path: Path
) -> None:
    db, server = world
    with client(server, db) as http:
        campaign = fill(http, db)
        before = catalogue(db)
        made = cli(db, "backup", str(tmp_path / "catalogue.dump"))
        assert made.exit_code == 0, made.output
        assert "Backed up 1 campaigns" in made.output
        assert (tmp_path / "catalogue.dump").stat().st_mode & 0o777 == 0o600
        print(f"\n{made.output.strip()}")
        # Destroyed and changed after the backup: all of it must go back.
        assert http.delete(f"/campaigns/{campaign}?products=true").is_success
        create_campaign(http, prefix="after")
        db.sql("UPDATE tilekeeper.api_keys SET revoked = now() WHERE name = 'harvester'")
        assert catalogue(db) != before

        restored = cli(db, "restore", "--yes", str(tmp_path / "catalogue.dump"))
        assert restored.exit_code == 0, restored.output
        print(restored.output.strip())
        assert catalogue(db) == before

        # `db up` has nothing left to do, the migrations are all recorded, and the writer
        # and reader logins of credentials.json still have their rights.
        assert not bring_up(db.settings).changed
        assert db.sql("SELECT max(version) FROM tilekeeper.migrations") == [(len(MIGRATIONS),)]
        logins = db.report.logins
        with psycopg.connect(logins.reader.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM tilekeeper.job_history").fetchone()
        with psycopg.connect(logins.writer.dsn) as conn:
            conn.execute("UPDATE tilekeeper.workers SET info = '{}'::jsonb WHERE false")

        # The running service and a new one serve the restored campaign, and it goes on.
        fresh = start_api(db)
        try:
            for url in (server.url, fresh.url):
                items = http.get(f"{url}/collections/{campaign}/items", params={"limit": 100})
                assert items.status_code == 200, items.text
                tiles = sum(1 for row in before["items"] if row[1] and row[0] == campaign)
                assert len(items.json()["features"]) == tiles
                counts = http.get(f"{url}/campaigns/{campaign}/counts")
                assert counts.status_code == 200, counts.text
        finally:
            fresh.stop()
        running = db.sql(
            "SELECT id FROM pgstac.items WHERE content->'properties'->>'status' = 'running'"
        )
        change(http, campaign, [str(running[0][0])], "finished")
        assert len(db.sql("SELECT 1 FROM tilekeeper.job_history")) == len(before["job_history"]) + 1


def test_restore_without_yes_over_campaigns_is_refused(
    world: tuple[Database, ServerThread], tmp_path: Path
) -> None:
    db, server = world
    with client(server, db) as http:
        create_campaign(http, prefix="kept")
    assert backup_database(db.settings, tmp_path / "b.dump").counts.campaigns >= 1
    before = catalogue(db)
    refused = cli(db, "restore", str(tmp_path / "b.dump"))
    assert refused.exit_code == 1
    assert "campaigns" in refused.output and "--yes" in refused.output, refused.output
    assert existing_campaigns(db.settings)[0] in refused.output
    assert catalogue(db) == before


def damaged(archive: Path, bin_dir: Path, out: Path) -> Path:
    """A copy of ``archive`` whose table of contents and version rows read but whose data
    does not: 64 bytes overwritten, moving back from the end until that is so."""
    import subprocess

    data = archive.read_bytes()
    restore = str(bin_dir / "pg_restore")
    for at in range(len(data) - 200, len(data) // 2, -256):
        out.write_bytes(data[:at] + b"\xff" * 64 + data[at + 64 :])
        reads = [[restore, "-l"], [restore, "-a", "-t", "migrations", "-f", "/dev/null"]]
        if all(subprocess.run([*c, str(out)], capture_output=True).returncode == 0 for c in reads):
            whole = [restore, "--section=data", "-f", "/dev/null", str(out)]
            if subprocess.run(whole, capture_output=True).returncode != 0:
                return out
    raise AssertionError("no damage found that only the data shows")


def test_bad_archives_change_nothing(world: tuple[Database, ServerThread], tmp_path: Path) -> None:
    db, server = world
    with client(server, db) as http:
        create_campaign(http, prefix="untouched")
    good = backup_database(db.settings, tmp_path / "good.dump").path
    before = catalogue(db)
    garbage = tmp_path / "garbage.dump"
    garbage.write_bytes(b"PGDMP" + bytes(range(256)) * 40)
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    bad = [garbage, truncated, damaged(good, db.cluster.bin, tmp_path / "damaged.dump")]
    for archive in bad:
        with pytest.raises(DatabaseSetupError, match=r"changed|rolled back") as raised:
            restore_database(db.settings, archive)
        print(f"\n{archive.name}: {raised.value}")
        assert catalogue(db) == before
    answer = cli(db, "restore", "--yes", str(garbage))
    assert answer.exit_code == 1
    assert "not a readable backup" in answer.output and "Nothing was changed" in answer.output
    with client(server, db) as http:
        assert http.get("/campaigns").status_code == 200


def test_restore_into_another_cluster_as_an_external_database(
    world: tuple[Database, ServerThread], tmp_path: Path
) -> None:
    """A backup moves to another PostgreSQL reached by TILEKEEPER_DB_DSN (a managed one,
    say), whose admin login has another name than the source's owner of tilekeeper's
    tables."""
    db, _ = world
    # One table of the source belongs to a role the other cluster does not have.
    db.sql("CREATE ROLE ghost")
    db.sql("ALTER TABLE tilekeeper.workers OWNER TO ghost")
    archive = backup_database(db.settings, tmp_path / "move.dump").path
    db.sql("ALTER TABLE tilekeeper.workers OWNER TO tilekeeper_admin")
    before = catalogue(db)
    other = make_database("tilekeeper-backup-other-")
    try:
        other.sql("CREATE ROLE operator LOGIN SUPERUSER PASSWORD 'op'")
        admin = other.report.logins.admin.with_user("operator", "op")
        external = DatabaseSettings(dsn=admin.dsn, data_dir=tmp_path / "unused")
        report = restore_database(external, archive)
        print(f"\nrestored elsewhere: {report}")
        assert catalogue(other) == before
        owner = "SELECT tableowner FROM pg_tables WHERE tablename = 'workers'"
        assert other.sql(owner) == [("operator",)]
        server = start_api(other)
        try:
            HttpSession(server.url, api_key=admin_token(db)).wait_ready(120)
            campaigns = httpx.get(f"{server.url}/campaigns", timeout=30).json()["campaigns"]
            assert {c["id"] for c in campaigns} == set(existing_campaigns(db.settings))
        finally:
            server.stop()
    finally:
        other.destroy()
        shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def test_restore_on_a_new_machine_makes_the_cluster(
    world: tuple[Database, ServerThread], tmp_path: Path
) -> None:
    """Disaster recovery: nothing but the backup, `db restore` makes the embedded cluster,
    and `db up` has nothing left to do."""
    db, _ = world
    archive = backup_database(db.settings, tmp_path / "dr.dump").path
    before = catalogue(db)
    base = Path(tempfile.mkdtemp(prefix="tilekeeper-backup-new-", dir="/tmp"))
    base.chmod(0o755)
    settings = DatabaseSettings(data_dir=base / "db", port=free_port(), dsn=None)
    try:
        assert existing_campaigns(settings) == []
        report = restore_database(settings, archive)
        assert report.admin_key == settings.data_dir / "admin-key"  # a new machine's key
        print(f"\nrestored on a new machine in {report.seconds:.1f} s")
        up = bring_up(settings)
        assert not up.changed
        new = Database(settings, up, EmbeddedCluster(settings))
        after = catalogue(new)
        assert len(after["api_keys"]) == len(before["api_keys"]) + 1
        assert {k: v for k, v in after.items() if k != "api_keys"} == {
            k: v for k, v in before.items() if k != "api_keys"
        }
    finally:
        EmbeddedCluster(settings).destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_backup_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    answer = CliRunner().invoke(
        app,
        ["db", "backup", str(tmp_path / "x.dump")],
        env={"COLUMNS": "1000", "TILEKEEPER_DB_DATA_DIR": str(tmp_path / "none")},
    )
    assert answer.exit_code == 1
    assert "tilekeeper db up" in answer.output
    assert not (tmp_path / "x.dump").exists()


# Found by an outside tester: an archive with the catalogue's two schemas and their
# migration rows, but no catalogue, and a table in public.
CRAFTED_SQL = """
CREATE SCHEMA pgstac; CREATE SCHEMA tilekeeper;
CREATE TABLE pgstac.migrations (version text, datetime timestamptz DEFAULT now());
INSERT INTO pgstac.migrations VALUES ('0.10.0');
CREATE TABLE tilekeeper.migrations (version int);
INSERT INTO tilekeeper.migrations VALUES (1);
CREATE TABLE public.planted (x int); INSERT INTO public.planted VALUES (42);
"""


def test_a_crafted_archive_changes_nothing_and_a_good_one_still_restores() -> None:
    db = make_database("tilekeeper-crafted-")
    try:
        admin = db.report.logins.admin.dsn
        out = db.settings.data_dir.parent
        good = out / "good.dump"
        backup_database(db.settings, good)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE crafted")
        crafted_dsn = psycopg.conninfo.make_conninfo(admin, dbname="crafted")
        with psycopg.connect(crafted_dsn, autocommit=True) as conn:
            conn.execute(CRAFTED_SQL)
        crafted = out / "crafted.dump"
        pg_dump = EmbeddedCluster(db.settings).bin / "pg_dump"
        subprocess.run([str(pg_dump), "-Fc", "-f", str(crafted), "-d", crafted_dsn], check=True)
        before = catalogue(db)
        with pytest.raises(DatabaseSetupError, match=r"not a tilekeeper backup|not a whole"):
            restore_database(db.settings, crafted)
        assert db.sql("SELECT to_regclass('public.planted')") == [(None,)]
        assert catalogue(db) == before
        restore_database(db.settings, good)
        assert catalogue(db) == before
    finally:
        db.destroy()
