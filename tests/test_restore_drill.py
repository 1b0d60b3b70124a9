"""The restore drill (issue 25): a campaign runs on two local openEO back-ends (real
processes); the catalogue is backed up mid-campaign; the runner goes on, creating more
jobs and harvesting products; the older backup is restored, so the catalogue forgets
those jobs and products; the runner runs again to the end. No tile gets a job after the
restore (the lost jobs are found on the back-ends by title and adopted), and no
product is lost or downloaded twice (the files the store kept are registered again,
matched by checksum).

The backup and the restore are `tilekeeper db backup` and `db restore`'s own
(catalog_service/database/backup.py: the whole catalogue, under the running service)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from openeo.rest.connection import Connection
from support.database import (
    Database,
    admin_token,
    make_database,
    products_settings,
    start_api,
    wait_ready,
)
from support.servers import local_backends, loopback_server, moto_s3, send_json
from typer.testing import CliRunner

from catalog_service.campaign_run import build_manager
from catalog_service.cli.main import app
from catalog_service.client import Catalog
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import ApiError, HttpSession
from catalog_service.database.backup import backup_database, restore_database
from catalog_service.demo.backends import LocalBackend, load_sample
from catalog_service.demo.scenario import (
    TEST_AREA,
    campaign_definition,
    connect,
    ensure_campaign,
    install_udp,
    store_login,
)
from catalog_service.jobs.campaign import Backend
from catalog_service.runner.adoption import ADOPTED, best, known_ids, refusal, tile_of
from catalog_service.runner.creator import CampaignJobCreator
from catalog_service.runner.listing import list_jobs
from catalog_service.runner.logins import BackendLink
from catalog_service.runner.report import RunReport
from catalog_service.settings import RunnerSettings
from ingest.rasters import FileDigest
from ingest.reuse import StoredResults
from ingest.store import LocalStore, ObjectStore, ProductStore


@pytest.fixture(scope="module")
def own_database() -> Iterator[Database]:
    db = make_database("tilekeeper-drill-")
    saved = {k: os.environ.get(k) for k in ("TILEKEEPER_API_KEY", "TILEKEEPER_PRODUCTS_STORE")}
    os.environ["TILEKEEPER_API_KEY"] = admin_token(db)
    os.environ["TILEKEEPER_PRODUCTS_STORE"] = str(products_settings(db).store)
    try:
        yield db
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        db.destroy()


@pytest.fixture(scope="module")
def world(
    own_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    server = start_api(own_database)
    try:
        wait_ready(server.url)
        base = tmp_path_factory.mktemp("drill")
        load_sample(Catalog(server.url), TEST_AREA.sample(), base / "sample")
        tiles = [str(t) for t in TEST_AREA.tiles().ids]
        knobs = {"fail_tiles": [tiles[1]], "fail_state_dir": base / "failed-once",
                 "min_runtime_s": 2.0}  # fmt: skip
        with local_backends(server.url, base, ["alpha", "beta"], **knobs) as started:
            store_login([b.url for b in started])
            install_udp([b.url for b in started])
            yield {"api": server.url, "backends": started, "tiles": tiles, "base": base}
    finally:
        server.stop()


def run(api: str, campaign: str, root: Path, **options: Any) -> tuple[RunReport, Any]:
    """One worker's run to its end; with its harvest (to count its downloads)."""
    manager = build_manager(api, campaign, poll_sleep=0.5, root_dir=root, **options)
    return manager.run(), manager.harvest


