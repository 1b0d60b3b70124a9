"""The service behind a real reverse proxy with a path prefix, checked from outside with
real clients (issue: "keep it fixed with the real client in the test suite").

Debian's nginx (run here as a child process, on a free loopback port, with its own
prefix, pid, logs and temp paths) serves the API under ``/tk/`` with the prefix stripped,
sending ``X-Forwarded-Proto/Host/Port`` as a deployment does; the API runs with
``root_path=/tk`` and trusts 127.0.0.1. Clients reach it as ``http://localhost:<port>/tk/``
only, so an href that leaks the API's own address (``127.0.0.1:<api port>``) or drops the
prefix is caught.

- a crawler follows every link and asset href of the JSON answers from the landing page
  (and the HTML pages' scripts and styles): all under the proxy URL, all answering 2xx;
- OGR over ``OAPIF:`` reads a campaign with its tile ids and ``openeo:job_id`` apart;
- pystac-client sorts, counts, pages and reads queryables through the proxy;
- ``tilekeeper export --format geoparquet`` through the proxy, read back by duckdb;
- STAC Browser (headless Chromium) shows a product item with its map and download link.

Everything runs on a database of its own (the crawl then sees this module's data only,
whatever else the session made). Skipped only when nginx is not installed
(scripts/bootstrap.sh installs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Request
from support.browser import shot, wait_for_thumbnail
from support.cli import runner
from support.database import Database, admin_token, own_database, products_settings, start_api
from support.rasters import write_raster

from catalog_service.api.server import ServerThread, free_port
from catalog_service.cli.main import app
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.ids import campaign_products_id

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (apt-get install nginx)"
)

PREFIX = "/tk"
# 6 tiles of the 20 km UTM grid (31U, EPSG:32631) around Brussels' south-west.
AOI = "4.0,50.5,4.6,50.7"
# Tiles moved through jobs (running, then finished) with an openEO job id, and of those,
# the ones with a product (a small COG inside the tile).
WITH_JOBS = 4
WITH_PRODUCTS = 3
MAX_FETCHES = 400
# Hosts a served href may name that are not this service: the JSON schemas of the STAC
# extensions the items and collections declare, and the back-end that ran a job (`via`).
EXTERNAL_HOSTS = {"stac-extensions.github.io", "schemas.stacspec.org", "api.stacspec.org"}
BACKEND_URL = "https://openeo.backend.test/openeo/1.2/"


@dataclass
class Proxy:
    """nginx in front of the API: ``url`` is what clients are given."""

    url: str  # http://localhost:<port>/tk/
    port: int
    api: ServerThread
    process: subprocess.Popen[bytes]
    prefix: Path

    def log(self) -> str:
        parts = []
        for name in ("error.log", "access.log"):
            path = self.prefix / "logs" / name
            if path.exists():
                parts.append(f"--- nginx {name} ---\n{path.read_text()[-5000:]}")
        return "\n".join(parts)


NGINX_CONF = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{ return 404; }}
        location = {path} {{ return 301 {path}/; }}
        location {path}/ {{
            # The prefix is stripped (the trailing slash of proxy_pass); the Host header
            # the API gets is its own (nginx's default), the public one comes forwarded.
            proxy_pass http://127.0.0.1:{api_port}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


def nginx_version() -> str:
    done = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip()


def start_nginx(api_port: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    prefix = Path(tempfile.mkdtemp(prefix="tilekeeper-nginx-"))
    for sub in ("logs", "temp"):
        (prefix / sub).mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, path=PREFIX, api_port=api_port))
    check = subprocess.run(
        [NGINX, "-t", "-q", "-c", str(conf), "-p", str(prefix)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    # As root, nginx's workers run as nobody: they must reach the temp paths (the master
    # creates them there, theirs).
    prefix.chmod(0o755)
    process = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                errors = prefix / "logs" / "error.log"
                log = errors.read_text() if errors.exists() else ""
                raise RuntimeError(f"nginx did not start: {log}") from None
            time.sleep(0.1)
    return process, port, prefix


@pytest.fixture(scope="module")
def proxy_database() -> Iterator[Database]:
    with own_database("tilekeeper-proxy-") as db:
        yield db


@pytest.fixture(scope="module")
def proxy(proxy_database: Database) -> Iterator[Proxy]:
    api = start_api(proxy_database, root_path=PREFIX, forwarded_allow_ips="127.0.0.1")
    # This cluster's own key: the session's TILEKEEPER_API_KEY (or a demo's admin key on
    # this machine) is unknown here, and health answers 401 to an unknown key.
    HttpSession(api.url, api_key=admin_token(proxy_database)).wait_ready(120)
    process, port, prefix = start_nginx(api.settings.port)
    proxy = Proxy(f"http://localhost:{port}{PREFIX}/", port, api, process, prefix)
    print(f"\n{nginx_version()} at {proxy.url} -> {api.url}")
    try:
        yield proxy
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        api.stop()
        shutil.rmtree(prefix, ignore_errors=True)


@dataclass
class World:
    """What was made through the proxy."""

    proxy: Proxy
    key: str  # the admin key of the module's database
    store: str  # its local product store
    campaign: str
    tiles: list[str]  # registered, in order
    jobs: dict[str, str]  # tile -> openEO job id
    products: dict[str, str]  # product item id -> tile
    folder: Path

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def product_collection(self) -> str:
        return campaign_products_id(self.campaign)

    def env(self) -> dict[str, str]:
        """The CLI's environment: the proxy URL, this database's key and store."""
        return {
            "TILEKEEPER_API_URL": self.url,
            "TILEKEEPER_API_KEY": self.key,
            "TILEKEEPER_PRODUCTS_STORE": self.store,
            "COLUMNS": "1000",
        }


def cli(world: World, *args: str) -> str:
    result = runner.invoke(app, list(args), env=world.env())
    assert result.exit_code == 0, f"tilekeeper {' '.join(args)}:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def world(
    proxy: Proxy, proxy_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> World:
    """A campaign of 6 tiles registered through the proxy, 4 moved to finished with an
    openEO job id, 3 with a COG product ingested by `tilekeeper ingest` through the proxy."""
    key = admin_token(proxy_database)
    store = products_settings(proxy_database).store
    assert store
    http = HttpSession(proxy.url, api_key=key)
    campaigns = Campaigns(http)
    campaign = f"proxied-{uuid.uuid4().hex[:6]}"
    campaigns.create(
        {"id": campaign, "title": f"Campaign {campaign}", "grid": "utm-20km",
         "temporal_extent": ["2024-03-01", "2024-09-30"],
         "backends": [{"name": "a", "url": BACKEND_URL, "auth": "none"}]}
    )  # fmt: skip
    records = list(tile_records(tiles_for("utm-20km", load_aoi(AOI))))
    assert len(records) >= WITH_JOBS + 1, len(records)
    campaigns.register(campaign, records)
    tiles = [r["id"] for r in records]
    jobs = {tile: f"j-{n}" for n, tile in enumerate(tiles[:WITH_JOBS])}
    for status in ("running", "finished"):
        campaigns.change(
            campaign,
            [
                {"tile": tile, "status": status, "set": {"openeo:job_id": job, "backend_name": "a"}}
                for tile, job in jobs.items()
            ],
        )
    folder = tmp_path_factory.mktemp("proxied-products")
    products: dict[str, str] = {}
    by_id = {r["id"]: r for r in records}
    world = World(proxy, key, store, campaign, tiles, jobs, products, folder)
    for n, tile in enumerate(tiles[:WITH_PRODUCTS]):
        west, _, _, north = by_id[tile]["properties"]["proj:bbox"]
        raster = write_raster(
            folder / f"{tile}.tif", count=1, size=100, seed=n, origin=(west + 2000, north - 2000)
        )
        cli(world, "ingest", str(raster), "--campaign", campaign, "--tile", tile)
        products[tile] = tile
    return world


# -- a: every href, followed from the landing page --------------------------------------


@dataclass
class Crawl:
    """What the crawler saw: every href found (with the document it was found in) and
    every answer of the fetched ones."""

    found: dict[str, str] = field(default_factory=dict)  # href -> where it was found
    answers: dict[str, int] = field(default_factory=dict)  # fetched url -> status
    fetches: int = 0


def _hrefs(doc: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Every link and asset of a JSON document (links and assets at any depth: items in
    a FeatureCollection, collections in /collections, item_assets are not hrefs)."""
    if isinstance(doc, dict):
        for link in doc.get("links", []) if isinstance(doc.get("links"), list) else []:
            if isinstance(link, dict) and isinstance(link.get("href"), str):
                yield link, "link"
        assets = doc.get("assets")
        if isinstance(assets, dict):
            for asset in assets.values():
                if isinstance(asset, dict) and isinstance(asset.get("href"), str):
                    yield asset, "asset"
        for key, value in doc.items():
            if key not in ("links", "assets", "item_assets") and isinstance(value, dict | list):
                yield from _hrefs(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _hrefs(value)


def crawl(client: httpx.Client, start: list[str], limit: int = MAX_FETCHES) -> Crawl:
    """Breadth-first from ``start``: JSON answers are read for more hrefs; assets (files)
    are fetched with a HEAD and a ranged GET; hrefs off this service are not fetched."""
    base = str(client.base_url)
    seen = Crawl()
    queue: deque[tuple[str, str, dict[str, Any]]] = deque((url, "GET", {}) for url in start)
    for url in start:
        seen.found[url] = "(start)"
    fetched: set[tuple[str, str, str]] = set()
    while queue and seen.fetches < limit:
        url, method, extra = queue.popleft()
        body = extra.get("body")
        key = (url, method, json.dumps(body, sort_keys=True))
        if key in fetched:
            continue
        fetched.add(key)
        seen.fetches += 1
        if extra.get("asset"):
            head = client.head(url)
            ranged = client.get(url, headers={"Range": "bytes=0-1023"})
            seen.answers[url] = head.status_code if head.is_error else ranged.status_code
            continue
        if method == "POST":
            answer = client.post(url, json=body or {})
        else:
            answer = client.get(url, headers={"Accept": "application/json"})
        seen.answers[f"{method} {url}" if method != "GET" else url] = answer.status_code
        if "json" not in answer.headers.get("content-type", ""):
            continue
        for obj, kind in _hrefs(answer.json()):
            href = str(obj["href"])
            seen.found.setdefault(href, url)
            if not href.startswith(base) or obj.get("templated"):
                continue
            if obj.get("rel") == "xyz":  # a web map's tile template: its world tile
                href = href.replace("{z}", "0").replace("{x}", "0").replace("{y}", "0")
            if kind == "asset":
                queue.append((href, "GET", {"asset": True}))
            elif obj.get("method", "GET").upper() == "POST":
                queue.append((href, "POST", {"body": obj.get("body")}))
            elif obj.get("rel") == "search" and obj.get("method", "GET").upper() != "GET":
                continue
            else:
                queue.append((href, "GET", {}))
    return seen


def allowed_external(href: str) -> bool:
    host = urlsplit(href).hostname or ""
    return host in EXTERNAL_HOSTS or href.startswith(BACKEND_URL)


def test_every_href_follows_the_proxy_and_answers(world: World) -> None:
    base = world.url
    c, p = world.campaign, world.product_collection
    # The landing page leads to most; the campaign routes and the aggregations are not
    # all linked from it, so they start the crawl too.
    start = [
        base,
        f"{base}campaigns",
        f"{base}campaigns/{c}",
        f"{base}campaigns/{c}/jobs",
        f"{base}campaigns/{c}/summary",
        f"{base}campaigns/{c}/counts",
        f"{base}campaigns/{c}/jobs?status=finished",
        f"{base}campaigns/{c}/jobs?tile={world.tiles[0]}",
        f"{base}campaigns/{c}/jobs/{world.tiles[0]}/history",
        f"{base}search?collections={c}&limit=2",
        f"{base}search?collections={p}&limit=1",
        f"{base}collections/{c}/items?limit=2",
        f"{base}collections/{c}/queryables",
        f"{base}collections/{p}/queryables",
        f"{base}queryables",
        f"{base}aggregations",
        f"{base}collections/{c}/aggregations",
        f"{base}collections/{c}/aggregate?aggregations=total_count",
    ]
    with httpx.Client(base_url=base, timeout=60) as client:
        seen = crawl(client, start)
    print(f"\n{seen.fetches} fetches, {len(seen.found)} distinct hrefs")
    leaked = {
        href: where
        for href, where in seen.found.items()
        if not href.startswith(base) and not allowed_external(href)
    }
    failed = {url: status for url, status in seen.answers.items() if not 200 <= status < 300}
    assert seen.fetches < MAX_FETCHES, "the crawl did not end: raise MAX_FETCHES?"
    # The crawl reached what it must: every item page of the campaign (paged by its
    # `next` links), each product's files, the queryables.
    fetched = set(seen.answers)
    for tile in world.tiles:
        assert f"{base}collections/{c}/items/{tile}" in fetched, tile
    for product in world.products:
        assert f"{base}collections/{p}/items/{product}" in fetched, product
        assert any(u.startswith(f"{base}products/files/") and product in u for u in fetched)
    assert leaked == {}, "hrefs not under the proxy URL (href: found in)"
    assert failed == {}, "hrefs that did not answer 2xx through the proxy"


class PageRefs(HTMLParser):
    """The URLs an HTML page loads or links: script src, link href (styles, icons), img
    src, a href, and a <base href> they are relative to."""

    def __init__(self) -> None:
        super().__init__()
        self.base: str | None = None
        self.loads: list[str] = []  # scripts, styles, icons, images: fetched by the page
        self.links: list[str] = []  # anchors: followed by a person

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v is not None}
        if tag == "base" and "href" in values:
            self.base = values["href"]
        elif tag in ("script", "img") and "src" in values:
            self.loads.append(values["src"])
        elif tag == "link" and "href" in values:
            self.loads.append(values["href"])
        elif tag == "a" and "href" in values:
            self.links.append(values["href"])


