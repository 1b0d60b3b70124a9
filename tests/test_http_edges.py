"""CORS for browsers on other origins, links behind a reverse proxy (forwarded headers
believed from the configured proxies only), the security headers of every answer, and
large answers arriving whole (or failing clearly when they do not)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import numpy as np
import pytest
import requests
from support.database import Database, start_api, wait_ready
from support.servers import loopback_server, send_json

from catalog_service.api.headers import API_POLICY, TrustedAddresses, page_policy
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


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-For": "203.0.113.9",
}


# The links of a collection the service makes per request (others are stored as written).
MADE_LINKS = {"self", "parent", "root", "items"}


def _links(base: str, headers: dict[str, str]) -> list[str]:
    """The URLs the service makes from the request: the landing page's and the
    collections' links, and STAC Browser's catalogue."""
    landing = httpx.get(f"{base}/", headers=headers).json()
    collections = httpx.get(f"{base}/collections", headers=headers).json()
    config = httpx.get(f"{base}/browser/config.js", headers=headers).text
    catalogue = re.search(r'"catalogUrl": "([^"]*)"', config)
    assert catalogue, config
    return [
        *(link["href"] for link in landing["links"]),
        *(link["href"] for link in collections["links"]),
        *(
            link["href"]
            for c in collections["collections"]
            for link in c["links"]
            if link["rel"] in MADE_LINKS
        ),
        catalogue.group(1),
    ]


@pytest.mark.parametrize(
    "headers",
    [FORWARDED, {"Forwarded": "for=203.0.113.9;host=evil.example;proto=https"}],
    ids=["x-forwarded", "forwarded"],
)
def test_forwarded_headers_from_anyone_change_no_link(api: str, headers: dict[str, str]) -> None:
    # By default no address is a trusted proxy, not even this machine's.
    links = _links(api, headers)
    assert links and all(link.startswith(f"{api}/") for link in links), links
    page = httpx.get(f"{api}/campaigns", headers={**headers, "Accept": "text/html"}).text
    assert "evil.example" not in page


@pytest.fixture(scope="module")
def proxied_api(database: Database) -> Iterator[str]:
    """The service behind a proxy on this machine."""
    server = start_api(database, forwarded_allow_ips="127.0.0.1")
    wait_ready(server.url)
    yield server.url
    server.stop()


def test_forwarded_headers_from_the_proxy_shape_links(proxied_api: str) -> None:
    links = _links(proxied_api, FORWARDED)
    assert links and all(link.startswith("https://evil.example:8443/") for link in links), links
    landing = httpx.get(
        f"{proxied_api}/", headers={"Forwarded": "host=stac.example.org;proto=https"}
    ).json()
    self_link = next(link["href"] for link in landing["links"] if link["rel"] == "self")
    assert self_link == "https://stac.example.org/"


def test_trusted_addresses_read_like_uvicorns() -> None:
    assert not TrustedAddresses("") and not TrustedAddresses(" , ")
    assert "127.0.0.1" not in TrustedAddresses("")
    proxies = TrustedAddresses("127.0.0.1, 10.0.0.0/8, ::1, /run/proxy.sock")
    assert all(a in proxies for a in ("127.0.0.1", "10.1.2.3", "::1", "/run/proxy.sock"))
    assert not any(a in proxies for a in ("11.0.0.1", "127.0.0.2", "::2", "proxy"))
    assert "203.0.113.9" in TrustedAddresses("*")


@pytest.fixture(scope="module")
def prefixed_api(database: Database) -> Iterator[str]:
    server = start_api(database, root_path="/stac", forwarded_allow_ips="127.0.0.1")
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


# An inline script: a <script> element without src (STAC Browser's index.html has none).
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


def test_every_answer_says_nosniff_and_pages_run_only_the_services_scripts(
    api: str, http: httpx.Client
) -> None:
    campaign = f"heads-{uuid.uuid4().hex[:6]}"
    Campaigns(HttpSession(api)).create({"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-01-01", "2024-12-31"]})  # fmt: skip
    html = {"Accept": "text/html"}
    pages = {
        "/browser/": http.get("/browser/"),
        "/api.html": http.get("/api.html"),
        "/campaigns": http.get("/campaigns", headers=html),
        "map": http.get(f"/campaigns/{campaign}/map"),
    }
    for name, page in pages.items():
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == page_policy(None), name
        assert page.headers["x-content-type-options"] == "nosniff", name
        assert page.headers["x-frame-options"] == "DENY", name
        assert not INLINE_SCRIPT.search(page.text), name
    directives = dict(d.strip().split(" ", 1) for d in page_policy(None).split(";"))
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    # Scripts carry the pages' policy (it governs a worker they start).
    script = http.get("/static/map/map.js")
    assert script.headers["content-security-policy"] == page_policy(None)
    # STAC Browser's download helper may be framed by STAC Browser itself, and has its
    # script as a file.
    helper = http.get("/browser/mitm.html")
    assert "frame-ancestors 'self'" in helper.headers["content-security-policy"]
    assert helper.headers["x-frame-options"] == "SAMEORIGIN"
    assert not INLINE_SCRIPT.search(helper.text)
    # FastAPI's OAuth2 redirect page for Swagger UI (an inline script; no OAuth2 flow here)
    # is not served.
    assert http.get("/docs/oauth2-redirect").status_code == 404
    # A revalidated page keeps the policy it was cached with: a 304 carries none.
    again = http.get("/browser/", headers={"If-None-Match": pages["/browser/"].headers["etag"]})
    assert again.status_code == 304 and "content-security-policy" not in again.headers
    # Everything else allows nothing; errors of every layer say nosniff too.
    others = [
        http.get("/"),
        http.get("/collections"),
        http.get("/api"),
        http.get("/collections/absent"),  # 404
        http.get(f"/campaigns/{campaign}/tiles/0/0/0.pbf"),
        http.post("/search", content=b"x", headers={"Content-Type": "text/plain"}),  # 415
        http.get("/static/swagger-ui/swagger-ui.css"),
    ]
    assert {r.status_code for r in others} >= {200, 404, 415}
    for answer in others:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url
        assert answer.headers["content-security-policy"] == API_POLICY, answer.url
        assert answer.headers["x-frame-options"] == "DENY", answer.url


def test_large_answers_come_whole_through_requests(api: str) -> None:
    # Upstream compresses with brotli, which requests (urllib3 2.8, Brotli 1.2) cuts short
    # on some large answers; the service answers gzip even to a client offering br.
    campaigns = Campaigns(HttpSession(api))
    campaign = f"big-{uuid.uuid4().hex[:6]}"
    campaigns.create({"id": campaign, "grid": "utm-10km", "temporal_extent": ["2024-01-01", "2024-12-31"]})  # fmt: skip
    every = tiles_for("utm-10km", load_aoi("-25,-40,-5,-20"))
    tiles = every.take(np.arange(len(every)) < 12_000)  # the first 12,000
    campaigns.register(campaign, tile_records(tiles))
    params: dict[str, str | int] = {"status": "not_started", "limit": 12_000}
    answer = requests.get(
        f"{api}/campaigns/{campaign}/jobs",
        params=params,
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
