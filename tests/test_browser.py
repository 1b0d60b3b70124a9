"""The pages in a real browser (Debian's Chromium, driven by playwright): STAC Browser at
/browser/ lists the campaign and product collections and opens a product with its
thumbnail, and no request leaves the machine. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import requests
from conftest import Database, Offline, products_settings, shot
from playwright.sync_api import Browser
from test_ingest import write_raster

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from ingest.engine import Ingester
from ingest.sources import Product, Raster
from ingest.store import open_store


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


def _map_campaign(api: str) -> tuple[Campaigns, str, list[str]]:
    from catalog_service.client.campaigns import tile_records
    from catalog_service.grids import load_aoi, tiles_for

    campaigns = Campaigns(HttpSession(api))
    campaign = f"map-{uuid.uuid4().hex[:6]}"
    campaigns.create(
        {"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-03-01", "2024-09-30"],
         "backends": [{"name": "alpha", "url": "https://alpha.test/", "auth": "none"}],
         "budget": 500}
    )  # fmt: skip
    records = list(tile_records(tiles_for("utm-20km", load_aoi("4.0,50.4,5.0,51.0"))))
    campaigns.register(campaign, records)
    return campaigns, campaign, [r["id"] for r in records]


def _move(
    campaigns: Campaigns, campaign: str, tile: str, *statuses: str, costs: float | None = None
) -> None:
    for st in statuses:
        values: dict[str, object] = {"backend_name": "alpha", "id": f"j-{tile}"}
        if st == "finished" and costs is not None:
            values["costs"] = costs
        campaigns.change(campaign, [{"tile": tile, "status": st, "set": values}])


def test_campaign_map_draws_every_tile_by_status_live_and_shows_a_tile(
    api: str, browser: Browser
) -> None:
    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[0], "running")
    _move(campaigns, campaign, tiles[1], "running", "finished", costs=120)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    offline = Offline(page)
    page.goto(f"{api}/campaigns/{campaign}/map")
    page.wait_for_function(
        f"window.tilekeeperMap && window.tilekeeperMap.seen.size === {len(tiles)}", timeout=30_000
    )
    colour = "id => window.tilekeeperMap.colorOf(id)"
    assert page.evaluate(colour, tiles[0]) == "navy"
    assert page.evaluate(colour, tiles[1]) == "lime"
    assert page.evaluate(colour, tiles[2]) == "lightgrey"
    page.get_by_text(f"progress 1/{len(tiles)}").wait_for(timeout=10_000)
    # Spent: the finished tile; committed adds the running one at the mean cost.
    budget = "spent 120.00 of budget 500.00 (240.00 with active jobs)"
    assert page.locator("#budget").inner_text() == budget
    shot(page, "map-before", full_page=False)

    # A status change reaches the drawn map without a reload.
    _move(campaigns, campaign, tiles[2], "running", "error")
    page.wait_for_function(
        f"window.tilekeeperMap.colorOf({tiles[2]!r}) === 'darkred'", timeout=15_000
    )
    page.get_by_text(f"progress 2/{len(tiles)}").wait_for(timeout=10_000)

    # A click on a tile shows its job and history.
    map_box = page.locator("#map").bounding_box()
    assert map_box
    pixel = page.evaluate(
        """id => {
            const m = window.tilekeeperMap.map;
            const layer = window.tilekeeperMap.vectorLayer;
            for (const f of layer.getFeaturesInExtent(m.getView().calculateExtent())) {
                if ((f.getId() ?? f.get('id')) === id) {
                    const e = f.getExtent();
                    return m.getPixelFromCoordinate([(e[0] + e[2]) / 2, (e[1] + e[3]) / 2]);
                }
            }
            return null;
        }""",
        tiles[1],
    )
    assert pixel, "the finished tile is drawn"
    page.mouse.click(map_box["x"] + pixel[0], map_box["y"] + pixel[1])
    history = page.locator("#tile table.history")
    history.wait_for(timeout=10_000)
    assert "running → finished" in history.inner_text()
    assert tiles[1] in page.locator("#tile h2").inner_text()
    shot(page, "map-tile", full_page=False)
    assert offline.left == [], offline.left


def test_overview_tiles_paint_every_tile_in_its_status_colour(api: str) -> None:
    """Zoomed out, the map draws tiles from raster overview tiles: every tile at least one
    pixel in its status colour, hidden statuses left out."""
    from rasterio.io import MemoryFile

    from catalog_service.jobs.mapview import STATUS_RGB

    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[0], "running")
    _move(campaigns, campaign, tiles[1], "running", "finished")

    # The area (4.0-5.0 E, 50.4-51.0 N) lies in tiles 4/8/5 (a 20 km tile ~3 px wide: the
    # path for many small tiles) and 6/32/21 (~12 px: painted one by one).
    def colours(tile: str, **params: Any) -> dict[tuple[int, int, int], int]:
        url = f"{api}/campaigns/{campaign}/overview/{tile}.png"
        response = requests.get(url, params=params, timeout=30)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        with MemoryFile(response.content) as memory, memory.open() as png:
            pixels = png.read()
        opaque = pixels[3] == 255
        found: dict[tuple[int, int, int], int] = {}
        for rgb in zip(*(pixels[b][opaque] for b in range(3)), strict=True):
            key = tuple(int(v) for v in rgb)
            found[key] = found.get(key, 0) + 1  # type: ignore[index]
        return found  # type: ignore[return-value]

    expected = {STATUS_RGB[s] for s in ("running", "finished", "not_started")}
    for tile in ("4/8/5", "6/32/21"):
        drawn = colours(tile)
        assert set(drawn) == expected, tile
        hidden = colours(tile, hide_status=["running", "not_started"])
        assert set(hidden) == {STATUS_RGB["finished"]}, tile
    assert colours("4/8/5", hide_backend=["alpha"]).keys() == {STATUS_RGB["not_started"]}
    page = requests.get(f"{api}/campaigns/{campaign}/map", timeout=30).text
    assert '"vectorMinZoom": ' in page
    assert (
        requests.get(f"{api}/campaigns/{campaign}/overview/2/9/0.png", timeout=30).status_code
        == 400
    )


def test_campaign_list_is_a_page_for_browsers_and_json_for_clients(
    api: str, browser: Browser
) -> None:
    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[0], "running")
    listed = requests.get(f"{api}/campaigns", timeout=30)
    assert listed.headers["content-type"].startswith("application/json")
    assert campaign in [c["id"] for c in listed.json()["campaigns"]]
    page = browser.new_page(viewport={"width": 1100, "height": 600})
    offline = Offline(page)
    page.goto(f"{api}/campaigns")
    row = page.locator("tr", has_text=campaign)
    row.get_by_text(str(len(tiles)), exact=True).wait_for(timeout=10_000)
    assert row.locator("span.swatch[title='running: 1']").count() == 1
    shot(page, "campaigns", full_page=False)
    row.get_by_role("link", name="map").click()
    page.wait_for_function(
        f"window.tilekeeperMap && window.tilekeeperMap.seen.size === {len(tiles)}", timeout=30_000
    )
    assert page.url.endswith(f"/campaigns/{campaign}/map")
    assert offline.left == [], offline.left


def test_the_map_shows_finished_tiles_products(
    api: str, database: Database, browser: Browser, tmp_path: Path
) -> None:
    """Zoomed in, a finished tile's product is drawn from its thumbnail; a click on the
    tile shows the product with its preview and a link into STAC Browser."""
    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[1], "running", "finished")
    http = HttpSession(api)
    store = open_store(products_settings(database), api)
    ingester = Ingester(http, store, f"{campaign}-products", campaign=campaign)
    # 2 km of UTM 31N inside the campaign's area (4.0-5.0 E, 50.4-51.0 N).
    raster = write_raster(tmp_path / "P.tif", size=200, origin=(600_000, 5_620_000))
    outcome = ingester.ingest(
        Product("P", [Raster(raster, "data")], str(raster)), (campaign, tiles[1])
    )
    assert outcome.result == "created", outcome

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    offline = Offline(page)
    page.goto(f"{api}/campaigns/{campaign}/map")
    page.wait_for_function(
        "window.tilekeeperMap && window.tilekeeperMap.previews === 1", timeout=30_000
    )
    page.evaluate(f"window.tilekeeperMap.showTile({tiles[1]!r})")
    preview = page.locator("#tile img")
    preview.wait_for(timeout=10_000)
    page.wait_for_function("document.querySelector('#tile img').naturalWidth > 0", timeout=10_000)
    assert "/products/files/" in (preview.get_attribute("src") or "")
    link = page.get_by_role("link", name="open in STAC Browser")
    assert f"browser/#/collections/{campaign}-products/items/P" in (
        link.get_attribute("href") or ""
    )
    shot(page, "map-product", full_page=False)
    assert offline.left == [], offline.left


def test_stac_browser_signs_in_to_show_a_private_campaign(
    api: str, database: Database, browser: Browser
) -> None:
    from conftest import admin_token

    campaign = f"hidden-{uuid.uuid4().hex[:6]}"
    Campaigns(HttpSession(api)).create(
        {"id": campaign, "title": f"Private {campaign}", "visibility": "private"}
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    # Anonymous, the campaign does not exist: the browser's request for it answers 404.
    with page.expect_response(lambda r: r.url.endswith(f"/collections/{campaign}")) as seen:
        page.goto(f"{api}/browser/#/collections/{campaign}")
    assert seen.value.status == 404
    page.get_by_role("button", name="Log in").first.click()
    form = page.get_by_role("button", name="Submit").locator("xpath=ancestor::form")
    form.locator("input").first.fill(admin_token(database))  # a key, or an OIDC token
    shot(page, "browser-sign-in")
    page.get_by_role("button", name="Submit").click()
    page.goto(f"{api}/browser/#/collections/{campaign}")
    page.get_by_text(f"Private {campaign}").first.wait_for(timeout=30_000)
    shot(page, "browser-signed-in")
    assert offline.left == [], offline.left