def test_pages_load_their_scripts_and_styles_through_the_proxy(world: World) -> None:
    base = world.url
    c = world.campaign
    pages = ["browser/", "campaigns", f"campaigns/{c}/map", "api.html"]
    leaked: dict[str, list[str]] = {}
    failed: dict[str, int] = {}
    with httpx.Client(base_url=base, timeout=60, headers={"Accept": "text/html"}) as client:
        # The bare prefix and /browser redirect to where they are, under the prefix.
        for path, to in ((PREFIX, base), (f"{PREFIX}/browser", f"{base}browser/")):
            moved = client.get(f"http://localhost:{world.proxy.port}{path}")
            assert moved.is_redirect, (path, moved.status_code)
            assert urljoin(str(moved.url), moved.headers["location"]) == to, moved.headers
        config = client.get("browser/config.js")
        assert config.status_code == 200
        assert f'"catalogUrl": "{base}"' in config.text, config.text
        for page in pages:
            answer = client.get(page)
            if answer.status_code != 200 or "html" not in answer.headers.get("content-type", ""):
                failed[f"{base}{page} (page)"] = answer.status_code
                continue
            refs = PageRefs()
            refs.feed(answer.text)
            where = urljoin(str(answer.url), refs.base) if refs.base else str(answer.url)
            loads = [urljoin(where, ref) for ref in refs.loads]
            links = [urljoin(where, ref).split("#")[0] for ref in refs.links]
            assert loads, f"{page}: no script or style found"
            leaked[page] = [u for u in loads + links if not u.startswith(base)]
            for url in dict.fromkeys(loads + links):
                if url.startswith(base):
                    got = client.get(url)
                    if not got.is_success:
                        failed[f"{url} (from {page})"] = got.status_code
    assert {page: urls for page, urls in leaked.items() if urls} == {}
    assert failed == {}


