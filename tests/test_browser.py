"""The pages in a real browser (Debian's Chromium, driven by playwright): STAC Browser at
/browser/ lists the campaign and product collections and opens a product with its
thumbnail, and no request leaves the machine. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import Database, products_settings
from playwright.sync_api import Browser, Page, Route, sync_playwright
from test_ingest import write_raster

from catalog_service.api.pages import DEFAULT_BROWSER_DIR
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from ingest.engine import Ingester
from ingest.sources import Product, Raster
from ingest.store import open_store

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is installed by scripts/bootstrap.sh (apt: chromium)"
    assert (DEFAULT_BROWSER_DIR / "index.html").is_file(), "run scripts/build_browser.sh"
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


def shot(page: Page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def test_stac_browser_lists_campaigns_and_opens_a_product(
    api: str, database: Database, browser: Browser, tmp_path: Path
) -> None:
    http = HttpSession(api)
    campaign = f"browse-{uuid.uuid4().hex[:6]}"
    Campaigns(http).create(
        {"id": campaign, "title": f"Campaign {campaign}", "grid": "utm-20km",
         "temporal_extent": ["2024-03-01", "2024-09-30"]}
    )  # fmt: skip
    store = open_store(products_settings(database), api)
    ingester = Ingester(http, store, f"{campaign}-products", campaign=campaign)
    raster = write_raster(tmp_path / "T31UFS.tif", size=200)
    outcome = ingester.ingest(Product("T31UFS", [Raster(raster, "data")], str(raster)))
    assert outcome.result == "created", outcome

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    page.goto(f"{api}/browser/")
    page.get_by_text(f"Campaign {campaign}").first.wait_for(timeout=30_000)
    page.get_by_text(f"Products of campaign {campaign}").first.wait_for(timeout=30_000)
    shot(page, "browser-root")

    page.goto(f"{api}/browser/#/collections/{campaign}-products/items/T31UFS")
    page.get_by_text("EPSG:32631").first.wait_for(timeout=30_000)
    # The thumbnail was fetched and decoded (the page may keep it out of view).
    page.wait_for_function(
        "[...document.querySelectorAll(\"img[src*='thumbnail.png']\")]"
        ".some(img => img.complete && img.naturalWidth > 0)",
        timeout=30_000,
    )
    shot(page, "browser-product")
    assert offline.left == [], offline.left


def test_api_docs_render_offline(api: str, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    page.goto(f"{api}/api.html")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() > 20  # the operations, STAC's and ours
    page.get_by_text("/collections/{collection_id}/products").first.wait_for()
    shot(page, "api-docs", full_page=False)
    assert offline.left == [], offline.left


def test_browser_config_points_at_this_service(api: str) -> None:
    config = HttpSession(api).session.get(f"{api}/browser/config.js", timeout=10).text
    assert f'"catalogUrl": "{api}/"' in config
    root = HttpSession(api).get("")
    assert next(link["href"] for link in root["links"] if link["rel"] == "self") == f"{api}/"
