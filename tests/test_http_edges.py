"""CORS for browsers on other origins, links behind a reverse proxy, and large answers
arriving whole (or failing clearly when they do not)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import requests
from conftest import Database, loopback_server, send_json, start_api, wait_ready

from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import BrokenAnswer, HttpSession
from catalog_service.grids import load_aoi, tiles_for


def test_cors_preflight_allows_authorised_writes(http: httpx.Client) -> None:
    response = http.options(
        "/collections/x/items/y",
        headers={
            "Origin": "https://browser.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    allowed_methods = response.headers["access-control-allow-methods"]
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= {
        m.strip() for m in allowed_methods.split(",")
    }
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_cors_on_reads_and_errors(http: httpx.Client) -> None:
    origin = {"Origin": "https://browser.example"}
    assert http.get("/", headers=origin).headers["access-control-allow-origin"] == "*"
    missing = http.get("/collections/absent", headers=origin)
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == "*"


def test_forwarded_headers_shape_links(http: httpx.Client) -> None:
    landing = http.get(
        "/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "stac.example.org"}
    ).json()
    self_link = next(link["href"] for link in landing["links"] if link["rel"] == "self")
    assert self_link == "https://stac.example.org/"


@pytest.fixture(scope="module")
def prefixed_api(database: Database) -> Iterator[str]:
    server = start_api(database, root_path="/stac")
    wait_ready(server.url)
    yield server.url
    server.stop()


def test_root_path_behind_proxy(prefixed_api: str) -> None:
    # The proxy strips /stac before forwarding; links must carry it again.
    landing = httpx.get(prefixed_api + "/", headers={"X-Forwarded-Host": "gw.example"}).json()
    hrefs = {link["rel"]: link["href"] for link in landing["links"]}
    assert hrefs["self"] == "http://gw.example/stac/"
    assert hrefs["search"] == "http://gw.example/stac/search"
    assert hrefs["aggregate"] == "http://gw.example/stac/aggregate"


def test_large_answers_come_whole_through_requests(api: str) -> None:
    # Upstream compresses with brotli, which requests (urllib3 2.8, Brotli 1.2) cuts short
    # on some large answers; the service answers gzip even to a client offering br.
    campaigns = Campaigns(HttpSession(api))
    campaign = f"big-{uuid.uuid4().hex[:6]}"
    campaigns.create({"id": campaign, "grid": "utm-10km", "temporal_extent": ["2024-01-01", "2024-12-31"]})  # fmt: skip
    tiles = tiles_for("utm-10km", load_aoi("-25,-40,-5,-20")).take(slice(0, 12_000))
    campaigns.register(campaign, tile_records(tiles))
    answer = requests.get(
        f"{api}/campaigns/{campaign}/jobs",
        params={"status": "not_started", "limit": 12_000},
        headers={"Accept-Encoding": "gzip, deflate, br"},
        timeout=60,
    )
    assert answer.headers["content-encoding"] == "gzip"
    assert len(answer.json()["jobs"]) == 12_000
    read = campaigns.iter_jobs(campaign, ["not_started"], page_size=5_000)
    assert sum(1 for _ in read) == 12_000


class _CutShort(BaseHTTPRequestHandler):
    """A proxy that loses the end of a JSON answer (its length header still matching)."""

    def do_GET(self) -> None:
        send_json(self, b'{"jobs": [{"tile": "a"}, {"ti')

    def log_message(self, *args: object) -> None:
        pass


def test_a_json_answer_cut_short_is_a_clear_error() -> None:
    with loopback_server(_CutShort) as port:
        http = HttpSession(f"http://127.0.0.1:{port}", api_key="k")
        with pytest.raises(BrokenAnswer, match="cut short on the way"):
            http.get("campaigns/x/jobs")
