"""STAC Browser (Debian's Chromium, driven by playwright) draws a campaign's products from
the raster service (/raster; the browser's configuration builds their tile URLs): the
product collection's map shows its products in their render's colours, a product's page
its own COG; nothing leaves the machine and the pages' policy refuses nothing."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from playwright.sync_api import Browser, Page, Response
from support.browser import CspViolations, Offline, shot
from support.database import Database, products_settings
from support.rasters import write_raster

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from ingest.engine import Ingester
from ingest.sources import Product, Raster
from ingest.store import open_store

ORIGIN = (600_000.0, 5_660_000.0)


def _raster_tiles(page: Page, prefix: str) -> list[Response]:
    seen: list[Response] = []
    page.on(
        "response", lambda r: seen.append(r) if prefix in r.url and "/tiles/" in r.url else None
    )
    return seen


def _wait_for(page: Page, seen: list[Response], timeout_s: float = 60.0) -> list[Response]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not any(r.status == 200 for r in seen):
        page.wait_for_timeout(250)  # (playwright delivers events while it waits)
    return [r for r in seen if r.status == 200]


def test_stac_browser_draws_the_products_from_the_raster_service(
    api: str, database: Database, browser: Browser, tmp_path: Path
) -> None:
    http = HttpSession(api)
    campaign = f"layer-{uuid.uuid4().hex[:6]}"
    Campaigns(http).create({"id": campaign, "title": f"Campaign {campaign}", "grid": "utm-20km"})
    ingester = Ingester(http, open_store(products_settings(database)), f"{campaign}-products",
                        campaign=campaign)  # fmt: skip
    for n in range(3):
        origin = (ORIGIN[0] + n * 2000, ORIGIN[1])
        raster = write_raster(tmp_path / f"P{n}.tif", count=1, size=200, seed=n, origin=origin)
        outcome = ingester.ingest(Product(f"P{n}", [Raster(raster, "data")], str(raster)))
        assert outcome.result == "created", outcome
    collection = f"{campaign}-products"

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    csp = CspViolations(page)
    mosaic = _raster_tiles(page, f"/raster/collections/{collection}/items/")
    page.goto(f"{api}/browser/#/collections/{collection}")
    drawn = _wait_for(page, mosaic, 90)
    assert drawn, [(r.status, r.url) for r in mosaic]
    deadline = time.monotonic() + 30  # every product drawn, none refused
    while time.monotonic() < deadline and not all(
        f"/items/P{n}/" in " ".join(r.url for r in drawn) for n in range(3)
    ):
        page.wait_for_timeout(250)
        drawn = [r for r in mosaic if r.status == 200]
    assert {f"P{n}" for n in range(3)} <= {r.url.split("/items/")[1].split("/")[0] for r in drawn}
    assert {r.status for r in mosaic} <= {200, 204}, [(r.status, r.url) for r in mosaic]
    assert all(r.headers["content-type"] == "image/png" for r in drawn)
    assert "rescale=" in drawn[0].url and "colormap_name=viridis" in drawn[0].url
    shot(page, "browser-mosaic")

    page.close()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline, csp = Offline(page), CspViolations(page)
    cog = _raster_tiles(page, f"/raster/collections/{collection}/items/P1/tiles/")
    page.goto(f"{api}/browser/#/collections/{collection}/items/P1")
    assert _wait_for(page, cog), [(r.status, r.url) for r in cog]
    shot(page, "browser-product-tiles")
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen
