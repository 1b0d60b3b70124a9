"""The openEO MultiBackendJobManager (0.53.0 as released) on CampaignJobDatabase, over the
real API, with two back-ends built from the client's DummyBackend."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, cast

import geopandas as gpd
import httpx
import pandas as pd
import pytest
import requests
import requests_mock
from openeo.extra.job_management import MultiBackendJobManager
from openeo.extra.job_management.stac_job_db import STACAPIJobDatabase
from openeo.rest._testing import DummyBackend
from openeo.rest.job import BatchJob
from support.jobs import UDP, UDP_URL, catalogue_jobs, dummy_backends

from catalog_service import CampaignJobDatabase
from catalog_service.campaign_run import run_campaign
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.credentials import auth_for
from catalog_service.client.http import HttpSession
from catalog_service.client.jobdb import JobDatabaseError, PlaceholderFootprint
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.runner import cancel_tiles


def check_against_truth(
    api: str, campaign: str, backends: dict[str, DummyBackend]
) -> dict[str, int]:
    jobs = catalogue_jobs(api, campaign)
    seen: dict[str, int] = {}
    for tile, props in jobs.items():
        assert props["status"] not in (
            "not_started",
            "created",
            "queued",
            "running",
            "queued_for_start",
        ), (tile, props)
        backend = backends[props["backend_name"]]
        truth = backend.batch_jobs[props["openeo:job_id"]]
        expected = {"finished": "finished", "error": "error"}[truth["status"]]
        # A job whose start was refused is error on the back-end, start_failed or error here.
        assert props["status"] == expected or (
            props["status"] == "start_failed" and truth["status"] == "error"
        )
        seen[props["status"]] = seen.get(props["status"], 0) + 1
    # Every job a back-end knows belongs to exactly one tile.
    known = {(p["backend_name"], p["openeo:job_id"]) for p in jobs.values()}
    created = {(name, job_id) for name, b in backends.items() for job_id in b.batch_jobs}
    assert known == created
    return seen


@pytest.fixture()
def campaign_tiles() -> gpd.GeoDataFrame:
    tiles = tiles_for("utm-20km", load_aoi("2.0,49.0,8.0,52.0"))
    frame = gpd.GeoDataFrame(
        {"item_id": tiles.ids[:200], "cropland": range(200)},
        geometry=list(tiles.footprints[:200]),
        crs=4326,
    )
    assert len(frame) == 200
    return frame


def test_mbjm_run_over_two_backends_matches_backend_truth(
    api: str, campaign_tiles: gpd.GeoDataFrame
) -> None:
    campaign = f"mbjm-{uuid.uuid4().hex[:8]}"
    job_db = CampaignJobDatabase(campaign, api)
    with requests_mock.Mocker(real_http=True) as mocker:
        backends = dummy_backends(mocker)
        manager = MultiBackendJobManager(poll_sleep=0, root_dir=None, download_results=False)
        for name, dummy in backends.items():
            manager.add_backend(name, connection=dummy.connection, parallel_jobs=20)

        def start_job(row: pd.Series, connection: Any, **_: Any) -> Any:
            cube = connection.load_collection("S2", temporal_extent=["2024-01-01", "2024-02-01"])
            return cube.create_job(title=f"{campaign} {row['item_id']}")

        job_db.initialize_from_df(campaign_tiles)
        assert job_db.count_by_status() == {"not_started": 200}
        # openeo declares start_job as taking no arguments; run_jobs passes the row, the
        # connection and more as keywords (its own docstring says so).
        launch = cast("Callable[[], BatchJob]", start_job)
        stats = manager.run_jobs(job_db=job_db, start_job=launch)
    assert stats["job launch"] == 200
    seen = check_against_truth(api, campaign, backends)
    assert sum(seen.values()) == 200
    assert seen.get("error", 0) >= 4 and seen.get("start_failed", 0) + seen.get("error", 0) >= 6
    # Titles tie each back-end job to its tile: the start-thread updates hit the right rows.
    jobs = catalogue_jobs(api, campaign)
    for tile, props in jobs.items():
        posted = backends[props["backend_name"]].batch_jobs_full[props["openeo:job_id"]]
        assert posted["title"] == f"{campaign} {tile}"
    assert all(p["attempts"] == 1 for p in jobs.values())
    assert job_db.count_by_status(["finished"]) == {"finished": seen["finished"]}


def test_runner_uses_the_campaign_process(api: str) -> None:
    campaign = f"run-{uuid.uuid4().hex[:8]}"
    campaigns = Campaigns(HttpSession(api))
    campaigns.create(
        {
            "id": campaign,
            "grid": "utm-20km",
            "temporal_extent": ["2024-03-01", "2024-09-30"],
            "process": {
                "process_id": "ndvi_tile",
                "namespace": UDP_URL,
                "parameters": {"bands": ["B04", "B08"]},
            },
            "backends": [
                {"name": "alpha", "url": "https://alpha.test/", "parallel_jobs": 5, "auth": "none"},
                {"name": "beta", "url": "https://beta.test/", "parallel_jobs": 5, "auth": "none"},
            ],
            "job_options": {"driver-memory": "2g"},
            "retry": {"max_attempts": 1},
        }
    )
    tiles = tiles_for("utm-20km", load_aoi("3.8,50.4,5.2,51.1"))
    assert len(tiles) >= 20
    campaigns.register(campaign, tile_records(tiles))
    with requests_mock.Mocker(real_http=True) as mocker:
        backends = dummy_backends(mocker, errors=1)
        mocker.get(UDP_URL, json=UDP)
        run_campaign(api, campaign, poll_sleep=0)
        check_against_truth(api, campaign, backends)
        # What a back-end received: the UDP with this tile's exact UTM extent, the
        # campaign's period and constant parameters, and the job options.
        jobs = catalogue_jobs(api, campaign)
        tile, props = next((t, p) for t, p in jobs.items() if p["status"] == "finished")
        posted = backends[props["backend_name"]].batch_jobs_full[props["openeo:job_id"]]
        node = next(iter(posted["process"]["process_graph"].values()))
        assert node["process_id"] == "ndvi_tile" and node["namespace"] == UDP_URL
        assert node["arguments"]["spatial_extent"] == props["spatial_extent"]
        assert node["arguments"]["temporal_extent"] == ["2024-03-01", "2024-09-30"]
        assert node["arguments"]["bands"] == ["B04", "B08"]
        assert posted["job_options"] == {"driver-memory": "2g"}
        item = httpx.get(f"{api}/collections/{campaign}/items/{tile}").json()
        assert any(
            link["rel"] == "results" and props["openeo:job_id"] in link["href"]
            for link in item["links"]
        )
        failed = [t for t, p in jobs.items() if p["status"] == "error"]
        assert failed and "last_error" in jobs[failed[0]]

        # Retry with more memory: only the failed tiles run again, with the escalation.
        count = campaigns.reset(
            campaign, ["error", "start_failed"], {"job_options": {"executor-memory": "8g"}}
        )
        assert count >= 1
        before = {n: len(b.batch_jobs) for n, b in backends.items()}
        run_campaign(api, campaign, poll_sleep=0)
        after = {n: len(b.batch_jobs) for n, b in backends.items()}
        assert sum(after.values()) - sum(before.values()) == count
        retried = catalogue_jobs(api, campaign)[failed[0]]
        assert retried["attempts"] == 2
        posted = backends[retried["backend_name"]].batch_jobs_full[retried["openeo:job_id"]]
        assert posted["job_options"] == {"driver-memory": "2g", "executor-memory": "8g"}


def test_cancel_stops_active_jobs_and_waiting_tiles(api: str) -> None:
    campaign = f"cancel-{uuid.uuid4().hex[:8]}"
    campaigns = Campaigns(HttpSession(api))
    campaigns.create(
        {
            "id": campaign,
            "backends": [{"name": "alpha", "url": "https://alpha.test/", "auth": "none"}],
        }
    )
    campaigns.register(campaign, tile_records(tiles_for("utm-20km", load_aoi("4.0,50.5,4.3,50.7"))))
    tiles = [j["tile"] for j in campaigns.iter_jobs(campaign, ["not_started"])]
    with requests_mock.Mocker(real_http=True) as mocker:
        dummy = dummy_backends(mocker)["alpha"]
        job = dummy.connection.load_collection("S2").create_job()
        job.start()
        dummy.batch_jobs[job.job_id]["status"] = "running"
        campaigns.change(
            campaign,
            [
                {
                    "tile": tiles[0],
                    "status": "running",
                    "set": {"openeo:job_id": job.job_id, "backend_name": "alpha"},
                }
            ],
        )
        report = cancel_tiles(campaigns, campaign)
        assert dummy.batch_jobs[job.job_id]["status"] == "canceled"
    assert sorted(report.canceled) == sorted(tiles)
    assert report.stopped == [job.job_id] and report.not_canceled == {}
    assert Campaigns(HttpSession(api)).summary(campaign)["by_status"] == {"canceled": len(tiles)}


def test_cancel_keeps_a_tile_whose_job_could_not_be_stopped(api: str) -> None:
    """The back-end refuses the stop: that tile stays running and is reported, the
    command exits 1, and the waiting tiles are canceled."""
    from typer.testing import CliRunner

    from catalog_service.cli.main import app

    campaign = f"cancel-{uuid.uuid4().hex[:8]}"
    campaigns = Campaigns(HttpSession(api))
    campaigns.create(
        {
            "id": campaign,
            "backends": [{"name": "alpha", "url": "https://alpha.test/", "auth": "none"}],
        }
    )
    campaigns.register(campaign, tile_records(tiles_for("utm-20km", load_aoi("4.0,50.5,4.3,50.7"))))
    tiles = [j["tile"] for j in campaigns.iter_jobs(campaign, ["not_started"])]
    with requests_mock.Mocker(real_http=True) as mocker:
        dummy = dummy_backends(mocker)["alpha"]
        job = dummy.connection.load_collection("S2").create_job()
        job.start()
        dummy.batch_jobs[job.job_id]["status"] = "running"
        mocker.delete(
            f"https://alpha.test/jobs/{job.job_id}/results",
            status_code=500,
            json={"code": "Internal", "message": "cannot stop now"},
        )
        change = {"tile": tiles[0], "status": "running", "set": {"openeo:job_id": job.job_id, "backend_name": "alpha"}}  # fmt: skip
        campaigns.change(campaign, [change])
        result = CliRunner().invoke(
            app, ["campaign", "cancel", campaign, "--api", api], env={"COLUMNS": "1000"}
        )
        assert dummy.batch_jobs[job.job_id]["status"] == "running"
    assert result.exit_code == 1, result.output
    assert tiles[0] in result.output and "cannot stop now" in result.output
    assert campaigns.summary(campaign)["by_status"] == {"canceled": len(tiles) - 1, "running": 1}


def test_initialize_from_plain_frame_and_frames_never_hold_nan(api: str) -> None:
    campaign = f"plain-{uuid.uuid4().hex[:8]}"
    job_db = CampaignJobDatabase(campaign, api)
    frame = pd.DataFrame(
        {"year": [2021, 2022, 2023], "status": ["not_started", "finished", "not_started"]}
    )
    with pytest.warns(PlaceholderFootprint):
        job_db.initialize_from_df(frame)
    assert job_db.count_by_status() == {"not_started": 2, "finished": 1}
    # The finished row entered as not_started and moved on by legal, marked steps.
    history = job_db.campaigns.history(campaign, "1")
    assert [(h["to"], h["details"].get("imported")) for h in history] == [("created", True), ("finished", True)]  # fmt: skip
    df = job_db.get_by_status(["not_started"])
    assert df["item_id"].tolist() == ["0", "2"]  # integer index -> string ids, kept
    assert df.index.tolist() == [0, 2]
    assert df.loc[0, "backend_name"] is None and df.loc[0, "costs"] is None
    # Only the changed row goes out (the inclusive label slice of N6 sends two rows).
    df.loc[0, "status"] = "queued_for_start"
    df.loc[0, "id"] = "j-x"
    df.loc[0, "costs"] = float("nan")
    job_db.persist(df.loc[0:2])
    assert job_db.count_by_status() == {"not_started": 1, "finished": 1, "queued_for_start": 1}
    # The frame's job id column is the property openeo:job_id: the item's id stays the tile's.
    stored = job_db.campaigns.jobs_by_tile(campaign, ["0"])[0]["properties"]
    assert stored["openeo:job_id"] == "j-x" and "id" not in stored
    assert job_db.get_by_indices([0]).loc[0, "id"] == "j-x"
    with pytest.raises(FileExistsError):
        job_db.initialize_from_df(frame)
    job_db.initialize_from_df(frame, on_exists="skip")


def test_failed_write_raises_and_stores_nothing(api: str) -> None:
    campaign = f"fail-{uuid.uuid4().hex[:8]}"
    job_db = CampaignJobDatabase(campaign, api)
    frame = gpd.GeoDataFrame(
        {"item_id": ["a", "b"]}, geometry=gpd.points_from_xy([4, 5], [50, 51]), crs=4326
    )
    job_db.initialize_from_df(frame)
    df = job_db.get_by_status(["not_started"])
    df.loc[df.index[0], "status"] = "running"
    df.loc[df.index[1], "status"] = "finished"  # illegal from not_started
    with pytest.raises(JobDatabaseError, match="not a legal transition"):
        job_db.persist(df)
    assert job_db.count_by_status() == {"not_started": 2}


def test_stock_stac_job_database_fails_loudly_on_a_campaign(api: str) -> None:
    campaign = f"stock-{uuid.uuid4().hex[:8]}"
    CampaignJobDatabase(campaign, api).initialize_from_df(
        gpd.GeoDataFrame({"item_id": ["a"]}, geometry=gpd.points_from_xy([4], [50]), crs=4326)
    )
    stock = STACAPIJobDatabase(collection_id=campaign, stac_root_url=api, auth=auth_for(api))
    df = stock.get_by_status(["not_started"])
    assert len(df) == 1
    df.loc[df.index[0], "status"] = "finished"
    with pytest.raises(requests.HTTPError) as raised:
        stock.persist(df)
    assert raised.value.response.status_code == 409
    assert CampaignJobDatabase(campaign, api).count_by_status() == {"not_started": 1}


def test_stock_stac_job_database_on_a_plain_collection_never_loses_writes_silently(
    api: str,
) -> None:
    collection = f"stock-plain-{uuid.uuid4().hex[:8]}"
    stock = STACAPIJobDatabase(collection_id=collection, stac_root_url=api, auth=auth_for(api))
    # Its default frame has no geometry: pgstac cannot store that. Upstream answers 200
    # and stores nothing; here the write fails loudly.
    with pytest.raises(requests.HTTPError) as raised:
        stock.initialize_from_df(pd.DataFrame({"item_id": ["a", "b"], "year": [1, 2]}))
    assert raised.value.response.status_code == 400
    assert "geometry" in json.dumps(raised.value.response.json())