def cli(args: list[str]) -> Any:
    """`tilekeeper ARGS` in-process (wide, so that nothing is wrapped)."""
    result = CliRunner().invoke(app, args, env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    return result


def backend_jobs(backends: list[LocalBackend], campaign: str) -> dict[str, dict[str, str]]:
    """The back-ends' jobs of the campaign: job id -> {title, status, backend}."""
    jobs = {}
    for backend in backends:
        for job in connect(backend.url).list_jobs(limit=None):
            if str(job.get("title", "")).startswith(f"{campaign} "):
                jobs[job["id"]] = {"title": job["title"], "status": job["status"],
                                   "backend": backend.name}  # fmt: skip
    return jobs


def wait_until_settled(backends: list[LocalBackend], campaign: str, timeout_s: float = 120) -> None:
    """Until no job of the campaign is queued or running on the back-ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = backend_jobs(backends, campaign).values()
        if all(j["status"] not in ("created", "queued", "running") for j in jobs):
            return
        time.sleep(0.5)
    raise AssertionError("the back-ends' jobs did not end")


def tile_props(campaigns: Campaigns, campaign: str, tiles: list[str]) -> dict[str, dict[str, Any]]:
    return {j["tile"]: j["properties"] for j in campaigns.jobs_by_tile(campaign, tiles)}


def product_of(http: HttpSession, campaign: str, tile: str) -> dict[str, Any] | None:
    try:
        item: dict[str, Any] = http.get(f"collections/{campaign}-products/items/{tile}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return item


@pytest.mark.slow
def test_a_restored_older_backup_loses_no_job_and_no_product(
    own_database: Database, world: dict[str, Any], tmp_path: Path
) -> None:
    api, backends, tiles = world["api"], world["backends"], world["tiles"]
    http, campaigns = HttpSession(api), Campaigns(HttpSession(api))
    urls = {b.name: b.url for b in backends}
    campaign = f"drill-{uuid.uuid4().hex[:6]}"
    definition = campaign_definition(campaign, TEST_AREA, list(urls.items()), parallel_jobs=1)
    definition["retry"] = {"max_attempts": 1}  # a failed tile stays failed until retried
    ensure_campaign(campaigns, definition, TEST_AREA.tiles())
    t0, t1, t2, t3 = tiles

    # Before the backup: t0 finished (not harvested yet), t1 failed (its first job J1).
    run(api, campaign, tmp_path, only_tiles=[t0, t1], harvest=False)
    props = tile_props(campaigns, campaign, tiles)
    assert props[t0]["status"] == "finished" and props[t1]["status"] == "error"
    assert product_of(http, campaign, t0) is None
    backup = backup_database(own_database.settings, tmp_path / "catalogue.dump")
    assert backup.counts.campaigns >= 1

    # After it: t0 harvested, t1 retried (J2) and t2 run, both harvested; t3's job
    # created and left running when its worker stops.
    campaigns.reset(campaign, ["error"], tiles=[t1])
    report, harvest = run(api, campaign, tmp_path, only_tiles=[t1, t2])
    assert not report.counts.get("adopt: adopted")  # nothing lost: nothing adopted
    downloads = harvest.downloads
    manager = build_manager(api, campaign, poll_sleep=0.5, root_dir=tmp_path, only_tiles=[t3])
    worker = threading.Thread(target=manager.run)
    worker.start()
    deadline = time.monotonic() + 60
    while tile_props(campaigns, campaign, [t3])[t3]["status"] not in ("queued", "running"):
        assert time.monotonic() < deadline, "t3's job never started"
        time.sleep(0.2)
    manager.stop()
    worker.join(30)
    before = backend_jobs(backends, campaign)
    titles = Counter(j["title"] for j in before.values())
    assert titles == {f"{campaign} {t}": 2 if t == t1 else 1 for t in tiles}
    props = tile_props(campaigns, campaign, tiles)
    stored = {t: product_of(http, campaign, t) for t in (t0, t1, t2)}
    assert all(stored.values())

    # The restore: t1 is back in error with J1, t2 and t3 not started, their products
    # gone from the catalogue (their files are still in the store).
    restore_database(own_database.settings, backup.path)
    restored = tile_props(campaigns, campaign, tiles)
    assert restored[t1]["status"] == "error"
    assert restored[t1]["openeo:job_id"] != props[t1]["openeo:job_id"]
    assert restored[t2]["status"] == restored[t3]["status"] == "not_started"
    assert not any(product_of(http, campaign, t) for t in (t0, t1, t2))
    wait_until_settled(backends, campaign)

    # `campaign recover` finds the three products' files with no item and registers
    # t0's (its tile is finished); t1's and t2's wait for the run to adopt their jobs.
    listed = cli(["campaign", "recover", campaign, "--api", api, "--dry-run", "--json"])
    orphans = json.loads(listed.stdout[listed.stdout.index("[") :])
    assert {o["tile"] for o in orphans} == {t0, t1, t2}
    recovered = cli(["campaign", "recover", campaign, "--api", api])
    assert "registered again: 1 file(s); downloaded: 0" in recovered.stdout, recovered.stdout
    assert product_of(http, campaign, t0) is not None

    report, harvest = run(api, campaign, tmp_path)

    # No tile got a job after the restore: the back-ends hold exactly the jobs they held.
    after = backend_jobs(backends, campaign)
    assert set(after) == set(before), f"jobs created after the restore: {set(after) - set(before)}"
    assert report.launched == 0
    assert report.counts.get("adopt: adopted") == 3  # t1's J2, t2's and t3's jobs
    final = tile_props(campaigns, campaign, tiles)
    for tile in tiles:
        kept = [i for i, j in after.items() if j["title"] == f"{campaign} {tile}"
                and j["status"] != "error"]  # fmt: skip
        assert final[tile]["status"] == "finished", (tile, final[tile])
        assert [final[tile]["openeo:job_id"]] == kept
    for tile in (t1, t2, t3):
        history = campaigns.history(campaign, tile)
        assert any((h.get("details") or {}).get("adopted") == ADOPTED for h in history)

    # No product lost: each finished tile has its product, whose files hash to their
    # checksums; t1's and t2's are the files the store kept, registered, not downloaded.
    for tile in tiles:
        product = product_of(http, campaign, tile)
        assert product is not None, tile
        assert final[tile]["tilekeeper:product"]["state"] == "ingested"
        for asset in product["assets"].values():
            if "file:checksum" in asset:
                body = requests.get(asset["href"], timeout=30).content
                assert "1220" + hashlib.sha256(body).hexdigest() == asset["file:checksum"]
    for tile in (t0, t1, t2):
        again, before_restore = product_of(http, campaign, tile), stored[tile]
        assert again is not None and before_restore is not None
        assert again["assets"]["openEO"]["href"] == before_restore["assets"]["openEO"]["href"]
    assert harvest.stored.reused == 2
    assert harvest.downloads == 1  # t3's, harvested for the first time
    assert downloads + harvest.downloads == len(tiles)  # each result downloaded once
    assert not json.loads(cli(["campaign", "recover", campaign, "--api", api, "--json"]).stdout
                          .split("\n", 1)[1])  # fmt: skip


@pytest.mark.slow
def test_no_job_is_created_while_a_backend_cannot_be_listed(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A back-end that is down when the run starts may hold jobs the catalogue lost:
    nothing is created anywhere until it has been listed; then the run goes on."""
    monkeypatch.setenv("TILEKEEPER_RUNNER_BACKOFF_MAX_S", "1")  # polled again soon
    api, backends = world["api"], world["backends"]
    campaigns = Campaigns(HttpSession(api))
    campaign = f"down-{uuid.uuid4().hex[:6]}"
    urls = {b.name: b.url for b in backends}
    definition = campaign_definition(campaign, TEST_AREA, list(urls.items()), parallel_jobs=2)
    ensure_campaign(campaigns, definition, TEST_AREA.tiles())
    beta = backends[1]
    beta.stop()
    try:
        manager = build_manager(api, campaign, poll_sleep=0.5, root_dir=tmp_path, harvest=False)
        outcome: dict[str, RunReport] = {}
        worker = threading.Thread(target=lambda: outcome.update(report=manager.run()))
        worker.start()
        time.sleep(4)
        assert campaigns.counts(campaign).get("not_started") == len(world["tiles"])
        assert not backend_jobs(backends[:1], campaign)  # alpha answers, and got nothing
    finally:
        beta.start(log_path=world["base"] / "beta-again.log")
    worker.join(180)
    assert not worker.is_alive()
    report = outcome["report"]
    assert report.counts["launch deferred (a back-end not listed yet)"] >= 1
    titles = Counter(j["title"] for j in backend_jobs(backends, campaign).values())
    assert sorted(titles.values()) == [1] * len(world["tiles"])
    assert campaigns.counts(campaign).get("finished") == len(world["tiles"])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
def product_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ProductStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_server")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    import boto3

    bucket = f"drill-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return ObjectStore(f"s3://{bucket}/p", f"{endpoint}/{bucket}/p", endpoint, "us-east-1")


def test_a_stored_file_that_is_not_the_result_is_not_registered(
    product_store: ProductStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored file is registered only when its bytes hash to its key's digest and to
    the checksum the back-end's results state; each refusal says why."""
    caplog.set_level(logging.INFO, logger="ingest.reuse")
    store = product_store
    source = tmp_path / "result.tif"
    source.write_bytes(b"the result's bytes" * 100)
    digest = FileDigest.of(source)
    key = f"c-products/T1/{digest.checksum[4:20]}/openEO.tif"
    store.put(key, source, "image/tiff")
    assert store.exists(key) and not store.exists(key + ".not")
    assert store.keys("c-products") == [key] and store.keys("c-products/T") == []
    found = StoredResults(store, "c-products", lambda _product: False)
    scratch = tmp_path / "scratch"

    # Matched by checksum (and size): registered.
    expected = {"file:checksum": digest.checksum, "file:size": digest.size}
    path = found.find("T1", "T1", "openEO", expected, scratch)
    assert path is not None and path.read_bytes() == source.read_bytes()
    # The back-end's result says other bytes: downloaded instead.
    other = "1220" + hashlib.sha256(b"other").hexdigest()
    assert found.find("T1", "T1", "openEO", {"file:checksum": other}, scratch) is None
    assert "none with the result's checksum" in caplog.text
    # The right checksum, the wrong size.
    assert found.find("T1", "T1", "openEO", {**expected, "file:size": 3}, scratch) is None
    assert "but the back-end's result says 3" in caplog.text
    # No checksum stated and the product has an item: cannot be told apart.
    known = StoredResults(store, "c-products", lambda _product: True)
    assert known.find("T1", "T1", "openEO", {}, scratch) is None
    # A damaged file (its bytes no longer hash to its key's digest).
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(b"damaged")
    store.put(key, damaged, "image/tiff")
    assert found.find("T1", "T1", "openEO", expected, scratch) is None
    assert "(damaged?)" in caplog.text
    assert found.reused == 1


class _PagedJobs(BaseHTTPRequestHandler):
    """GET /openeo/jobs in two pages, the second page's next link leaving the host; any
    other path but the capabilities answers 500."""

    def do_GET(self) -> None:
        root = f"http://{self.headers['Host']}/openeo"
        pages = {
            "/openeo/jobs?limit=1000": (["a", "b", "../x"], f"{root}/jobs?page=2"),
            "/openeo/jobs?page=2": (["c"], "https://elsewhere.test/jobs?page=3"),
        }
        if self.path == "/openeo/":  # the capabilities the client reads first
            send_json(self, b'{"api_version": "1.2.0", "endpoints": []}')
            return
        if self.path not in pages:
            send_json(self, b'{"code": "Internal", "message": "no"}', 500)
            return
        ids, nxt = pages[self.path]
        jobs = [{"id": i, "status": "finished", "title": f"camp {i}"} for i in ids]
        body = {"jobs": jobs, "links": [{"rel": "next", "href": nxt}]}
        send_json(self, json.dumps(body).encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_a_job_listing_is_read_page_by_page_on_its_own_origin_only() -> None:
    with loopback_server(_PagedJobs) as port:
        url = f"http://127.0.0.1:{port}/openeo/"
        backend = Backend(name="paged", url=url, auth="none")
        link = BackendLink.configured(backend, lambda b: Connection(b.url), RunnerSettings())
        listing = list_jobs(link)
        assert listing is not None and not listing.complete  # the foreign next link
        assert [j["id"] for j in listing.jobs] == ["a", "b", "c"]  # ../x left out
        broken = Backend(name="broken", url=f"http://127.0.0.1:{port}/other/", auth="none")
        link = BackendLink.configured(broken, lambda b: Connection(b.url), RunnerSettings())
        assert list_jobs(link) is None  # a 500: it cannot tell now


def test_which_lost_job_is_adopted_onto_which_tile() -> None:
    """The most advanced copy, then the newest; onto a tile without a live job, or whose
    last attempt is older than the job."""
    jobs = [
        {"id": "e", "status": "error", "created": "2026-01-02T00:00:00Z"},
        {"id": "f1", "status": "finished", "created": "2026-01-01T00:00:00Z"},
        {"id": "f2", "status": "finished", "created": "2026-01-03T00:00:00Z"},
    ]
    assert best(jobs)["id"] == "f2"
    assert tile_of("camp", "camp 31UFS_1_1") == "31UFS_1_1"
    assert tile_of("camp", "campaign 31UFS_1_1") is None
    assert tile_of("camp", "camp a,b") is None  # no tile id: never sent in a URL
    history: list[dict[str, Any]] = [{"details": {"set": {"openeo:job_id": "h"}}}, {}]
    props = {"openeo:job_id": "j", "errors": [{"job": "e"}, {"message": "no job"}]}
    assert known_ids(props, history) == {"j", "e", "h"}
    newer = {"id": "n", "created": "2026-01-05T00:00:00Z"}
    assert refusal({"status": "not_started"}, newer) is None
    assert refusal({"status": "error", "start_time": "2026-01-01T00:00:00Z"}, newer) is None
    older = refusal({"status": "error", "start_time": "2026-01-09T00:00:00Z"}, newer)
    assert older is not None and "older" in older
    for live in ("created", "queued", "running"):
        assert "is " + live in str(refusal({"status": live, "openeo:job_id": "j"}, newer))
    assert "finished" in str(refusal({"status": "finished"}, newer))
    assert "reconciled" in str(refusal({"status": "creating"}, newer))


@pytest.mark.slow
def test_a_newer_lost_job_replaces_the_retry_of_a_tile_whose_known_job_failed(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """The catalogue knows an older job of the tile (still live there), a back-end holds a
    newer one it lost: the tile is left alone while its job lives; when that job fails,
    the newer job is adopted instead of a retry creating a third."""
    api, backends = world["api"], world["backends"]
    alpha, beta = backends
    campaigns = Campaigns(HttpSession(api))
    campaign = f"newer-{uuid.uuid4().hex[:6]}"
    urls = {b.name: b.url for b in backends}
    definition = campaign_definition(campaign, TEST_AREA, list(urls.items()), parallel_jobs=1)
    definition["retry"] = {"max_attempts": 3}  # a retry would create a new job
    ensure_campaign(campaigns, definition, TEST_AREA.tiles())
    tile = world["tiles"][0]
    creator = CampaignJobCreator(campaigns.definition(campaign))
    row = pd.Series({**tile_props(campaigns, campaign, [tile])[tile], "item_id": tile})
    # The known job: created on alpha and recorded as the runner records a launch.
    known = creator.start_job(row=row, connection=connect(alpha.url))
    change = {"tile": tile, "status": "created", "set": {
        "openeo:job_id": known.job_id, "backend_name": "alpha",
        "title": f"{campaign} {tile}", "start_time": "2020-01-01T00:00:00Z"}}  # fmt: skip
    campaigns.change(campaign, [change], actor="test")
    # The lost one: created later on beta and started.
    lost = creator.start_job(row=row, connection=connect(beta.url))
    lost.start()
    # The known job is gone from alpha: its tile fails on the next round of tracking.
    known.delete()

    report, _harvest = run(api, campaign, tmp_path, only_tiles=[tile], harvest=False)
    jobs = backend_jobs(backends, campaign)
    assert set(jobs) == {lost.job_id}  # no job created by the run
    assert report.launched == 0 and report.counts.get("adopt: adopted") == 1
    props = tile_props(campaigns, campaign, [tile])[tile]
    assert props["status"] == "finished" and props["openeo:job_id"] == lost.job_id
    history = campaigns.history(campaign, tile)
    # error (the known job gone), not_started (the retry's reset, or the adoption's when
    # it came first), then created with the lost job, adopted before any launch.
    moves = [(h["to"], h["details"].get("adopted")) for h in history]
    at = moves.index(("created", ADOPTED))
    assert [m[0] for m in moves[at - 2 : at]] == ["error", "not_started"]
    assert history[at]["details"]["job"] == lost.job_id
