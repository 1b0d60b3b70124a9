"""Downloads of untrusted files (ingest/download.py), results documents parsed strictly
(ingest/results.py), the harvest against a hostile openEO back-end and `tilekeeper
ingest URL`, all over real loopback HTTP servers: endless, slow and dripping streams
end by the size cap, the minimum rate and the deadline and leave no file; a Content-
Length over the cap is refused before reading; hrefs to the metadata service are
refused; the back-end's token goes to its own origin only; error bodies never reach a
message or the catalogue; oversized documents are refused; each ingest source fails
alone; temporary folders of dead harvests are removed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from openeo.rest.auth.auth import BearerAuth
from openeo.rest.connection import Connection
from rasterio.transform import from_origin
from support.database import Database, products_settings
from support.servers import loopback_server, send_json
from typer.testing import CliRunner

from catalog_service.cli.main import app
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.egress import egress_session
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.products import MAX_ERROR
from catalog_service.settings import HarvestSettings
from ingest.download import DownloadLimits, download, fetch, read_json, shown_url
from ingest.errors import IngestError
from ingest.harvest import Harvester, harvest_root, remove_stale_folders
from ingest.results import DocumentError, parse_document
from ingest.store import LocalStore, open_store

runner = CliRunner()
TOKEN = "basic//secret-token-of-the-back-end"
SECRET_BODY = "SECRET-BODY-" * 5000


Handler = Callable[[BaseHTTPRequestHandler], None]


def handler_class(routes: dict[str, Handler], seen: list[tuple[str, str | None]]) -> type:
    """A request handler answering each path from ``routes`` (longest prefix first) and
    recording (path, Authorization) of every request in ``seen``."""

    class Routed(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            for prefix in sorted(routes, key=len, reverse=True):
                if self.path.split("?")[0].startswith(prefix):
                    # OSError: the client hung up, which is what the limits are for.
                    with contextlib.suppress(OSError):
                        routes[prefix](self)
                    return
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    return Routed


@contextmanager
def serve(
    routes: dict[str, Handler], host: str = "127.0.0.1"
) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A loopback server on ``host`` (127.0.0.2 is another host than 127.0.0.1); yields
    its base URL and the requests it saw."""
    seen: list[tuple[str, str | None]] = []
    if host == "127.0.0.1":
        with loopback_server(handler_class(routes, seen)) as port:
            yield f"http://{host}:{port}", seen
        return
    server = ThreadingHTTPServer((host, 0), handler_class(routes, seen))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_port}", seen
    finally:
        server.shutdown()


def endless(
    pause_s: float = 0.0, piece: bytes = b"\0" * 65536, length: int | None = None
) -> Handler:
    """An answer that never ends: ``piece`` after ``piece``, ``pause_s`` apart."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/tiff")
        if length is not None:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        while True:
            h.wfile.write(piece)
            h.wfile.flush()
            time.sleep(pause_s)

    return answer


def header_drip(h: BaseHTTPRequestHandler) -> None:
    """A status line, then a header that never ends, a byte at a time."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:
        h.wfile.write(b"a")
        h.wfile.flush()
        time.sleep(0.3)


def body(content: bytes, status: int = 200, reason: str | None = None) -> Handler:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status, reason)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(content)))
        h.end_headers()
        h.wfile.write(content)

    return answer


def redirect(location: str) -> Handler:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def limits(**given: Any) -> DownloadLimits:
    values = {"max_bytes": 1 << 20, "deadline_s": 60.0, "min_rate_bytes_s": 0.0}
    return DownloadLimits(**{"rate_window_s": 60.0, **values, **given})


def failure(call: Callable[[], object], give_up_s: float = 60.0) -> tuple[str, float]:
    """The IngestError ``call`` raises, and how long it took; ``call`` runs on a thread
    so a transfer that never ends fails the test instead of hanging it."""
    outcome: list[BaseException | object] = []
    started = time.monotonic()

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(give_up_s)
    took = time.monotonic() - started
    assert outcome, f"still running after {give_up_s:.0f} s"
    assert isinstance(outcome[0], IngestError), outcome[0]
    return str(outcome[0]), took


