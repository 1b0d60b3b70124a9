"""The `tilekeeper` command against the test cluster (same settings, via environment)."""

from __future__ import annotations

import json

import psycopg
import pytest
from conftest import Database
from typer.testing import CliRunner

from catalog_service.cli.main import app

runner = CliRunner()


@pytest.fixture()
def env(database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setenv("TILEKEEPER_DB_DATA_DIR", str(database.settings.data_dir))
    monkeypatch.setenv("TILEKEEPER_DB_PORT", str(database.settings.port))
    monkeypatch.delenv("TILEKEEPER_DB_DSN", raising=False)
    return database


def test_db_up_twice_says_already_up(env: Database) -> None:
    result = runner.invoke(app, ["db", "up"])
    assert result.exit_code == 0, result.output
    assert "already up" in result.output


def test_db_status_json(env: Database) -> None:
    result = runner.invoke(app, ["db", "status", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["mode"] == "embedded" and info["running"] is True
    assert info["port"] == env.settings.port


@pytest.mark.parametrize("role", ["writer", "reader", "admin"])
def test_db_url_connects(env: Database, role: str) -> None:
    result = runner.invoke(app, ["db", "url", "--role", role])
    assert result.exit_code == 0, result.output
    with psycopg.connect(result.output.strip()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (f"tilekeeper_{role}",)


def test_errors_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("TILEKEEPER_DB_DATA_DIR", str(tmp_path_factory.mktemp("nothing") / "db"))
    monkeypatch.delenv("TILEKEEPER_DB_DSN", raising=False)
    result = runner.invoke(app, ["db", "url"])
    assert result.exit_code == 1
    assert "tilekeeper db up" in result.output
    assert "Traceback" not in result.output


def test_demo_loads_the_sample_and_counts_it(
    env: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catalog_service.api.server import free_port
    from catalog_service.sample import SAMPLE_COLLECTION_ID, sample_items

    monkeypatch.setenv("TILEKEEPER_API_PORT", str(free_port()))
    result = runner.invoke(app, ["demo", "--exit"])
    assert result.exit_code == 0, result.output
    stored = dict(
        env.sql(
            "SELECT content->'properties'->>'status', count(*) FROM pgstac.items "
            "WHERE collection = %s GROUP BY 1",
            SAMPLE_COLLECTION_ID,
        )
    )
    assert sum(stored.values()) == len(sample_items()) == 25
    for status, count in stored.items():
        assert f"│ {status}" in result.output and f"{count} │" in result.output
    # Running it again resumes nothing and duplicates nothing.
    assert runner.invoke(app, ["demo", "--exit"]).exit_code == 0
    assert env.sql(
        "SELECT count(*) FROM pgstac.items WHERE collection = %s", SAMPLE_COLLECTION_ID
    ) == [(25,)]
