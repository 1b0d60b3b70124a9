"""The demo's chain end to end, over HTTP: two local openEO back-ends (real processes,
openeo-processes-dask) compute a 4-tile campaign from the synthetic Sentinel-2 sample
in the catalogue; one tile fails once and is retried. Afterwards the catalogue equals
what the back-ends report, and every result is a valid COG on its tile's exact grid."""

from __future__ import annotations

import hashlib
import http.server
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import rasterio
import requests
from openeo.rest import OpenEoApiError
from rio_cogeo.cogeo import cog_validate
from support.servers import local_backends

from catalog_service.client import Catalog
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.demo.backends import load_sample
from catalog_service.demo.scenario import (
    TEST_AREA,
    campaign_definition,
    connect,
    ensure_campaign,
    install_udp,
    run_with_progress,
    store_login,
)
from ingest.validate import validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backends(api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("openeo")
    collection, items = load_sample(Catalog(api), TEST_AREA.sample(), base / "sample")
    assert collection == "SENTINEL2_L2A_SYNTHETIC"
    assert items == 3
    tiles = TEST_AREA.tiles()
    failing = str(tiles.ids[1])
    knobs = {"fail_tiles": [failing], "fail_state_dir": base / "failed-once"}
    with local_backends(api, base, ["alpha", "beta"], **knobs) as started:
        yield {"backends": started, "failing": failing, "tiles": tiles, "base": base}


def test_campaign_over_two_local_backends(
    api: str, backends: dict[str, Any], tmp_path: Path
) -> None:
    http = HttpSession(api)
    campaigns = Campaigns(http)
    urls = {b.name: b.url for b in backends["backends"]}
    store_login(list(urls.values()))
    install_udp(list(urls.values()))
    campaign = f"demo-{uuid.uuid4().hex[:6]}"
    definition = campaign_definition(campaign, TEST_AREA, list(urls.items()), parallel_jobs=1)
    created, new = ensure_campaign(campaigns, definition, backends["tiles"])
    assert created and new == 4

    seen: list[dict[str, Any]] = []
    run_with_progress(api, campaigns, campaign, seen.append, root_dir=tmp_path, poll_sleep=1)
    assert seen and seen[-1]["done"] == 4
    # The failed tile was retried by the runner (the campaign's max_attempts), and its
    # first attempt's error is kept on it.
    jobs = campaigns.jobs_by_status(campaign, ["finished"])
    assert len(jobs) == 4
    finished = campaigns.summary(campaign)["finished"]
    # Numbers, not strings (PostgreSQL's numeric would arrive as a string).
    assert isinstance(finished["mean_runtime_s"], float) and finished["mean_runtime_s"] > 0
    assert isinstance(finished["mean_costs"], float) and finished["mean_costs"] > 0
    retried = next(j for j in jobs if j["tile"] == backends["failing"])
    assert retried["properties"]["attempts"] == 2
    [error] = retried["properties"]["errors"]
    assert "planned failure" in error["message"] and error["attempt"] == 1

    # The catalogue equals the back-ends' truth, and both back-ends took work.
    assert {j["properties"]["backend_name"] for j in jobs} == set(urls)
    for job in jobs:
        props = job["properties"]
        remote = connect(urls[props["backend_name"]]).job(props["openeo:job_id"])
        described = remote.describe()
        assert described["status"] == "finished"
        assert described["title"].endswith(job["tile"])
        assert described["costs"] > 0 and described["usage"]["cpu"]["value"] >= 0
        item = http.get(f"collections/{campaign}/items/{job['tile']}")
        assert any(link["rel"] == "results" for link in item["links"])
        # Every result is a valid COG on the tile's exact native grid.
        downloaded = remote.get_results().download_files(tmp_path / job["tile"])
        tifs = [p for p in downloaded if p.suffix == ".tif"]
        assert len(tifs) == 1
        valid, errors, _ = cog_validate(str(tifs[0]), quiet=True)
        assert valid, errors
        with rasterio.open(tifs[0]) as result:
            assert result.crs.to_epsg() == 32631
            assert list(result.bounds) == props["proj:bbox"]
            assert (result.height, result.width) == (1000, 1000)
            ndvi = result.read(1)
        finite = ndvi[ndvi == ndvi]
        assert finite.size > 0.95 * ndvi.size  # cloudy on every date: no value
        assert finite.min() >= -1 and finite.max() <= 1 and finite.mean() > 0.2
        _assert_harvested(http, campaign, job["tile"], props, tifs[0])


def _assert_harvested(
    http: HttpSession, campaign: str, tile: str, props: dict[str, Any], result: Path
) -> None:
    """The tile's product: a valid COG whose checksum matches the bytes the API serves
    (by ranges too), with provenance and links to its job, and the job links back."""
    job_item = http.get(f"collections/{campaign}/items/{tile}")
    state = job_item["properties"]["tilekeeper:product"]
    assert state["state"] == "ingested" and state["items"] == [tile]
    product = http.get(f"collections/{campaign}-products/items/{tile}")
    validate(product)
    asset = product["assets"]["openEO"]
    served = requests.get(asset["href"], timeout=30).content
    assert "1220" + hashlib.sha256(served).hexdigest() == asset["file:checksum"]
    assert served == result.read_bytes()  # already a COG: harvested byte for byte
    ranged = requests.get(asset["href"], headers={"Range": "bytes=100-199"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == served[100:200]
    properties = product["properties"]
    assert properties["grid:code"] == props["grid:code"]
    assert properties["processing:expression"]["format"] == "openeo"
    assert properties["processing:facility"] and properties["processing:software"]
    assert properties["proj:code"] == "EPSG:32631" and properties["proj:bbox"] == props["proj:bbox"]
    links = {link["rel"]: link["href"] for link in product["links"]}
    assert requests.get(links["derived_from"], timeout=30).json()["id"] == tile
    assert links["via"].endswith(f"/jobs/{props['openeo:job_id']}")
    assert any(link["href"].endswith(f"-products/items/{tile}") for link in job_item["links"])


def test_jobs_queue_cancel_and_survive_a_restart(
    api: str, backends: dict[str, Any], tmp_path: Path
) -> None:
    """One job runs at a time (the second waits as queued), a queued job can be
    canceled, and a restarted back-end still knows its jobs."""
    alpha = backends["backends"][0]
    install_udp([alpha.url])
    connection = connect(alpha.url)
    extent = {"west": 600000, "south": 5640000, "east": 601000, "north": 5641000, "crs": 32631}

    def new_job(title: str) -> Any:
        cube = connection.datacube_from_process(
            "cloudfree_ndvi", spatial_extent=extent, temporal_extent=["2024-04-01", "2024-09-30"]
        )
        return cube.create_job(title=title)

    first, second = new_job("first"), new_job("second")
    assert first.status() == "created"
    first.start()
    second.start()
    assert second.status() == "queued"
    second.stop()
    assert second.status() == "canceled"
    deadline = time.monotonic() + 60
    while first.status() not in ("finished", "error") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.status() == "finished"
    assert second.status() == "canceled"  # never ran after its cancel
    signed = first.get_results().get_metadata()["assets"]["openEO.tif"]["href"]

    alpha.stop()
    alpha.start(log_path=backends["base"] / "alpha-restarted.log")
    again = connect(alpha.url)
    assert again.job(first.job_id).status() == "finished"
    assert again.job(second.job_id).status() == "canceled"
    listed = {j["id"] for j in again.list_jobs()}
    assert {first.job_id, second.job_id} <= listed
    assets = again.job(first.job_id).get_results().get_metadata()["assets"]
    assert "openEO.tif" in assets and "expires=" in assets["openEO.tif"]["href"]  # signed
    # The signing secret is the back-end's own (made once, kept beside its jobs, 0600), so
    # a URL signed before the restart still opens.
    secret = alpha.jobs_dir / "signing-secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text()) >= 32
    assert requests.get(signed, timeout=30).status_code == 200


def test_a_process_namespace_url_is_fetched_only_when_allowed(
    backends: dict[str, Any],
) -> None:
    """A job naming a URL as its process's namespace does not make the back-end fetch it
    (server-side request forgery) unless the URL's prefix is allowed."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        alpha = backends["backends"][0]
        url = f"http://127.0.0.1:{server.server_address[1]}/internal/secret.json"
        cube = connect(alpha.url).datacube_from_process("anything", namespace=url)
        with pytest.raises(OpenEoApiError) as refused:
            cube.create_job()
        assert refused.value.http_status_code == 400
        assert "is not allowed on this back-end" in str(refused.value)
        assert asked == []
    finally:
        server.shutdown()


def _jobs_by_title(urls: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for name, url in urls.items():
        for job in connect(url).list_jobs(limit=None):
            found.setdefault(str(job.get("title")), []).append({**job, "backend": name})
    return found


def _new_campaign(api: str, backends: dict[str, Any]) -> tuple[Campaigns, str, dict[str, str]]:
    campaigns = Campaigns(HttpSession(api))
    urls = {b.name: b.url for b in backends["backends"]}
    store_login(list(urls.values()))
    install_udp(list(urls.values()))
    campaign = f"crash-{uuid.uuid4().hex[:6]}"
    definition = campaign_definition(campaign, TEST_AREA, list(urls.items()), parallel_jobs=1)
    # As a user would after the demo: no auth given (oidc by default), so the login
    # falls back to the basic credentials in the openEO auth config.
    for backend in definition["backends"]:
        backend.pop("auth")
    ensure_campaign(campaigns, definition, backends["tiles"])
    return campaigns, campaign, urls


def test_a_launch_cut_between_creation_and_record_is_adopted(
    api: str, backends: dict[str, Any], tmp_path: Path
) -> None:
    """Tile A's job was created on alpha but the runner died before recording it; tile
    B's intent was recorded but its job never reached beta. The next run adopts A's job
    (and starts it) and creates B's once."""
    from catalog_service.runner.creator import CampaignJobCreator

    campaigns, campaign, urls = _new_campaign(api, backends)
    a, b = (j for j in campaigns.jobs_by_status(campaign, ["not_started"])[:2])
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for job, backend in ((a, "alpha"), (b, "beta")):
        intent = {"backend_name": backend, "title": f"{campaign} {job['tile']}", "start_time": now}
        campaigns.change(
            campaign,
            [
                {
                    "tile": job["tile"],
                    "status": "creating",
                    "expect_status": "not_started",
                    "set": intent,
                }
            ],
        )
    creator = CampaignJobCreator(campaigns.definition(campaign))
    orphan = creator.start_job(
        pd.Series({**a["properties"], "item_id": a["tile"]}), connection=connect(urls["alpha"])
    )
    assert orphan.status() == "created"

    run_with_progress(api, campaigns, campaign, lambda _: None, root_dir=tmp_path, poll_sleep=1)

    jobs = {j["tile"]: j["properties"] for j in campaigns.jobs_by_status(campaign, ["finished"])}
    assert len(jobs) == 4
    assert jobs[a["tile"]]["openeo:job_id"] == orphan.job_id and jobs[a["tile"]]["attempts"] == 1
    titles = _jobs_by_title(urls)
    for tile in jobs:
        assert len(titles[f"{campaign} {tile}"]) == 1, titles[f"{campaign} {tile}"]
    history = [h["to"] for h in campaigns.history(campaign, b["tile"])]
    assert history[:2] == ["creating", "not_started"] and history[-1] == "finished"


def test_runner_killed_again_and_again_ends_with_one_job_per_tile(
    api: str, backends: dict[str, Any], tmp_path: Path
) -> None:
    """`tilekeeper campaign run` killed -9 at random moments, then run to the end: every
    tile finished, no tile with two back-end jobs that did not fail, none stuck."""
    campaigns, campaign, urls = _new_campaign(api, backends)
    command = [
        str(Path(sys.executable).parent / "tilekeeper"), "campaign", "run", campaign,
        "--api", api, "--poll-sleep", "0.5", "--worker", "crash-test", "--lease", "30",
        "--log-file", str(tmp_path / "runner.log"),
    ]  # fmt: skip
    rng = random.Random(7)
    for _ in range(6):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 5.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    jobs = {j["tile"]: j["properties"] for j in campaigns.jobs_by_status(campaign, ["finished"])}
    assert len(jobs) == 4, campaigns.summary(campaign)["by_status"]
    titles = _jobs_by_title(urls)
    for tile, props in jobs.items():
        mine = titles[f"{campaign} {tile}"]
        alive = [j for j in mine if j.get("status") != "error"]
        assert [j["id"] for j in alive] == [props["openeo:job_id"]], mine
        item = HttpSession(api).get(f"collections/{campaign}/items/{tile}")
        assert any(link["rel"] == "results" for link in item["links"])


def test_a_backend_killed_mid_run_is_waited_for_and_its_logs_are_shown(
    api: str, backends: dict[str, Any], tmp_path: Path
) -> None:
    """beta is killed -9 while it runs a tile's job and comes back 20 s later: the
    runner keeps alpha's tiles going, resumes beta's, and ends with every tile finished
    on one job; `tilekeeper campaign logs` then shows a tile's job log."""
    campaigns, campaign, urls = _new_campaign(api, backends)
    beta = backends["backends"][1]
    tilekeeper = str(Path(sys.executable).parent / "tilekeeper")
    runner = subprocess.Popen(
        [tilekeeper, "campaign", "run", campaign, "--api", api, "--poll-sleep", "0.5",
         "--log-file", str(tmp_path / "runner.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            active = campaigns.jobs_by_status(campaign, ["queued", "running"])
            if any(j["properties"].get("backend_name") == "beta" for j in active):
                break
            time.sleep(0.3)
        else:
            pytest.fail("no job reached beta")
        beta.process.send_signal(signal.SIGKILL)
        beta.process.wait()
        time.sleep(20)
        assert runner.poll() is None  # still running, waiting for beta
        beta.start(log_path=backends["base"] / "beta-after-kill.log")
        assert runner.wait(timeout=300) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
    jobs = {j["tile"]: j["properties"] for j in campaigns.jobs_by_status(campaign, ["finished"])}
    assert len(jobs) == 4, campaigns.summary(campaign)["by_status"]
    titles = _jobs_by_title(urls)
    for tile, props in jobs.items():
        alive = [j for j in titles[f"{campaign} {tile}"] if j.get("status") != "error"]
        assert [j["id"] for j in alive] == [props["openeo:job_id"]]
    log = (tmp_path / "runner.log").read_text()
    assert "back-end beta is unhealthy" in log and "back-end beta answers well again" in log

    tile, props = next(iter(jobs.items()))
    shown = subprocess.run(
        [tilekeeper, "campaign", "logs", campaign, tile, "--api", api, "--level", "debug"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"job {props['openeo:job_id']} on {props['backend_name']}" in shown.stdout
    assert "INFO" in shown.stdout or "info" in shown.stdout  # the job's own log lines
    missing = subprocess.run(
        [tilekeeper, "campaign", "logs", campaign, "no-such-tile", "--api", api],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0 and "has no tile no-such-tile" in missing.stdout + missing.stderr


def test_an_interrupted_harvest_is_completed_by_ingest_campaign(
    api: str, backends: dict[str, Any], tmp_path: Path
) -> None:
    """Tiles finished without their products (a runner stopped before harvesting, one
    harvest cut halfway): `campaign status` lists them and `tilekeeper ingest --campaign`
    harvests them; a second run changes nothing."""
    from typer.testing import CliRunner

    from catalog_service.campaign_run import build_manager
    from catalog_service.cli.main import app

    campaigns, campaign, _urls = _new_campaign(api, backends)
    build_manager(api, campaign, poll_sleep=0.5, harvest=False).run()
    tiles = [j["tile"] for j in campaigns.jobs_by_status(campaign, ["finished"])]
    assert len(tiles) == 4
    http = HttpSession(api)
    http.put(f"campaigns/{campaign}/jobs/{tiles[0]}/product", json={"state": "pending"})
    runner = CliRunner()
    env = {"COLUMNS": "1000"}
    shown = runner.invoke(app, ["campaign", "status", campaign, "--api", api], env=env)
    assert "4 finished tile(s) not harvested yet" in shown.output, shown.output
    first = runner.invoke(app, ["ingest", "--campaign", campaign, "--api", api, "--json"], env=env)
    assert first.exit_code == 0, first.output
    assert first.output.count('"result": "created"') == 4
    for tile in tiles:
        state = http.get(f"collections/{campaign}/items/{tile}")["properties"]["tilekeeper:product"]
        assert state["state"] == "ingested"
    again = runner.invoke(app, ["ingest", "--campaign", campaign, "--api", api], env=env)
    assert again.exit_code == 0 and "nothing to do" in again.output
    shown = runner.invoke(app, ["campaign", "status", campaign, "--api", api], env=env)
    assert "every finished tile is harvested" in shown.output