# -- the downloader ---------------------------------------------------------------


def test_an_endless_stream_stops_at_the_cap_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEKEEPER_HARVEST_MAX_FILE_BYTES", str(2 << 20))
    target = tmp_path / "endless.tif"
    with serve({"/": endless()}) as (url, _):
        error, took = failure(
            lambda: download(
                f"{url}/r.tif?sig=s3cr3t", target, egress_session(), DownloadLimits.for_files()
            )
        )
    assert "more than the 2,097,152 bytes allowed" in error
    assert "TILEKEEPER_HARVEST_MAX_FILE_BYTES" in error
    assert "s3cr3t" not in error and f"{url}/r.tif" in error
    assert not target.exists()
    assert took < 30


def test_a_content_length_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    target = tmp_path / "big.tif"
    # Announced 1 TB, sent a byte a second: refused at once, nothing read.
    handler = endless(pause_s=1.0, piece=b"x", length=10**12)
    with serve({"/": handler}) as (url, _):
        error, took = failure(
            lambda: download(f"{url}/big.tif", target, egress_session(), limits())
        )
    assert "announces 1,000,000,000,000 bytes" in error and "refused" in error
    assert not target.exists()
    assert took < 10


def test_a_slow_stream_ends_by_the_minimum_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEKEEPER_HARVEST_MIN_RATE_BYTES_S", "16384")
    monkeypatch.setenv("TILEKEEPER_HARVEST_RATE_WINDOW_S", "1")
    target = tmp_path / "slow.tif"
    # 1 kB/s, forever: a harvest thread it would hold for good.
    with serve({"/": endless(pause_s=0.1, piece=b"s" * 100)}) as (url, _):
        error, took = failure(
            lambda: download(
                f"{url}/slow.tif", target, egress_session(), DownloadLimits.for_files()
            )
        )
    assert "slower than the 16384 bytes/s required" in error
    assert "TILEKEEPER_HARVEST_MIN_RATE_BYTES_S" in error
    assert not target.exists()
    assert took < 30


