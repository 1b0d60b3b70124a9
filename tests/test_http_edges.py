"""CORS for browsers on other origins, and links behind a reverse proxy."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import Database, start_api, wait_ready


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
