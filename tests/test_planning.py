"""Planning on two local openEO back-ends (real processes) whose jobs last at least a known
time (``--min-runtime``): a pilot of 8 tiles projects the demo campaign's duration, which
the rest of the run then measures; a budget stops the runner from starting jobs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.servers import local_backends
from typer.testing import CliRunner

from catalog_service.api.server import free_port
from catalog_service.campaign_run import run_campaign
from catalog_service.cli.main import app
from catalog_service.client import Catalog
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.demo.backends import load_sample
from catalog_service.demo.scenario import (
    DEMO_AREA,
    TEST_AREA,
    campaign_definition,
    ensure_campaign,
    install_udp,
    store_login,
)
from catalog_service.errors import TilekeeperError
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.planning.pilot import choose_pilot
from catalog_service.planning.sample import Candidate, stratified

pytestmark = pytest.mark.slow
runner = CliRunner()
MIN_RUNTIME_S = 12.0


@pytest.fixture(scope="module")
def slow_backends(api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("planning")
    load_sample(Catalog(api), DEMO_AREA.sample(), base / "sample")
    knobs = {"max_running": 2, "min_runtime_s": MIN_RUNTIME_S}
    with local_backends(api, base, ["alpha", "beta"], **knobs) as started:
        urls = {b.name: b.url for b in started}
        store_login(list(urls.values()))
        install_udp(list(urls.values()))
        yield urls


def _campaign(api: str, urls: dict[str, str], area: Any, parallel: int, **extra: Any) -> str:
    campaign = f"plan-{uuid.uuid4().hex[:6]}"
    definition = campaign_definition(campaign, area, list(urls.items()), parallel_jobs=parallel)
    definition.update(extra)
    ensure_campaign(Campaigns(HttpSession(api)), definition, area.tiles())
    return campaign


def test_a_stratified_sample_covers_the_area_and_the_attribute() -> None:
    grid = [Candidate(f"t{x}-{y}", x, y, attribute=(x + 4 * y) % 16) for x in range(8) for y in range(8)]  # fmt: skip
    chosen = stratified(grid, 8)
    assert len(set(chosen)) == 8
    xs = {int(t[1:].split("-")[0]) for t in chosen}
    ys = {int(t.split("-")[1]) for t in chosen}
    assert len(xs) >= 2 and len(ys) >= 4  # spread, not one corner
    quadrants = {(int(t[1:].split("-")[0]) >= 4, int(t.split("-")[1]) >= 4) for t in chosen}
    assert len(quadrants) == 4
    by_value = stratified(grid, 8, by_attribute=True)
    values = sorted(c.attribute for c in grid if c.tile in by_value)
    assert values[0] <= 1 and values[-1] >= 14  # the attribute's whole range
    assert stratified(grid, 8) == chosen  # the same tiles every time


def test_a_pilot_by_attribute_spans_its_values_is_stored_and_resumes(api: str) -> None:
    campaigns = Campaigns(HttpSession(api))
    campaign = f"pilot-{uuid.uuid4().hex[:6]}"
    campaigns.create({"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-01-01", "2024-12-31"]})  # fmt: skip
    records = list(tile_records(tiles_for("utm-20km", load_aoi("4.0,50.4,5.0,51.0"))))
    for n, record in enumerate(records):
        record["properties"]["zone"] = n % 5
    campaigns.register(campaign, records)
    with pytest.raises(TilekeeperError, match=r"no tile of \S+ has the attribute 'crop'"):
        choose_pilot(campaigns, campaign, 5, "crop")
    chosen = choose_pilot(campaigns, campaign, 5, "zone")
    zones = {j["properties"]["zone"] for j in campaigns.jobs_by_tile(campaign, chosen)}
    assert len(chosen) == 5 and zones == {0, 1, 2, 3, 4}
    assert campaigns.definition(campaign).pilot_tiles == chosen
    # While a pilot tile is not done, asking again resumes the same pilot.
    assert choose_pilot(campaigns, campaign, 8) == chosen


def test_a_pilot_projects_the_demo_campaign_within_30_percent(
    api: str, slow_backends: dict[str, str]
) -> None:
    campaigns = Campaigns(HttpSession(api))
    campaign = _campaign(api, slow_backends, DEMO_AREA, parallel=2)
    began = time.monotonic()
    piloted = runner.invoke(
        app, ["campaign", "pilot", campaign, "--tiles", "8", "--poll-sleep", "1", "--api", api]
    )
    pilot_wall = time.monotonic() - began
    assert piloted.exit_code == 0, piloted.output
    assert "Pilot of 8 tiles" in piloted.output and "plan from 8 pilot tile(s)" in piloted.output
    summary = campaigns.summary(campaign)
    assert summary["by_status"] == {"finished": 8, "not_started": 8}
    pilot = set(campaigns.definition(campaign).pilot_tiles)
    assert {j["tile"] for j in campaigns.jobs_by_status(campaign, ["finished"])} == pilot

    planned = runner.invoke(app, ["campaign", "plan", campaign, "--json", "--api", api])
    assert planned.exit_code == 0, planned.output
    import json

    plan = json.loads(planned.output)
    assert plan["source"] == "pilot" and plan["sample"] == 8 and plan["parallel"] == 4
    runtime = plan["runtime_s"]
    # The time the jobs ran, as the back-end reports it: at least --min-runtime.
    assert plan["runtime_from"] == "back-end usage"
    assert MIN_RUNTIME_S <= runtime["low"] <= runtime["mean"] <= runtime["high"] < 3 * MIN_RUNTIME_S  # fmt: skip
    assert plan["credits"]["mean"] == pytest.approx(16 * plan["costs"]["mean"])
    assert plan["memory"]["peak_gb"] > 0

    began = time.monotonic()
    run_campaign(api, campaign, poll_sleep=1)
    rest_wall = time.monotonic() - began
    assert campaigns.summary(campaign)["by_status"] == {"finished": 16}
    measured = pilot_wall + rest_wall
    projected = plan["duration_s"]["mean"]
    assert abs(projected - measured) <= 0.3 * measured, (projected, pilot_wall, rest_wall)
    left = plan["duration_left_s"]["mean"]
    assert abs(left - rest_wall) <= 0.3 * rest_wall, (left, rest_wall)


def test_a_budget_stops_new_jobs_and_says_so(
    api: str,
    slow_backends: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from support.servers import Receiver

    monkeypatch.setenv("TILEKEEPER_OUTBOX_DIR", str(tmp_path / "outbox"))
    receiver = Receiver(free_port())
    receiver.start()
    campaigns = Campaigns(HttpSession(api))
    # A budget any job exceeds: the first jobs start (no cost is known yet), no more.
    campaign = _campaign(
        api,
        slow_backends,
        TEST_AREA,
        parallel=1,
        budget=0.0001,
        notify={"webhooks": [receiver.url]},
    )
    with caplog.at_level("INFO", logger="catalog_service.runner"):
        report = run_campaign(api, campaign, poll_sleep=1, root_dir=tmp_path)
    assert report.stopped_by_budget
    assert "budget reached" in caplog.text and "no new job starts" in caplog.text
    summary = campaigns.summary(campaign)
    assert summary["by_status"] == {"finished": 2, "not_started": 2}
    figures = summary["budget"]
    assert figures["reached"] and figures["spent"] > figures["credits"]
    status = runner.invoke(app, ["campaign", "status", campaign, "--api", api])
    assert "reached: no new job starts" in status.output
    # The webhook was told, once.
    receiver.wait_for(1)
    assert [e["type"] for e in receiver.received] == ["campaign.budget_reached"]
    assert receiver.received[0]["campaign"] == campaign
    receiver.stop()

    # Room for one more job at the mean cost: exactly one starts.
    mean = summary["finished"]["mean_costs"]
    raised = runner.invoke(
        app, ["campaign", "budget", campaign, str(figures["spent"] + 1.2 * mean), "--api", api]
    )
    assert raised.exit_code == 0, raised.output
    report = run_campaign(api, campaign, poll_sleep=1, root_dir=tmp_path)
    assert report.stopped_by_budget
    assert campaigns.summary(campaign)["by_status"] == {"finished": 3, "not_started": 1}


def test_a_backend_without_the_collection_gets_no_tiles_and_pins_hold(
    api: str,
    slow_backends: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    from catalog_service.client.campaigns import tile_records
    from catalog_service.demo.scenario import connect

    with local_backends(api, tmp_path, ["gamma"], collections=["SOMETHING_ELSE"]) as [gamma]:
        store_login([gamma.url])
        install_udp([gamma.url])
        campaigns = Campaigns(HttpSession(api))
        campaign = f"fit-{uuid.uuid4().hex[:6]}"
        urls = [("gamma", gamma.url), *slow_backends.items()]
        campaigns.create(campaign_definition(campaign, TEST_AREA, urls, parallel_jobs=2))
        records = list(tile_records(TEST_AREA.tiles()))
        records[0]["properties"]["only_backends"] = "beta"
        records[1]["properties"]["exclude_backends"] = ["alpha", "gamma"]
        campaigns.register(campaign, records)
        with caplog.at_level("INFO", logger="catalog_service.runner"):
            run_campaign(api, campaign, poll_sleep=1, root_dir=tmp_path)
        assert (
            "back-end gamma gets no tiles: it lacks the input collection(s) "
            "SENTINEL2_L2A_SYNTHETIC" in caplog.text
        )
        jobs = {j["tile"]: j["properties"] for j in campaigns.jobs_by_status(campaign, ["finished"])}  # fmt: skip
        assert len(jobs) == 4
        assert {p["backend_name"] for p in jobs.values()} <= {"alpha", "beta"}
        assert jobs[records[0]["id"]]["backend_name"] == "beta"
        assert jobs[records[1]["id"]]["backend_name"] == "beta"
        assert connect(gamma.url).list_jobs() == []