def test_a_silent_server_ends_by_the_minimum_rate(tmp_path: Path) -> None:
    def silent(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        h.wfile.flush()
        time.sleep(30)

    with serve({"/": silent}) as (url, _):
        error, took = failure(
            lambda: download(
                f"{url}/s.tif",
                tmp_path / "s.tif",
                egress_session(),
                limits(min_rate_bytes_s=1000, rate_window_s=1.0),
            )
        )
    assert "slower than the 1000 bytes/s required" in error
    assert took < 30


def test_a_drip_faster_than_any_read_timeout_still_ends_by_the_deadline(tmp_path: Path) -> None:
    """A byte every 0.3 s: each read returns long before a read timeout would fire; with
    no minimum rate only the deadline ends it, in the body or in the headers."""
    target = tmp_path / "drip.tif"
    with serve({"/body": endless(pause_s=0.3, piece=b"d"), "/headers": header_drip}) as (url, _):
        for path in ("body", "headers"):
            error, took = failure(
                partial(download, f"{url}/{path}", target, egress_session(), limits(deadline_s=2.0))
            )
            assert "not complete after 2 s" in error, (path, error)
            assert "TILEKEEPER_HARVEST_DEADLINE_S" in error
            assert 1.5 < took < 30, (path, took)
            assert not target.exists()


def test_error_bodies_never_reach_the_message(tmp_path: Path) -> None:
    odd_reason = "Bad\x1b[2J\r\nGateway " + "w" * 5000
    routes = {
        "/gone": body(SECRET_BODY.encode(), 404),
        "/broken": body(SECRET_BODY.encode(), 500),
        "/odd": body(SECRET_BODY.encode(), 502, odd_reason),
    }
    with serve(routes) as (url, _):
        for path, expected in (("gone", "404 Not Found (a signed URL that expired"),
                               ("broken", "500 Internal Server Error"), ("odd", "502 Bad")):  # fmt: skip
            signed = f"{url}/{path}?X-Amz-Signature=abc"
            error, _ = failure(
                partial(download, signed, tmp_path / "e", egress_session(), limits())
            )
            assert expected in error, error
            assert "SECRET" not in error and "Signature" not in error
            assert "\x1b" not in error and "\n" not in error and len(error) < 500
            assert not (tmp_path / "e").exists()


def test_hrefs_to_the_metadata_service_are_refused(tmp_path: Path) -> None:
    for url in ("http://169.254.169.254/latest/meta-data/iam", "http://metadata.google.internal/"):
        error, _ = failure(partial(download, url, tmp_path / "m", egress_session(), limits()))
        assert "not downloaded" in error and "metadata" in error, error
    # Also as a redirect hop.
    with serve({"/": redirect("http://169.254.169.254/latest/meta-data/")}) as (url, _):
        error, _ = failure(
            lambda: download(f"{url}/r.tif", tmp_path / "m", egress_session(), limits())
        )
    assert "not downloaded" in error and "metadata" in error, error


def test_documents_are_bounded_and_must_be_json_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TILEKEEPER_RUNNER_MAX_ANSWER_BYTES", str(1 << 20))
    routes = {
        "/forever": endless(piece=b'{"a": "' + b"x" * 65536),
        "/announced": endless(pause_s=1.0, piece=b"{", length=10**10),
        "/html": body(b"<html>" + SECRET_BODY.encode()),
        "/list": body(b"[1, 2, 3]"),
        "/deep": body(b"[" * 100_000 + b"]" * 100_000),
        "/ok": body(json.dumps({"type": "Feature", "id": "x"}).encode()),
    }
    with serve(routes) as (url, _):
        session = egress_session()
        error, took = failure(lambda: read_json(f"{url}/forever", session))
        assert "more than the 1,048,576 bytes allowed" in error
        assert "TILEKEEPER_RUNNER_MAX_ANSWER_BYTES" in error and took < 30
        error, took = failure(lambda: read_json(f"{url}/announced", session))
        assert "announces 10,000,000,000 bytes" in error and took < 10
        error, _ = failure(lambda: read_json(f"{url}/html", session))
        assert "not a JSON document" in error and "SECRET" not in error
        error, _ = failure(lambda: read_json(f"{url}/list", session))
        assert "a JSON list, not an object" in error
        error, _ = failure(lambda: read_json(f"{url}/deep", session))
        assert "not a JSON document" in error
        assert read_json(f"{url}/ok", session) == {"type": "Feature", "id": "x"}


def test_fetch_tells_documents_from_files_by_their_first_bytes(tmp_path: Path) -> None:
    routes = {
        "/doc": body(b'\n  {"type": "Feature"}'),
        "/file": body(b"II*\x00" + b"\1" * 100_000),
        "/forever": endless(piece=b"{" + b" " * 65536),
    }
    file_limits = limits(max_bytes=1 << 30)
    documents = limits(max_bytes=1 << 20, size_setting="TILEKEEPER_RUNNER_MAX_ANSWER_BYTES")
    with serve(routes) as (url, _):
        session = egress_session()
        target = tmp_path / "t"
        assert fetch(f"{url}/doc", target, session, file_limits, documents) == {"type": "Feature"}
        assert not target.exists()
        assert fetch(f"{url}/file", target, session, file_limits, documents) is None
        assert target.read_bytes()[:4] == b"II*\x00" and target.stat().st_size == 100_004
        # A document is held to the document cap, not the file cap.
        error, took = failure(
            lambda: fetch(f"{url}/forever", target, session, file_limits, documents)
        )
        assert "1,048,576 bytes allowed" in error and "MAX_ANSWER_BYTES" in error and took < 30
        assert not target.exists()


def test_shown_urls_hold_no_secrets() -> None:
    shown = shown_url("https://user:pw@example.org:8443/a/b.tif?sig=1#frag")
    assert shown == "https://example.org:8443/a/b.tif"
    assert shown_url("http://[::1]:80/x?y") == "http://[::1]:80/x"
    assert (
        "\n" not in shown_url("http://h/a\nb") and len(shown_url("http://h/" + "a" * 10_000)) < 300
    )


# -- results documents ------------------------------------------------------------


GOOD_ASSET = {
    "href": "https://b.test/r.tif?sig=1", "type": "image/tiff", "title": "r",
    "file:size": 10, "file:checksum": "1220" + "ab" * 32, "datetime": "2024-06-01T00:00:00Z",
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"file:size": "10"}, "file:size: must be a non-negative integer"),
        ({"file:size": -1}, "file:size: must be a non-negative integer"),
        ({"file:size": True}, "file:size: must be a non-negative integer"),
        ({"file:checksum": "zz"}, "file:checksum: must be a multihash"),
        ({"file:checksum": "ab" * 1000}, "file:checksum: must be a multihash"),
        ({"href": "file:///etc/passwd"}, "href: must be an absolute http(s) URL"),
        ({"href": "r.tif"}, "href: must be an absolute http(s) URL"),
        ({"href": ["https://b.test/r.tif"]}, "href: must be an absolute http(s) URL"),
        ({"title": "t" * 10_000}, "title: must be a string of at most 500 characters"),
        ({"type": {"a": 1}}, "type: must be a string"),
        ({"datetime": "yesterday"}, "datetime: must be an RFC 3339 date"),
    ],
)
def test_results_documents_are_parsed_strictly(change: dict[str, Any], reason: str) -> None:
    parsed = parse_document({"assets": {"r.tif": GOOD_ASSET}}, "results")
    assert parsed.assets[0].metadata()["file:size"] == 10
    with pytest.raises(DocumentError) as caught:
        parse_document({"assets": {"r.tif": {**GOOD_ASSET, **change}}}, "results")
    assert reason in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "not a JSON object"),
        ({"assets": [GOOD_ASSET]}, "assets: must be an object"),
        ({"assets": {"r": "https://b.test/r.tif"}}, "an asset must be an object"),
        ({"assets": {f"a{n}": GOOD_ASSET for n in range(1001)}}, "more than 1,000"),
        ({"links": {"rel": "item"}}, "links: must be a list"),
        ({"links": [{"rel": "item", "href": 5}]}, "links[0].href"),
        ({"properties": []}, "properties: must be an object"),
        ({"providers": [{"processing:facility": "x" * 100_000}]}, "processing:*"),
        ({"id": 12}, "id: must be a string"),
    ],
)
def test_malformed_documents_fail_with_a_short_reason(doc: Any, reason: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document(doc, "results")
    assert reason in str(caught.value) and len(str(caught.value)) < 300


# -- the harvest against a hostile back-end ---------------------------------------


def capabilities(h: BaseHTTPRequestHandler) -> None:
    if h.path.startswith("/.well-known"):
        h.send_error(404)
        return
    send_json(h, json.dumps({
        "api_version": "1.2.0", "backend_version": "1", "stac_version": "1.0.0", "id": "hostile",
        "title": "hostile", "description": "a test back-end", "links": [],
        "endpoints": [{"path": "/jobs/{job_id}/results", "methods": ["GET"]}],
    }).encode())  # fmt: skip


def write_tile_raster(path: Path, proj_bbox: list[float]) -> bytes:
    """A small GeoTIFF covering the tile, in its CRS (EPSG:32631 here)."""
    west, _, _, north = proj_bbox
    with rasterio.open(
        path, "w", driver="GTiff", width=100, height=100, count=1, dtype="uint8",
        crs="EPSG:32631", transform=from_origin(west, north, 200, 200),
    ) as dst:  # fmt: skip
        dst.write(np.random.default_rng(1).integers(1, 255, (1, 100, 100), dtype="uint8"))
    return path.read_bytes()


class Hostile:
    """A campaign with tiles whose jobs live on a loopback openEO back-end serving a
    results document per job id (``docs``), and a Harvester for it."""

    def __init__(self, api: str, database: Database, backend_url: str) -> None:
        self.api = api
        self.http = HttpSession(api)
        self.campaign = f"dl-{uuid.uuid4().hex[:8]}"
        Campaigns(self.http).create({
            "id": self.campaign, "grid": "utm-20km", "temporal_extent": ["2024-03-01", "2024-09-30"],
            "backends": [{"name": "hostile", "url": backend_url, "parallel_jobs": 1, "auth": "none"}],
        })  # fmt: skip
        records = list(tile_records(tiles_for("utm-20km", load_aoi("4.0,50.5,4.05,50.55"))))
        Campaigns(self.http).register(self.campaign, records)
        self.tiles = {r["id"]: r for r in records}
        self.store = open_store(products_settings(database))
        self.connection = Connection(backend_url, session=egress_session(), auto_validate=False)
        self.connection.auth = BearerAuth(TOKEN)

    def finish(self, tile: str, job_id: str) -> None:
        for change in (
            {"tile": tile, "status": "queued_for_start", "set": {"openeo:job_id": job_id, "backend_name": "hostile"}},
            {"tile": tile, "status": "running"},
            {"tile": tile, "status": "finished"},
        ):  # fmt: skip
            self.http.post(
                f"campaigns/{self.campaign}/jobs/changes",
                json={"actor": "test", "changes": [change]},
            )

    def harvest(self) -> dict[str, dict[str, Any]]:
        """Harvest every finished tile; returns each tile's tilekeeper:product."""
        # Tries of a failure that may pass follow each other within moments.
        settings = HarvestSettings(retry_first_s=0.01, retry_max_s=0.05)
        harvester = Harvester(
            self.http, self.campaign, self.store, lambda _: self.connection, settings=settings
        )
        harvester.catch_up()
        harvester.wait()
        harvester.close()
        states = {}
        for tile in self.tiles:
            item = self.http.get(f"collections/{self.campaign}/items/{tile}")
            states[tile] = item["properties"].get("tilekeeper:product") or {}
        return states


def results_doc(assets: dict[str, Any]) -> Handler:
    def answer(h: BaseHTTPRequestHandler) -> None:
        send_json(h, json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": "r",
                                 "assets": assets, "links": []}).encode())  # fmt: skip

    return answer


