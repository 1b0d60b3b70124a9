"""Fixtures: a real PostgreSQL + PostGIS + pgstac cluster started by the same code as
`tilekeeper db up`, in a temporary directory on a free port, and the real API over HTTP."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from catalog_service.api.pages import DEFAULT_BROWSER_DIR
from catalog_service.api.server import ServerThread, free_port
from catalog_service.database import EmbeddedCluster, UpReport, bring_up
from catalog_service.demo.backends import LocalBackend
from catalog_service.settings import ApiSettings, AuthSettings, DatabaseSettings, ProductSettings


@dataclass
class Database:
    settings: DatabaseSettings
    report: UpReport
    cluster: EmbeddedCluster

    def destroy(self) -> None:
        """Stop the cluster and remove its temporary directory."""
        self.cluster.destroy()
        shutil.rmtree(self.settings.data_dir.parent, ignore_errors=True)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL as the admin login (for checking what the API stored)."""
        with psycopg.connect(self.report.logins.admin.dsn, autocommit=True) as conn:
            conn.execute("SET search_path TO pgstac, public")
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []


def make_database(prefix: str) -> Database:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and as root the server runs
    # as another OS user that must reach its data dir.
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    settings = DatabaseSettings(data_dir=base / "db", port=free_port(), dsn=None)
    report = bring_up(settings)
    return Database(settings, report, EmbeddedCluster(settings))


@contextmanager
def own_database(prefix: str) -> Iterator[Database]:
    """A cluster of a test module's own (a crowd of others' data would get in its way)."""
    db = make_database(prefix)
    try:
        yield db
    finally:
        db.destroy()


@pytest.fixture(scope="session", autouse=True)
def _no_external_database() -> Iterator[None]:
    # Tests must use their own cluster even if the developer's shell points elsewhere.
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PG")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session", autouse=True)
def _openeo_config_home() -> Iterator[Path]:
    # The openEO client's auth config and refresh tokens of the tests, not the user's.
    home = Path(tempfile.mkdtemp(prefix="tilekeeper-openeo-config-"))
    saved = os.environ.get("OPENEO_CONFIG_HOME")
    os.environ["OPENEO_CONFIG_HOME"] = str(home)
    yield home
    if saved is None:
        os.environ.pop("OPENEO_CONFIG_HOME", None)
    else:
        os.environ["OPENEO_CONFIG_HOME"] = saved
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _egress_to_this_machine() -> Iterator[None]:
    # The tests' back-ends, webhook receivers and files are all on 127.0.0.1, which the
    # egress policy refuses by default (tests/test_egress.py passes its own settings).
    saved = os.environ.get("TILEKEEPER_EGRESS_ALLOW_LOOPBACK")
    os.environ["TILEKEEPER_EGRESS_ALLOW_LOOPBACK"] = "true"
    yield
    if saved is None:
        os.environ.pop("TILEKEEPER_EGRESS_ALLOW_LOOPBACK", None)
    else:
        os.environ["TILEKEEPER_EGRESS_ALLOW_LOOPBACK"] = saved


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    db = make_database("tilekeeper-test-")
    # Runners (in-process and `tilekeeper campaign run` children) harvest into the store
    # the test API serves.
    os.environ["TILEKEEPER_PRODUCTS_STORE"] = str(products_settings(db).store)
    # Clients (here and in runner children) write with the admin key `db up` made.
    os.environ["TILEKEEPER_API_KEY"] = admin_token(db)
    yield db
    os.environ.pop("TILEKEEPER_PRODUCTS_STORE", None)
    os.environ.pop("TILEKEEPER_API_KEY", None)
    db.destroy()


def admin_token(db: Database) -> str:
    assert db.report.admin_key is not None
    return db.report.admin_key.read_text().strip()


def auth_headers() -> dict[str, str]:
    """The admin key of the test database, for raw HTTP writes."""
    return {"Authorization": f"Bearer {os.environ['TILEKEEPER_API_KEY']}"}


def products_settings(db: Database) -> ProductSettings:
    """The test database's local product store (beside its cluster)."""
    return ProductSettings(store=str(db.settings.data_dir.parent / "products"))


def start_api(db: Database, auth: AuthSettings | None = None, **overrides: Any) -> ServerThread:
    settings = ApiSettings(port=free_port(), **overrides)
    server = ServerThread(
        settings, logins=db.report.logins, products=products_settings(db), auth=auth
    )
    return server.start()


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    from catalog_service.client.http import HttpSession

    HttpSession(url).wait_ready(timeout_s)


@pytest.fixture(scope="session")
def api(database: Database) -> Iterator[str]:
    server = start_api(database)
    wait_ready(server.url)
    yield server.url
    server.stop()


@pytest.fixture()
def http(api: str, database: Database) -> Iterator[httpx.Client]:
    """A client writing with the admin key."""
    headers = {"Authorization": f"Bearer {admin_token(database)}"}
    with httpx.Client(base_url=api, timeout=60, headers=headers) as client:
        yield client