@pytest.mark.parametrize(
    "forwarded",
    [
        "host=evil.example;proto=https",  # a client choosing where every link points
        "for=10.1.2.3",  # a forward proxy in front of the client: host and port stay
        'host="b.example:444";proto=https',
    ],
)
def test_a_clients_forwarded_header_does_not_move_the_links(world: World, forwarded: str) -> None:
    """nginx passes a client's ``Forwarded`` on untouched beside the X-Forwarded-* it
    sets; the API believes the proxy's convention, not the client's header."""
    answer = httpx.get(world.url, headers={"Forwarded": forwarded}, timeout=30)
    assert answer.status_code == 200
    hrefs = [link["href"] for link in answer.json()["links"]]
    assert hrefs and all(h.startswith(world.url) for h in hrefs), hrefs
    config = httpx.get(
        f"{world.url}browser/config.js", headers={"Forwarded": forwarded}, timeout=30
    )
    assert f'"catalogUrl": "{world.url}"' in config.text


# -- b: OGR over OAPIF: -----------------------------------------------------------------


def ogr(*args: str) -> subprocess.CompletedProcess[str]:
    """A GDAL/OGR utility as a user runs it (no HTTP proxy of the environment)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["GDAL_HTTP_TIMEOUT"] = "30"
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=180, check=False)


@pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="apt-get install gdal-bin")
def test_ogr_reads_a_campaign_with_its_tile_ids_and_job_ids(world: World, tmp_path: Path) -> None:
    source = f"OAPIF:{world.url}"
    info = ogr("ogrinfo", "-ro", "-al", "-so", source, world.campaign)
    assert info.returncode == 0, info.stderr
    print(f"\n{ogr('ogrinfo', '--version').stdout.strip()}")
    fields = dict(
        line.strip().split(": ", 1)
        for line in info.stdout.splitlines()
        if line.startswith(("id: ", "openeo:job_id: ", "status: "))
    )
    # The tile id and the job id are two fields (the job id once was `id` too, where
    # OGR took the property over the feature's id).
    assert fields.get("id", "").startswith("String"), info.stdout
    assert fields.get("openeo:job_id", "").startswith("String"), info.stdout
    assert f"Feature Count: {len(world.tiles)}" in info.stdout, info.stdout

    out = tmp_path / "campaign.geojson"
    done = ogr("ogr2ogr", "-f", "GeoJSON", str(out), source, world.campaign)
    assert done.returncode == 0, done.stderr
    features = json.loads(out.read_text())["features"]
    ids = [f["properties"].get("id") for f in features]
    assert sorted(ids) == sorted(world.tiles)  # each tile once, by its id
    assert jobs_of(features) == world.jobs
    assert set(world.jobs.values()).isdisjoint(world.tiles)


def jobs_of(features: list[dict[str, Any]]) -> dict[str, str]:
    return {
        f["properties"]["id"]: f["properties"]["openeo:job_id"]
        for f in features
        if f["properties"].get("openeo:job_id") is not None
    }


@pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="apt-get install gdal-bin")
def test_ogr_pages_keep_the_job_id_field(world: World, tmp_path: Path) -> None:
    """A campaign bigger than a page, as every real one is: OGR pages through the
    proxy's `next` links (2 by 2 here) and finds every tile, and the job ids of the later
    pages. OGR (3.6) makes the layer's fields from the first page: the first tiles served
    (the highest orders, not started) have no ``openeo:job_id`` (absent, not null), so
    unless the service tells OGR its fields another way the field is missing."""
    out = tmp_path / "paged.geojson"
    source = f"OAPIF:{world.url}"
    done = ogr("ogr2ogr", "-f", "GeoJSON", "-oo", "PAGE_SIZE=2", str(out), source, world.campaign)
    assert done.returncode == 0, done.stderr
    features = json.loads(out.read_text())["features"]
    assert sorted(f["properties"].get("id") for f in features) == sorted(world.tiles)
    assert jobs_of(features) == world.jobs


# -- c: pystac-client -------------------------------------------------------------------


def test_pystac_client_sorts_counts_pages_and_reads_queryables(world: World) -> None:
    from pystac_client import Client, CollectionClient

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = Client.open(world.url)
        assert client.get_self_href() == world.url
        ordered = client.search(
            collections=[world.campaign], sortby="-tilekeeper:order", max_items=None
        )
        orders = [item.properties["tilekeeper:order"] for item in ordered.items()]
        counted = client.search(collections=[world.campaign], limit=2)
        matched = counted.matched()
        pages = list(counted.pages())
        paged = [item for page in pages for item in page.items]
        queryables = client.get_queryables()
        campaign = client.get_collection(world.campaign)
        assert isinstance(campaign, CollectionClient)
        collection_queryables = campaign.get_queryables()
        jobs = client.search(
            collections=[world.campaign],
            filter={"op": "=", "args": [{"property": "openeo:job_id"}, "j-1"]},
            filter_lang="cql2-json",
        )
        found = [item.id for item in jobs.items()]
        products = list(client.search(collections=[world.product_collection]).items())
    assert orders == sorted(range(len(world.tiles)), reverse=True)
    assert matched == len(world.tiles)
    assert len(pages) == (len(world.tiles) + 1) // 2
    assert sorted(item.id for item in paged) == sorted(world.tiles)
    # Every page's links and every item's self link came through the proxy.
    for item in paged:
        assert (item.get_self_href() or "").startswith(world.url), item.get_self_href()
    assert "openeo:job_id" in queryables["properties"], sorted(queryables["properties"])
    assert "openeo:job_id" in collection_queryables["properties"]
    assert found == [tile for tile, job in world.jobs.items() if job == "j-1"]
    hrefs = [asset.href for item in products for asset in item.assets.values()]
    assert hrefs and all(href.startswith(f"{world.url}products/files/") for href in hrefs), hrefs
    conformance = [str(w.message) for w in caught if "conform" in str(w.message).lower()]
    assert conformance == []


# -- d: geoparquet export, read back by duckdb ------------------------------------------


def parquet_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    import duckdb

    with duckdb.connect() as con:
        relation = con.sql(f"SELECT * FROM read_parquet('{path}')")
        columns = list(relation.columns)
        rows = [dict(zip(columns, row, strict=True)) for row in relation.fetchall()]
    return columns, rows


def served(world: World, collection: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{world.url}collections/{collection}/items", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    features: list[dict[str, Any]] = answer.json()["features"]
    return features


def test_geoparquet_exports_read_back_by_duckdb(world: World, tmp_path: Path) -> None:
    import duckdb

    print(f"\nduckdb {duckdb.__version__}")
    products = tmp_path / "products.parquet"
    cli(world, "export", world.product_collection, str(products), "--format", "geoparquet")
    columns, rows = parquet_rows(products)
    items = served(world, world.product_collection)
    properties = {key for item in items for key in item["properties"]}
    assert properties - set(columns) == set(), f"properties without a column: {columns}"
    assert sorted(row["id"] for row in rows) == sorted(world.products)
    hrefs = [asset["href"] for row in rows for asset in row["assets"].values() if asset]
    assert len(hrefs) == 2 * len(world.products), rows[0]["assets"]  # data + thumbnail
    assert all(href.startswith(f"{world.url}products/files/") for href in hrefs), hrefs
    links = [link["href"] for row in rows for link in row.get("links") or []]
    assert all(href.startswith(world.url) for href in links), links

    jobs = tmp_path / "campaign.parquet"
    cli(world, "export", world.campaign, str(jobs), "--format", "geoparquet")
    columns, rows = parquet_rows(jobs)
    properties = {key for item in served(world, world.campaign) for key in item["properties"]}
    assert properties - set(columns) == set(), f"properties without a column: {columns}"
    assert "id" in columns and "openeo:job_id" in columns
    assert sorted(row["id"] for row in rows) == sorted(world.tiles)
    exported = {row["id"]: row["openeo:job_id"] for row in rows if row["openeo:job_id"]}
    assert exported == world.jobs


# -- e: STAC Browser, through the proxy -------------------------------------------------


def test_stac_browser_shows_a_product_through_the_proxy(world: World, browser: Browser) -> None:
    product = next(iter(world.products))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    failed: list[str] = []

    def record(request: Request) -> None:
        requests.append(request.url)

    page.on("request", record)
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.on(
        "response", lambda r: failed.append(f"{r.url}: {r.status}") if r.status >= 400 else None
    )
    answered: list[str] = []
    page.on("response", lambda r: answered.append(r.url) if r.status == 200 else None)
    try:
        page.goto(f"{world.url}browser/#/collections/{world.product_collection}/items/{product}")
        page.get_by_text("EPSG:32631").first.wait_for(timeout=30_000)
        # The thumbnail, drawn on the map over the item's footprint, was fetched through
        # the proxy and decoded.
        wait_for_thumbnail(page)
        # The COG itself is drawn on the map, in tiles from the raster service through
        # the proxy (the browser's configuration builds their URLs).
        tiles = f"{world.url}raster/collections/{world.product_collection}/items/{product}/tiles/"
        for _ in range(120):
            if any(u.startswith(tiles) for u in answered):
                break
            page.wait_for_timeout(250)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.ol-viewport canvas')]"
            ".some(c => c.width > 0 && c.height > 0)",
            timeout=30_000,
        )
        thumbnails = page.eval_on_selector_all(
            "img[src*='thumbnail.png']", "imgs => imgs.map(img => img.src)"
        )
        # The data asset is offered for download from under the proxy URL.
        downloads = page.eval_on_selector_all(
            "a[href*='data.tif']", "links => links.map(a => a.href)"
        )
    finally:
        shot(page, "proxy-browser-product")  # also of what a failure looked like
        page.close()
    assert thumbnails and all(src.startswith(f"{world.url}products/files/") for src in thumbnails)
    assert downloads and all(href.startswith(f"{world.url}products/files/") for href in downloads)
    for href in set(downloads):
        assert httpx.head(href).status_code == 200, href
    drawn = [u for u in answered if "/raster/" in u]
    assert drawn and all(u.startswith(f"{world.url}raster/collections/") for u in drawn), requests
    left = [u for u in requests if not u.startswith((world.url, "data:", "blob:"))]
    assert left == [], "requests off the proxy URL"
    assert failed == []