def job(h: BaseHTTPRequestHandler) -> None:
    send_json(h, json.dumps({"id": h.path.split("/")[2], "status": "finished",
                             "process": {"process_graph": {}}}).encode())  # fmt: skip


def test_the_back_ends_token_goes_to_its_own_origin_only(
    api: str, database: Database, tmp_path: Path
) -> None:
    """Three result files: on the back-end, on another host (result storage with signed
    URLs), and on the back-end redirecting to the other host. Only the back-end's own
    requests carry its token; the tile is harvested."""
    records = list(tile_records(tiles_for("utm-20km", load_aoi("4.0,50.5,4.05,50.55"))))
    tif = write_tile_raster(tmp_path / "t.tif", records[0]["properties"]["proj:bbox"])
    storage_routes: dict[str, Handler] = {"/store/": body(tif)}
    with serve(storage_routes, host="127.0.0.2") as (storage, storage_seen):
        routes: dict[str, Handler] = {"/": capabilities, "/files/": body(tif)}
        with serve(routes) as (backend, backend_seen):
            routes["/redirect/"] = redirect(f"{storage}/store/c.tif?sig=1")
            routes["/jobs/j-tokens/results"] = results_doc({
                "a.tif": {"href": f"{backend}/files/a.tif", "type": "image/tiff"},
                "b.tif": {"href": f"{storage}/store/b.tif?sig=1", "type": "image/tiff"},
                "c.tif": {"href": f"{backend}/redirect/c.tif", "type": "image/tiff",
                          "file:size": len(tif)},
            })  # fmt: skip
            routes["/jobs/j-tokens"] = job
            world = Hostile(api, database, backend)
            tile = records[0]["id"]
            world.finish(tile, "j-tokens")
            states = world.harvest()
    sent = {path.split("?")[0]: auth for path, auth in backend_seen + storage_seen}
    assert sent["/jobs/j-tokens/results"] == f"Bearer {TOKEN}"
    assert sent["/files/a.tif"] == f"Bearer {TOKEN}"
    assert sent["/redirect/c.tif"] == f"Bearer {TOKEN}"
    assert sent["/store/b.tif"] is None  # another host: none
    assert sent["/store/c.tif"] is None  # the redirect away dropped it
    assert states[tile]["state"] == "ingested", states[tile]
    product = world.http.get(f"collections/{world.campaign}-products/items/{tile}")
    assert set(product["assets"]) >= {"a", "b", "c"}
    # The harvest's temporary folder is gone.
    assert not list(harvest_root().glob(f"{os.getpid()}-{tile}-*"))
    # `campaign delete --products` takes the product files along (a local store).
    files = Path(str(products_settings(database).store)) / f"{world.campaign}-products"
    assert any(p.suffix == ".tif" for p in files.rglob("*"))
    deleted = runner.invoke(
        app, ["campaign", "delete", world.campaign, "--products", "--yes", "--api", api]
    )
    assert deleted.exit_code == 0, deleted.output
    assert not files.exists()