def make_item(
    item_id: str,
    collection: str,
    lon: float = 4.0,
    lat: float = 50.0,
    size: float = 0.1,
    **properties: Any,
) -> dict[str, Any]:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": collection,
        "bbox": [lon, lat, lon + size, lat + size],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"datetime": "2025-01-01T00:00:00Z", **properties},
        "links": [],
        "assets": {},
    }


def make_collection(collection_id: str) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": "test collection",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2025-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


@pytest.fixture()
def new_collection(http: httpx.Client) -> Callable[[], str]:
    """Creates a fresh, uniquely named collection through the API."""

    def create() -> str:
        collection_id = f"test-{uuid.uuid4().hex[:10]}"
        response = http.post("/collections", json=make_collection(collection_id))
        assert response.status_code == 201, response.text
        return collection_id

    return create


def bulk(
    http: httpx.Client, collection_id: str, items: list[dict[str, Any]], method: str = "insert"
) -> httpx.Response:
    return http.post(
        f"/collections/{collection_id}/bulk_items",
        json={"method": method, "items": {item["id"]: item for item in items}},
    )


# -- pages in a real browser (Debian's Chromium driven by playwright) -------------------

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is installed by scripts/bootstrap.sh (apt: chromium)"
    assert (DEFAULT_BROWSER_DIR / "index.html").is_file(), "run scripts/build_web.sh"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


class Offline:
    """Lets requests to this machine through and refuses (and records) every other."""

    def __init__(self, page: Page) -> None:
        self.left: list[str] = []
        page.route("**/*", self.handle)

    def handle(self, route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            self.left.append(route.request.url)
            route.abort()


class CspViolations:
    """Records what the pages' Content-Security-Policy refused, in every page and frame
    opened in ``page``: their ``securitypolicyviolation`` events and the browser's console
    messages about it."""

    RECORD = """
        document.addEventListener("securitypolicyviolation", (e) => {
            window.__cspViolation(
                `${e.effectiveDirective} refused ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
        });
    """

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        # Both are injected by the browser's debugging protocol, not under the page's CSP.
        page.expose_function("__cspViolation", self._event)
        page.add_init_script(self.RECORD)
        page.on("console", self._console)

    def _event(self, violation: str) -> None:
        self.seen.append(violation)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.seen.append(message.text)

    def unexpected(self) -> list[str]:
        """What was refused. Nothing is expected: the served queryables are self-contained
        (pgstac's default ones referred to JSON schemas on the internet, which STAC
        Browser fetched on the page of a collection with items)."""
        return list(self.seen)


def wait_for_thumbnail(page: Page) -> None:
    """A product's thumbnail was fetched and decoded (the page may keep it out of view)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"img[src*='thumbnail.png']\")]"
        ".some(img => img.complete && img.naturalWidth > 0)",
        timeout=30_000,
    )


def shot(page: Page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def find_listed(page: Page, text: str, timeout_s: float = 90.0) -> None:
    """Wait until STAC Browser lists ``text``. It shows a catalogue's first pages of
    collections; with many (other tests' campaigns) more come by "Load more..."."""
    deadline = time.monotonic() + timeout_s
    wanted = page.get_by_text(text).first
    while True:
        try:
            wanted.wait_for(timeout=3_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise
        more = page.get_by_role("button", name=re.compile("Load more"))
        if more.count():
            more.first.click()


def check_pages(browser: Browser, api: str, campaign: str, tiles: int) -> None:
    """What a person opens after the demo: STAC Browser lists the campaign, the campaign
    map draws every tile, the API docs list the operations; no request leaves the machine
    and no page does what its Content-Security-Policy forbids."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    csp = CspViolations(page)
    page.goto(f"{api}/browser/")
    find_listed(page, campaign)
    page.goto(f"{api}/campaigns/{campaign}/map")
    page.wait_for_function(  # a function: an expression is eval'd, which the policy refuses
        f"() => window.tilekeeperMap && window.tilekeeperMap.seen.size === {tiles}",
        timeout=30_000,
    )
    page.goto(f"{api}/api.html")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() > 20
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen
    page.close()


@contextmanager
def local_backends(
    api: str, base: Path, names: list[str], **knobs: Any
) -> Iterator[list[LocalBackend]]:
    """Local openEO back-ends (real processes) on free ports, reading the catalogue at
    ``api``; stopped on the way out, also when one of them failed to start."""
    started: list[LocalBackend] = []
    try:
        for name in names:
            backend = LocalBackend(
                name=name, port=free_port(), jobs_dir=base / name, stac_url=f"{api}/", **knobs
            )
            backend.start(log_path=base / f"{name}.log")
            started.append(backend)
        yield started
    finally:
        for backend in started:
            backend.stop()


def send_json(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200) -> None:
    """A JSON answer from a loopback test server."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler], port: int = 0) -> Iterator[int]:
    """A test HTTP server on 127.0.0.1 (a free port unless given); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
