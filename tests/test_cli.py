"""The `tilekeeper` command against the test cluster (same settings, via environment)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser
from support.browser import check_pages
from support.database import Database
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


@pytest.mark.slow
def test_demo_runs_to_the_end_resumes_and_goes_down(
    env: Database, browser: Browser, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's main command, small: services up, a 4-tile campaign over two local
    back-ends with one failure retried, a summary and URLs, and its pages render in
    Chromium without the internet; a re-run does nothing new;
    --down stops what it started (not the database it did not start)."""
    from catalog_service.api.server import free_port

    # The demo keeps its state beside the cluster; use a private copy of the settings.
    monkeypatch.setenv("TILEKEEPER_DB_DATA_DIR", str(env.settings.data_dir))
    # Its clients find the admin key `db up` keeps beside the cluster by themselves.
    monkeypatch.delenv("TILEKEEPER_API_KEY")
    api_port = free_port()
    monkeypatch.setenv("TILEKEEPER_API_PORT", str(api_port))
    ports = f"{free_port()},{free_port()}"
    args = ["demo", "--small", "--min-runtime", "0", "--backend-ports", ports]
    try:
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        assert "created with 4 tiles" in first.output
        assert "auth config" in first.output
        assert "progress 4/4" in first.output
        assert f"http://127.0.0.1:{api_port}/campaigns/demo-ndvi-2024-small" in first.output
        assert "/campaigns/demo-ndvi-2024-small/map" in first.output
        key_file = env.settings.data_dir / "admin-key"
        assert f"Admin API key:   {key_file}" in first.output
        assert key_file.stat().st_mode & 0o777 == 0o600
        check_pages(browser, f"http://127.0.0.1:{api_port}", "demo-ndvi-2024-small", 4)
        finished = env.sql(
            "SELECT count(*) FROM pgstac.items WHERE collection = %s "
            "AND content->'properties'->>'status' = 'finished'",
            "demo-ndvi-2024-small",
        )
        assert finished == [(4,)]
        # The tile set to fail once was retried by the runner itself.
        attempts = env.sql(
            "SELECT (content->'properties'->>'attempts')::int, count(*) FROM pgstac.items "
            "WHERE collection = %s GROUP BY 1 ORDER BY 1",
            "demo-ndvi-2024-small",
        )
        assert attempts == [(1, 3), (2, 1)]
        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        assert "already up" in again.output and "resumed (0 new tiles)" in again.output
    finally:
        down = runner.invoke(app, ["demo", "--down", "--backend-ports", ports])
    assert down.exit_code == 0, down.output
    assert "API (pid" in down.output and "back-end alpha" in down.output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{api_port}/_mgmt/ping", timeout=2)
    # The test cluster was already up, so the demo left it running.
    assert env.sql("SELECT 1") == [(1,)]


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
            "--backend-auth",
            "a=basic",
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
    assert shown["backends"] == [
        {"name": "a", "url": "https://a.test", "parallel_jobs": 4, "auth": "basic"}
    ]
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
