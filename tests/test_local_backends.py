"""The demo's chain end to end, over HTTP: two local openEO back-ends (real processes,
openeo-processes-dask) compute a 4-tile campaign from the synthetic Sentinel-2 sample
in the catalogue; one tile fails once and is retried. Afterwards the catalogue equals
what the back-ends report, and every result is a valid COG on its tile's exact grid."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from catalog_service.api.server import free_port
from catalog_service.client import Catalog
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.demo.backends import LocalBackend, load_sample
from catalog_service.demo.scenario import (
    TEST_AREA,
    campaign_definition,
    connect,
    ensure_campaign,
    install_udp,
    run_with_progress,
    store_login,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backends(api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("openeo")
    collection, items = load_sample(Catalog(api), TEST_AREA.sample(), base / "sample")
    assert collection == "SENTINEL2_L2A_SYNTHETIC"
    assert items == 3
    tiles = TEST_AREA.tiles()
    failing = str(tiles.ids[1])
    started = []
    try:
        for name in ("alpha", "beta"):
            backend = LocalBackend(
                name=name,
                port=free_port(),
                jobs_dir=base / name,
                stac_url=f"{api}/",
                fail_tiles=[failing],
                fail_state_dir=base / "failed-once",
            )
            backend.start(log_path=base / f"{name}.log")
            started.append(backend)
        yield {"backends": started, "failing": failing, "tiles": tiles, "base": base}
    finally:
        for backend in started:
            backend.stop()


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
        remote = connect(urls[props["backend_name"]]).job(props["id"])
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

    alpha.stop()
    alpha.start(log_path=backends["base"] / "alpha-restarted.log")
    again = connect(alpha.url)
    assert again.job(first.job_id).status() == "finished"
    assert again.job(second.job_id).status() == "canceled"
    listed = {j["id"] for j in again.list_jobs()}
    assert {first.job_id, second.job_id} <= listed
    assets = again.job(first.job_id).get_results().get_metadata()["assets"]
    assert "openEO.tif" in assets and "expires=" in assets["openEO.tif"]["href"]  # signed