def test_hostile_results_fail_their_tile_with_a_short_clear_reason(
    api: str, database: Database
) -> None:
    """A results document with a bad size, an asset at the metadata service, a 500
    with a 100 kB body: each tile fails with a short reason, never the body, and is
    recorded as failed (not left pending)."""
    records = list(tile_records(tiles_for("utm-20km", load_aoi("4.0,50.5,4.05,50.55"))))
    routes: dict[str, Handler] = {"/": capabilities, "/broken/": body(SECRET_BODY.encode(), 500)}
    with serve(routes) as (backend, backend_seen):
        first, second = (r["id"] for r in records[:2])
        routes["/jobs/j-meta/results"] = results_doc({
            "m.tif": {"href": "http://169.254.169.254/latest/meta-data/", "type": "image/tiff"},
        })  # fmt: skip
        routes["/jobs/j-body/results"] = results_doc({
            "b.tif": {"href": f"{backend}/broken/b.tif", "type": "image/tiff"},
            "x.tif": {"href": f"{backend}/broken/x.tif", "type": "image/tiff", "file:size": "big"},
        })  # fmt: skip
        routes["/jobs/"] = job
        world = Hostile(api, database, backend)
        world.finish(first, "j-meta")
        world.finish(second, "j-body")
        states = world.harvest()
        meta, bad = states[first], states[second]
        assert meta["state"] == "failed" and "cloud metadata" in meta["error"], meta
        assert "169.254.169.254" in meta["error"]
        assert bad["state"] == "failed"
        assert "file:size: must be a non-negative integer" in bad["error"]
        assert not [p for p, _ in backend_seen if p.startswith("/broken/")]  # refused before
        # The same tile again, its document now valid, its file a 500 with a long body.
        routes["/jobs/j-body/results"] = results_doc({
            "b.tif": {"href": f"{backend}/broken/b.tif?sig=zz", "type": "image/tiff"},
        })  # fmt: skip
        broken = world.harvest()[second]
    assert broken["state"] == "failed", broken
    # A 500 may pass: the file was asked for as many times as a harvest tries.
    tries = [p for p, _ in backend_seen if p.startswith("/broken/b.tif")]
    assert len(tries) == HarvestSettings().retry_tries
    assert "500 Internal Server Error" in broken["error"] and "sig=zz" not in broken["error"]
    for state in (meta, bad, broken):
        assert len(state["error"]) < MAX_ERROR and "SECRET" not in state["error"]


