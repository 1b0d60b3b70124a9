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


def test_campaign_commands_mirror_the_python_api(
    api: str, tmp_path: pytest.TempPathFactory
) -> None:
    import uuid

    campaign = f"cli-{uuid.uuid4().hex[:8]}"
    created = runner.invoke(
        app,
        [
            "campaign",
            "create",
            campaign,
            "--api",
            api,
            "--aoi",
            "4.0,50.5,4.6,50.9",
            "--start",
            "2024-01-01",
            "--end",
            "2024-06-30",
            "--backend",
            "a=https://a.test@4",
            "--process-id",
            "ndvi",
            "--param",
            'bands=["B04"]',
            "--job-option",
            "driver-memory=2g",
        ],
    )
    assert created.exit_code == 0, created.output
    assert "tiles registered" in created.output
    shown = json.loads(runner.invoke(app, ["campaign", "show", campaign, "--api", api]).output)
    assert shown["backends"] == [{"name": "a", "url": "https://a.test", "parallel_jobs": 4}]
    assert shown["process"]["parameters"] == {"bands": ["B04"]}
    summary = json.loads(
        runner.invoke(app, ["campaign", "status", campaign, "--json", "--api", api]).output
    )
    assert summary["by_status"] == {"not_started": summary["tiles"]} and summary["tiles"] > 4
    again = runner.invoke(
        app, ["campaign", "register", campaign, "--api", api, "--aoi", "4.0,50.5,4.9,50.9"]
    )
    assert again.exit_code == 0 and "already registered" in again.output
    assert runner.invoke(app, ["campaign", "status", campaign, "--api", api]).exit_code == 0
    retried = runner.invoke(app, ["campaign", "retry", campaign, "--api", api, "--status", "error"])
    assert retried.exit_code == 0 and "0 tiles reset" in retried.output
    bad = runner.invoke(
        app,
        [
            "campaign",
            "create",
            "x",
            "--api",
            api,
            "--aoi",
            "nowhere.gpkg",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
        ],
    )
    assert bad.exit_code == 1 and "neither a file nor a bbox" in bad.output
    missing = runner.invoke(app, ["campaign", "status", "nope", "--api", api])
    assert missing.exit_code == 1 and "404" in missing.output
