"""The runner under faults, on dummy back-ends (the openEO client's DummyBackend) and the
real API: a tile whose creation fails, automatic retries, several workers sharing one
campaign, a back-end that is down, and PostgreSQL stopped mid-run."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests_mock
from openeo.rest._testing import DummyBackend
from support.database import admin_token, auth_headers, make_database, start_api, wait_ready
from support.jobs import UDP_URL, catalogue_jobs, dummy_backends

from catalog_service.campaign_run import build_manager, run_campaign
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.grids import load_aoi, tiles_for

YEAR_UDP = {
    "id": "year_tile",
    "parameters": [
        {"name": "spatial_extent", "description": "tile extent", "schema": {"type": "object"}},
        {"name": "year", "description": "a required per-tile value", "schema": {"type": "integer"}},
    ],
    "process_graph": {
        "load": {
            "process_id": "load_collection",
            "arguments": {"id": "S2", "spatial_extent": {"from_parameter": "spatial_extent"}},
            "result": True,
        }
    },
}


def make_campaign(
    api: str,
    bbox: str,
    *,
    parallel: int = 5,
    max_attempts: int = 1,
    escalation: dict[str, Any] | None = None,
    tile_properties: Any = None,
) -> tuple[str, list[str]]:
    campaign = f"runner-{uuid.uuid4().hex[:8]}"
    campaigns = Campaigns(HttpSession(api))
    campaigns.create(
        {
            "id": campaign,
            "grid": "utm-20km",
            "temporal_extent": ["2024-03-01", "2024-09-30"],
            "process": {"process_id": "year_tile", "namespace": UDP_URL},
            "backends": [
                {"name": n, "url": f"https://{n}.test/", "parallel_jobs": parallel, "auth": "none"}
                for n in ("alpha", "beta")
            ],
            "retry": {"max_attempts": max_attempts, "escalation": escalation or {}},
        }
    )
    records = list(tile_records(tiles_for("utm-20km", load_aoi(bbox))))
    for n, record in enumerate(records):
        record["properties"].update(tile_properties(n) if tile_properties else {"year": 2024})
    campaigns.register(campaign, records)
    return campaign, [r["id"] for r in records]


def backend_titles(backends: dict[str, DummyBackend]) -> Counter[str]:
    return Counter(
        job.get("title") for b in backends.values() for job in b.batch_jobs_full.values()
    )


def test_a_tile_that_cannot_be_created_fails_alone_and_is_retried(api: str) -> None:
    campaign, tiles = make_campaign(
        api, "4.0,50.5,4.6,50.9", max_attempts=2, escalation={"executor-memory": "4g"}
    )
    with requests_mock.Mocker(real_http=True) as mocker:
        backends = dummy_backends(mocker, errors=0)
        mocker.get(UDP_URL, json=YEAR_UDP)
        # Both back-ends refuse to create tile 0's job, as for a UDP they lack.
        for name in backends:
            mocker.post(
                f"https://{name}.test/jobs",
                additional_matcher=lambda r: tiles[0] in (r.json().get("title") or ""),
                status_code=400,
                json={"code": "ProcessUnsupported", "message": "Process year_tile not found"},
            )
        report = run_campaign(api, campaign, poll_sleep=0)
    jobs = catalogue_jobs(api, campaign)
    bad = jobs[tiles[0]]
    assert bad["status"] == "start_failed" and bad["attempts"] == 2
    assert [e["attempt"] for e in bad["errors"]] == [1, 2]
    assert all("Process year_tile not found" in e["message"] for e in bad["errors"])
    assert bad["job_options"] == {"executor-memory": "4g"}  # the escalation of the retry
    # The others ran: the one whose start the dummy refuses (job-002) failed on its own
    # and was retried once with the escalation.
    others = {t: p for t, p in jobs.items() if t != tiles[0]}
    assert Counter(p["status"] for p in others.values())["finished"] >= len(others) - 2
    assert report.launched >= len(others)
    retried = [p for p in others.values() if p["attempts"] == 2]
    for props in retried:
        posted = backends[props["backend_name"]].batch_jobs_full[props["openeo:job_id"]]
        assert posted["job_options"] == {"executor-memory": "4g"}


def test_a_busy_backend_is_waited_for_not_failed(
    api: str, caplog: pytest.LogCaptureFixture
) -> None:
    """429 on job creation pauses that back-end for its Retry-After and gives the
    attempt back: no tile fails or loses an attempt for it."""
    campaign, tiles = make_campaign(api, "4.0,50.5,4.6,50.9", parallel=1)
    refusals = Counter[str]()

    def busy(request: Any) -> bool:
        if refusals["alpha"] >= 3:
            return False
        refusals["alpha"] += 1
        return True

    with requests_mock.Mocker(real_http=True) as mocker:
        backends = dummy_backends(mocker, errors=0)
        mocker.get(UDP_URL, json=YEAR_UDP)
        mocker.post(
            "https://alpha.test/jobs",
            additional_matcher=busy,
            status_code=429,
            headers={"Retry-After": "1"},
            json={"code": "TooManyRequests", "message": "slow down"},
        )
        with caplog.at_level("INFO", logger="catalog_service.runner"):
            run_campaign(api, campaign, poll_sleep=0.2)
    assert refusals["alpha"] == 3
    assert caplog.text.count("alpha asks to wait (429 TooManyRequests): no new jobs for 1 s") == 3
    jobs = catalogue_jobs(api, campaign)
    assert not any("slow down" in str(p.get("errors")) for p in jobs.values())
    # Every tile ran once, except the dummy's job-002 whose start it refuses (retried).
    assert Counter(p["attempts"] for p in jobs.values())[1] >= len(tiles) - 2
    assert set(backend_titles(backends).values()) == {1}
    assert {p["backend_name"] for p in jobs.values()} == {"alpha", "beta"}


def test_three_workers_start_every_tile_exactly_once(api: str) -> None:
    campaign, tiles = make_campaign(api, "2.0,49.0,6.0,51.0", parallel=15)
    assert len(tiles) >= 150
    errors: list[BaseException] = []
    with requests_mock.Mocker(real_http=True) as mocker:
        backends = dummy_backends(mocker, errors=0)
        mocker.get(UDP_URL, json=YEAR_UDP)

        def work(name: str) -> None:
            try:
                build_manager(api, campaign, worker=name, poll_sleep=0.2, lease_s=30).run()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    assert not errors, errors
    titles = backend_titles(backends)
    assert sorted(titles) == sorted(f"{campaign} {t}" for t in tiles)
    assert set(titles.values()) == {1}, [t for t, n in titles.items() if n > 1]
    jobs = catalogue_jobs(api, campaign)
    # Work was shared, and every worker's job is the one the catalogue tracks.
    workers = Counter(p["tilekeeper:worker"] for p in jobs.values())
    assert len(workers) == 3, workers
    finished = [p for p in jobs.values() if p["status"] == "finished"]
    assert len(finished) >= len(tiles) - 2  # dummy's job-002 start is refused per back-end


def test_a_dead_workers_tiles_are_taken_over_after_its_lease(api: str) -> None:
    campaign, _ = make_campaign(api, "4.0,50.5,4.6,50.9")
    campaigns = Campaigns(HttpSession(api))
    held = campaigns.claim(campaign, "ghost", ["not_started"], 2, lease_s=2)
    assert len(held) == 2
    # A live worker does not get the ghost's tiles...
    others = campaigns.claim(campaign, "w1", ["not_started"], 100, lease_s=30)
    assert {j["tile"] for j in held}.isdisjoint(j["tile"] for j in others)
    assert [w["worker"] for w in campaigns.workers(campaign)] == ["ghost", "w1"]
    refused = campaigns.change(
        campaign,
        [{"tile": held[0]["tile"], "status": "creating", "expect_status": "not_started"}],
        worker="w1",
        partial=True,
    )
    assert refused["applied"] == [] and "worked on by ghost" in refused["conflicts"][0]["reason"]
    time.sleep(2.5)  # ... until its lease runs out
    taken = campaigns.claim(campaign, "w1", ["not_started"], 100, lease_s=30)
    assert {j["tile"] for j in held} <= {j["tile"] for j in taken}
    assert [w["worker"] for w in campaigns.workers(campaign)] == ["w1"]


def test_claims_made_at_the_same_moment_never_share_a_tile(api: str) -> None:
    campaign, tiles = make_campaign(api, "0.0,48.0,8.0,52.0")
    campaigns = Campaigns(HttpSession(api))
    barrier = threading.Barrier(4)

    def claim(worker: str) -> list[str]:
        barrier.wait()
        return [j["tile"] for j in campaigns.claim(campaign, worker, ["not_started"], 30, 60)]

    taken: list[str] = []
    for round_ in range(3):  # new workers each round: the first claim also registers one
        with ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(claim, [f"r{round_}-w{n}" for n in range(4)]))
        assert all(len(batch) == 30 for batch in batches)
        taken += [tile for batch in batches for tile in batch]
    assert len(taken) == len(set(taken)) == 360 <= len(tiles)


def test_a_repeated_change_is_applied_once(api: str) -> None:
    campaign, tiles = make_campaign(api, "4.0,50.5,4.3,50.7")
    campaigns = Campaigns(HttpSession(api))
    change = {
        "tile": tiles[0],
        "status": "creating",
        "expect_status": "not_started",
        "set": {"backend_name": "alpha", "title": f"{campaign} {tiles[0]}"},
    }
    first = campaigns.change(campaign, [change])
    again = campaigns.change(campaign, [change])  # as after a lost answer
    assert first["applied"][0]["status"] == again["applied"][0]["status"] == "creating"
    assert [h["to"] for h in campaigns.history(campaign, tiles[0])] == ["creating"]
    assert campaigns.counts(campaign)["creating"] == 1


@pytest.mark.slow
def test_runner_outlives_a_database_outage(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_database("tilekeeper-outage-")
    monkeypatch.setenv("TILEKEEPER_API_KEY", admin_token(db))
    server = start_api(db)
    try:
        wait_ready(server.url)
        api = server.url
        campaign, tiles = make_campaign(api, "3.0,50.0,5.0,51.0", parallel=3)
        outcome: dict[str, Any] = {}
        with requests_mock.Mocker(real_http=True) as mocker:
            backends = dummy_backends(mocker, errors=0)
            mocker.get(UDP_URL, json=YEAR_UDP)

            def work() -> None:
                try:
                    outcome["stats"] = run_campaign(api, campaign, poll_sleep=0.5)
                except BaseException as exc:
                    outcome["error"] = exc

            runner = threading.Thread(target=work)
            runner.start()
            time.sleep(3)
            assert runner.is_alive()
            db.cluster.stop("immediate")
            time.sleep(2)
            answer = httpx.post(
                f"{api}/campaigns/{campaign}/jobs/changes",
                json={"changes": [{"tile": tiles[0], "set": {"note": "x"}}]},
                headers=auth_headers(),
                timeout=60,
            )
            assert answer.status_code == 503, answer.text
            assert "unavailable" in answer.json()["description"]
            time.sleep(18)
            assert runner.is_alive()
            db.cluster.start()
            runner.join(300)
        assert "error" not in outcome, outcome.get("error")
        jobs = catalogue_jobs(api, campaign)
        titles = backend_titles(backends)
        assert set(titles.values()) == {1}
        assert len(titles) == len(tiles)
        assert all(p["status"] in ("finished", "start_failed") for p in jobs.values())
    finally:
        server.stop()
        db.destroy()