def test_a_job_id_that_leaves_the_jobs_path_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    def never(name: str) -> Connection:
        raise AssertionError("no back-end may be contacted")

    store = LocalStore(tmp_path / "store")
    harvester = Harvester(HttpSession("http://127.0.0.1:1/"), "c", store, never)
    for job_id in ("../../admin", "..", "a/b", "x" * 300, "j?x=1"):
        with pytest.raises(IngestError) as caught:
            harvester.harvest("T1", {"backend_name": "b", "openeo:job_id": job_id})
        assert "is not valid" in str(caught.value)
    harvester.close()


def test_stale_temporary_folders_of_dead_runs_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    dead = process.pid
    root = harvest_root()
    root.mkdir(mode=0o700, exist_ok=True)
    stale = root / f"{dead}-T1-abcd"
    (stale / "deep").mkdir(parents=True)
    (stale / "deep" / "r.tif").write_bytes(b"x" * 1000)
    alive = root / f"{os.getpid()}-T2-efgh"
    alive.mkdir()
    monkeypatch.setenv("TILEKEEPER_HARVEST_WORKERS", "3")
    store = LocalStore(tmp_path / "store")
    with caplog.at_level(logging.INFO, logger="ingest.harvest"):
        harvester = Harvester(HttpSession("http://127.0.0.1:1/"), "c", store, lambda _: None)  # type: ignore[arg-type,return-value]  # never connects
    try:
        assert not stale.exists() and alive.exists()
        assert "removed 1 temporary harvest folder(s)" in caplog.text
        assert harvester.pool._max_workers == 3
        assert remove_stale_folders() == 0
    finally:
        harvester.close()
        alive.rmdir()


# -- tilekeeper ingest URL --------------------------------------------------------


def test_ingest_urls_fail_one_by_one_and_say_what_to_do(
    api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """URL sources, one a collection whose item link answers HTML, one a 404 whose
    reason phrase looks like rich markup: the good one is ingested, each is reported,
    the command exits 1 and says what to do."""
    monkeypatch.setenv("TILEKEEPER_API_URL", api)
    records = list(tile_records(tiles_for("utm-20km", load_aoi("4.0,50.5,4.05,50.55"))))
    tif = write_tile_raster(tmp_path / "t.tif", records[0]["properties"]["proj:bbox"])
    collection = {
        "type": "Collection", "stac_version": "1.0.0", "id": "c", "description": "d",
        "links": [{"rel": "item", "href": "item.json"}], "assets": {},
    }  # fmt: skip
    routes = {
        "/c/collection.json": body(json.dumps(collection).encode()),
        "/c/item.json": body(b"<html>" + SECRET_BODY.encode()),
        "/good/G1.tif": body(tif),
        "/odd.tif": body(b"", 404, "Not [/] Found [bold]"),  # rich markup in remote text
    }
    target = f"products-dl-{uuid.uuid4().hex[:6]}"
    with serve(routes) as (url, _):
        result = runner.invoke(
            app,
            [
                "ingest",
                f"{url}/c/collection.json",
                f"{url}/good/G1.tif?sig=x",
                f"{url}/odd.tif",
                "--collection",
                target,
            ],
            env={"COLUMNS": "1000"},
        )
    assert result.exit_code == 1, result.output
    assert (
        f"failed: {url}/c/collection.json: {url}/c/item.json: not a JSON document" in result.output
    )
    assert f"failed: {url}/odd.tif: {url}/odd.tif: 404 Not [/] Found [bold]" in result.output
    assert "1 created" in result.output and "2 failed" in result.output
    assert "run the same command again" in result.output
    assert "SECRET" not in result.output and "Traceback" not in result.output
    items = HttpSession(api).get(f"collections/{target}/items")["features"]
    assert [i["id"] for i in items] == ["G1"]
