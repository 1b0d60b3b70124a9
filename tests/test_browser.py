"""The pages in a real browser (Debian's Chromium, driven by playwright): STAC Browser at
/browser/ lists the campaign and product collections and opens a product with its
thumbnail, and no request leaves the machine. Every page runs under its
Content-Security-Policy without a refusal, and values from the catalogue never run as
script. Screenshots go to tests/artifacts/.

``wait_for_function`` gets functions, not expressions: playwright evaluates an expression
with ``eval``, which the pages' policy refuses."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import requests
from playwright.sync_api import Browser, Page, Response
from support.browser import CspViolations, Offline, find_listed, shot, wait_for_thumbnail
from support.database import Database, auth_headers, products_settings
from support.rasters import write_raster
from support.stac import make_item

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
    store = open_store(products_settings(database))
    ingester = Ingester(http, store, f"{campaign}-products", campaign=campaign)
    raster = write_raster(tmp_path / "T31UFS.tif", size=200)
    outcome = ingester.ingest(Product("T31UFS", [Raster(raster, "data")], str(raster)))
    assert outcome.result == "created", outcome

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    csp = CspViolations(page)
    page.goto(f"{api}/browser/")
    find_listed(page, f"Campaign {campaign}")
    find_listed(page, f"Products of campaign {campaign}")
    shot(page, "browser-root")

    page.goto(f"{api}/browser/#/collections/{campaign}-products/items/T31UFS")
    page.get_by_text("EPSG:32631").first.wait_for(timeout=30_000)
    wait_for_thumbnail(page)
    shot(page, "browser-product")
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen  # the COG drawn on the map too (geotiff.js workers)


def test_api_docs_render_offline(api: str, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    csp = CspViolations(page)
    page.goto(f"{api}/api.html")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() > 20  # the operations, STAC's and ours
    page.get_by_text("/collections/{collection_id}/products").first.wait_for()
    # An operation opens (Swagger UI renders its schemas).
    page.locator(".opblock-summary").first.click()
    page.locator(".opblock-body").first.wait_for(timeout=10_000)
    shot(page, "api-docs", full_page=False)
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen


def test_pages_run_again_when_reloaded_from_the_cache(api: str, browser: Browser) -> None:
    """A reload revalidates the cached pages and files (304s); the policy a page was cached
    with must stay its policy. (No Offline here: playwright's routing turns the cache off.
    The policy itself keeps requests on this machine.)"""
    _, campaign, tiles = _map_campaign(api)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    csp = CspViolations(page)
    ready = {
        "/browser/": "() => document.querySelectorAll('#stac-browser a').length > 3",
        f"/campaigns/{campaign}/map": "() => window.tilekeeperMap && "
        f"window.tilekeeperMap.seen.size === {len(tiles)}",
        "/api.html": "() => document.querySelectorAll('.opblock').length > 20",
    }
    for path, loaded in ready.items():
        page.goto(f"{api}{path}")
        page.wait_for_function(loaded, timeout=30_000)
        for _ in range(2):
            page.reload()
            page.wait_for_function(loaded, timeout=30_000)
    assert csp.seen == [], csp.seen


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
        values: dict[str, object] = {"backend_name": "alpha", "openeo:job_id": f"j-{tile}"}
        if st == "finished" and costs is not None:
            values["costs"] = costs
        campaigns.change(campaign, [{"tile": tile, "status": st, "set": values}])


# A drawn tile's fill colour, from the footprint layer's style.
TILE_FILL = """id => {
    const m = window.tilekeeperMap.map;
    const layer = window.tilekeeperMap.vectorLayer;
    for (const f of layer.getFeaturesInExtent(m.getView().calculateExtent())) {
        if ((f.getId() ?? f.get('id')) === id) {
            const style = layer.getStyleFunction()(f, m.getView().getResolution());
            return style ? style.getFill().getColor() : null;
        }
    }
    return null;
}"""


def _open_map(
    browser: Browser, api: str, campaign: str, tiles: int
) -> tuple[Page, Offline, CspViolations]:
    """The campaign's map in a new page, once it has drawn every tile."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    offline = Offline(page)
    csp = CspViolations(page)
    page.goto(f"{api}/campaigns/{campaign}/map")
    page.wait_for_function(
        f"() => window.tilekeeperMap && window.tilekeeperMap.seen.size === {tiles}",
        timeout=30_000,
    )
    return page, offline, csp


def test_campaign_map_draws_every_tile_by_status_live_and_shows_a_tile(
    api: str, browser: Browser
) -> None:
    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[0], "running")
    _move(campaigns, campaign, tiles[1], "running", "finished", costs=120)
    page, offline, csp = _open_map(browser, api, campaign, len(tiles))
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
        f"() => window.tilekeeperMap.colorOf({tiles[2]!r}) === 'darkred'", timeout=15_000
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
    # The filters: a status and a back-end hidden and shown again.
    page.locator("#counts input[data-status='running']").uncheck()
    page.locator("#backends input[data-backend='alpha']").uncheck()
    page.locator("#counts input[data-status='running']").check()
    page.locator("#backends input[data-backend='alpha']").check()
    shot(page, "map-tile", full_page=False)
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen


def test_zoomed_out_the_map_draws_cells_and_filters_them(api: str, browser: Browser) -> None:
    """Zoomed out, where tiles are a few pixels wide, the map draws cells (vector tiles of
    squares, each in the most frequent status of its tiles) instead of footprints; the
    filters ask the service to leave hidden statuses and back-ends out of them."""
    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[0], "running")
    _move(campaigns, campaign, tiles[1], "running", "finished")
    page, offline, csp = _open_map(browser, api, campaign, len(tiles))
    assert page.evaluate("window.tilekeeperMap.cellTilesLoaded") == 0  # zoomed in: none
    vector_min_zoom = page.evaluate("window.tilekeeperMap.vectorMinZoom")
    assert vector_min_zoom == 5  # a 20 km tile is 4 px wide from zoom 5
    with page.expect_response(lambda r: "/cells/4/" in r.url) as first:
        page.evaluate("z => window.tilekeeperMap.map.getView().setZoom(z)", vector_min_zoom - 1)
    assert first.value.status == 200
    assert first.value.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    cells = """() => {
        const m = window.tilekeeperMap.map;
        return window.tilekeeperMap.cellsLayer
            .getFeaturesInExtent(m.getView().calculateExtent())
            .map(f => [f.get('status'), f.get('n')]);
    }"""
    page.wait_for_function(
        f"() => ({cells})().reduce((sum, c) => sum + c[1], 0) === {len(tiles)}",
        timeout=30_000,
    )
    drawn = page.evaluate(cells)
    assert {status for status, _ in drawn} == {"not_started", "running", "finished"}
    assert page.evaluate("window.tilekeeperMap.cellTilesLoaded") > 0
    shot(page, "map-cells", full_page=False)
    # A hidden status and back-end: the cells are asked for again without them.
    page.get_by_text(f"progress 1/{len(tiles)}").wait_for(timeout=10_000)

    def cells_asked(part: str) -> Callable[[Response], bool]:
        return lambda r: "/cells/" in r.url and part in r.url

    for box, hidden in (
        ("#counts input[data-status='not_started']", "hide_status=not_started"),
        ("#backends input[data-backend='alpha']", "hide_backend=alpha"),
    ):
        with page.expect_response(cells_asked(hidden)) as seen:
            page.locator(box).uncheck()
        assert seen.value.status == 200, seen.value.url
    # Ticked again: the cells are asked for without the filters (each change asks anew).
    with page.expect_response(lambda r: "/cells/" in r.url and "hide_" not in r.url) as again:
        page.locator("#counts input[data-status='not_started']").check()
        page.locator("#backends input[data-backend='alpha']").check()
    assert again.value.status == 200, again.value.url
    # A click on the cells zooms in to where tiles can be picked.
    map_box = page.locator("#map").bounding_box()
    assert map_box
    centre = page.evaluate(
        "() => window.tilekeeperMap.map.getPixelFromCoordinate("
        "window.tilekeeperMap.map.getView().getCenter())"
    )
    page.mouse.click(map_box["x"] + centre[0], map_box["y"] + centre[1])
    page.wait_for_function(
        f"() => window.tilekeeperMap.map.getView().getZoom() > {vector_min_zoom}", timeout=10_000
    )
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen
    # The cells' path answers only inside the tile matrix.
    assert (
        requests.get(f"{api}/campaigns/{campaign}/cells/2/9/0.pbf", timeout=30).status_code == 400
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
    csp = CspViolations(page)
    page.goto(f"{api}/campaigns")
    row = page.locator("tr", has_text=campaign)
    row.get_by_text(str(len(tiles)), exact=True).wait_for(timeout=10_000)
    assert row.locator("span.swatch[title='running: 1']").count() == 1
    shot(page, "campaigns", full_page=False)
    row.get_by_role("link", name="map").click()
    page.wait_for_function(
        f"() => window.tilekeeperMap && window.tilekeeperMap.seen.size === {len(tiles)}",
        timeout=30_000,
    )
    assert page.url.endswith(f"/campaigns/{campaign}/map")
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen


def test_the_map_shows_finished_tiles_products(
    api: str, database: Database, browser: Browser, tmp_path: Path
) -> None:
    """The products are drawn as one mosaic (titiler's, from the campaign's product
    collection) under the tiles, a finished tile as its outline over it; a click on the
    tile shows the product with its thumbnail and a link into STAC Browser."""
    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[1], "running", "finished")
    http = HttpSession(api)
    store = open_store(products_settings(database))
    ingester = Ingester(http, store, f"{campaign}-products", campaign=campaign)
    # 2 km of UTM 31N in the middle of the finished tile, one band (as an NDVI: drawn with
    # the collection's render, a rescale and a colormap).
    from rasterio.warp import transform

    west, south, east, north = http.get(f"collections/{campaign}/items/{tiles[1]}")["bbox"]
    middle = ((west + east) / 2, (south + north) / 2)
    xs, ys = transform("EPSG:4326", "EPSG:32631", [middle[0]], [middle[1]])
    raster = write_raster(tmp_path / "P.tif", count=1, size=200, origin=(xs[0] - 1000, ys[0] + 1000))  # fmt: skip
    outcome = ingester.ingest(
        Product("P", [Raster(raster, "data")], str(raster)), (campaign, tiles[1])
    )
    assert outcome.result == "created", outcome

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    offline = Offline(page)
    csp = CspViolations(page)
    page.goto(f"{api}/campaigns/{campaign}/map")
    page.wait_for_function(
        "() => window.tilekeeperMap && window.tilekeeperMap.mosaicTilesLoaded > 0", timeout=60_000
    )
    assert page.evaluate("window.tilekeeperMap.mosaicState") == "ready"
    page.wait_for_function(f"() => window.tilekeeperMap.seen.size === {len(tiles)}", timeout=30_000)
    # The product is drawn in the middle of its tile (the finished tile: an outline).
    assert page.evaluate(TILE_FILL, tiles[1]) == "rgba(255,255,255,0.01)"
    # The tick box: without the mosaic, the finished tile is filled again.
    page.locator("#mosaic").uncheck()
    assert page.evaluate(TILE_FILL, tiles[1]) == "lime"
    page.locator("#mosaic").check()
    assert page.evaluate(TILE_FILL, tiles[1]) == "rgba(255,255,255,0.01)"
    drawn = """([lon, lat]) => {
        const m = window.tilekeeperMap.map;
        const pixel = m.getPixelFromCoordinate(ol.proj.fromLonLat([lon, lat]));
        const data = window.tilekeeperMap.mosaicLayer.getData(pixel);
        return data !== null && data[3] > 0;
    }"""
    page.wait_for_function(drawn, arg=list(middle), timeout=30_000)
    # The collection's mosaic as its tilejson link has it (drawn by its default render).
    mosaic = page.evaluate("window.tilekeeperMap.mosaicUrl")
    products = http.get(f"collections/{campaign}-products")
    assert mosaic == next(k["href"] for k in products["links"] if k["rel"] == "tilejson")
    tilejson = f"{api}/raster/collections/{campaign}-products/WebMercatorQuad/tilejson.json?"
    assert mosaic.startswith(tilejson)
    # As tiles finish, the mosaic is read again (its TileJSON and tiles): still drawn.
    loaded = page.evaluate("window.tilekeeperMap.mosaicTilesLoaded")
    with page.expect_response(lambda r: r.url.startswith(tilejson), timeout=30_000) as again:
        page.evaluate("window.tilekeeperMap.refreshMosaic()")
    assert again.value.status == 200
    assert page.evaluate("window.tilekeeperMap.mosaicRefreshes") == 1
    page.wait_for_function(
        f"() => window.tilekeeperMap.mosaicTilesLoaded > {loaded}", timeout=30_000
    )
    page.wait_for_function(drawn, arg=list(middle), timeout=30_000)
    shot(page, "map-mosaic", full_page=False)
    page.evaluate(f"window.tilekeeperMap.showTile({tiles[1]!r})")
    preview = page.locator("#tile img")
    preview.wait_for(timeout=10_000)
    page.wait_for_function(
        "() => document.querySelector('#tile img').naturalWidth > 0", timeout=10_000
    )
    assert "/products/files/" in (preview.get_attribute("src") or "")
    link = page.get_by_role("link", name="open in STAC Browser")
    assert f"browser/#/collections/{campaign}-products/items/P" in (
        link.get_attribute("href") or ""
    )
    shot(page, "map-product", full_page=False)
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen


def test_a_mosaic_the_raster_service_does_not_draw_leaves_the_map_as_it_was(
    api: str, browser: Browser
) -> None:
    """A product collection without products (no render yet: titiler answers its bare
    TileJSON with 400): the map draws no mosaic, and finished tiles stay filled."""
    from ingest.items import product_collection

    campaigns, campaign, tiles = _map_campaign(api)
    _move(campaigns, campaign, tiles[1], "running", "finished")
    products = product_collection(f"{campaign}-products", campaign=campaign)
    made = requests.post(f"{api}/collections", json=products, headers=auth_headers(), timeout=30)
    assert made.status_code == 201, made.text
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    offline = Offline(page)
    csp = CspViolations(page)
    with page.expect_response(lambda r: "/tilejson.json" in r.url) as tilejson:
        page.goto(f"{api}/campaigns/{campaign}/map")
    assert tilejson.value.status == 400
    page.wait_for_function(
        f"() => window.tilekeeperMap && window.tilekeeperMap.seen.size === {len(tiles)}",
        timeout=30_000,
    )
    page.wait_for_function("() => window.tilekeeperMap.mosaicState === 'error'", timeout=10_000)
    assert page.evaluate("window.tilekeeperMap.mosaicLayer") is None
    assert page.evaluate("window.tilekeeperMap.mosaicTilesLoaded") == 0
    # The finished tile is drawn filled (no product shows through it).
    assert page.evaluate(TILE_FILL, tiles[1]) == "lime"
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen


def test_stac_browser_signs_in_to_show_a_private_campaign(
    api: str, database: Database, browser: Browser
) -> None:
    from support.database import admin_token

    campaign = f"hidden-{uuid.uuid4().hex[:6]}"
    Campaigns(HttpSession(api)).create(
        {"id": campaign, "title": f"Private {campaign}", "visibility": "private"}
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    csp = CspViolations(page)
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
    assert csp.seen == [], csp.seen


# -- values from the catalogue never run as script -------------------------------------

# Markup that runs script if a page treats a value as HTML; each sets window.__pwned.
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def _hostile_campaign(api: str) -> tuple[str, list[str]]:
    """A campaign whose title, description, tile properties, errors and product carry
    script: tile 0 failed (its job id and error), tile 1 has a product whose assets and
    links are ``javascript:`` URLs, tile 2's harvest failed (its error)."""
    from ingest.items import product_collection

    campaigns, campaign, tiles = _map_campaign(api)
    campaigns.update(
        campaign,
        title=f"Campaign {PAYLOAD}",
        description=f"About {PAYLOAD} [a link](javascript:window.__pwned=3)",
    )
    hostile = {
        "backend_name": "alpha",
        "openeo:job_id": f"job {PAYLOAD}",
        "last_error": f"failed {PAYLOAD}",
    }
    for status in ("running", "error"):
        campaigns.change(campaign, [{"tile": tiles[0], "status": status, "set": hostile}])
    _move(campaigns, campaign, tiles[1], "running", "finished")
    _move(campaigns, campaign, tiles[2], "running", "finished")
    products = f"{campaign}-products"
    collection = product_collection(products, campaign=campaign)
    answer = requests.post(
        f"{api}/collections", json=collection, headers=auth_headers(), timeout=30
    )
    assert answer.status_code == 201, answer.text
    item = make_item("P", products, lon=4.1, lat=50.5, size=0.05, title=f"Product {PAYLOAD}")
    item["assets"] = {
        "data": {"href": "javascript:window.__pwned=4", "title": f"Data {PAYLOAD}",
                 "type": "image/tiff; application=geotiff; profile=cloud-optimized"},
        "thumbnail": {"href": "javascript:window.__pwned=5", "type": "image/png",
                      "roles": ["thumbnail"]},
        "script": {"href": "JavaScript:window.__pwned=6", "title": "a script"},
    }  # fmt: skip
    item["links"] = [{"rel": "about", "href": "javascript:window.__pwned=7", "title": "About"}]
    # The product route refuses such hrefs (400): the product is written with web ones,
    # then replaced whole through the STAC API, which takes any href in a product
    # collection; the pages must stay safe with whatever is stored.
    safe = {
        key: {**asset, "href": f"https://example.org/{key}"}
        for key, asset in item["assets"].items()
    }
    hostile_write = {"writes": [{"items": [item], "job": {"campaign": campaign, "tile": tiles[1]}}]}
    refused = requests.post(
        f"{api}/collections/{products}/products",
        json=hostile_write,
        headers=auth_headers(),
        timeout=30,
    )
    assert refused.status_code == 400, refused.text
    write = {
        "writes": [
            {"items": [{**item, "assets": safe}], "job": {"campaign": campaign, "tile": tiles[1]}}
        ]
    }
    answer = requests.post(
        f"{api}/collections/{products}/products", json=write, headers=auth_headers(), timeout=30
    )
    assert answer.status_code == 200, answer.text
    answer = requests.put(
        f"{api}/collections/{products}/items/P", json=item, headers=auth_headers(), timeout=30
    )
    assert answer.status_code == 200, answer.text
    answer = requests.put(
        f"{api}/campaigns/{campaign}/jobs/{tiles[2]}/product",
        json={"state": "failed", "error": f"harvest {PAYLOAD}"},
        headers=auth_headers(),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return campaign, tiles


def _nothing_ran(page: Page) -> None:
    """No payload ran, and none can: no javascript: link, event handler or inline script
    (STAC Browser's schema.org metadata is a JSON data block, not a script)."""
    assert page.evaluate("window.__pwned") is None
    assert page.locator('a[href^="javascript:" i]').count() == 0
    assert page.locator("[onerror]").count() == 0
    assert page.locator('script:not([src]):not([type="application/ld+json"])').count() == 0


def _as_text(page: Page) -> None:
    """Our pages took no value as markup at all (STAC Browser keeps sanitised HTML)."""
    _nothing_ran(page)
    assert page.locator('img[src="x"]').count() == 0


def _check_map_and_list(page: Page, api: str, campaign: str, tiles: list[str]) -> None:
    page.goto(f"{api}/campaigns")
    row = page.locator("tr", has_text=campaign)
    assert f"Campaign {PAYLOAD}" in row.inner_text()
    _as_text(page)

    page.goto(f"{api}/campaigns/{campaign}/map")
    page.wait_for_function(
        f"() => window.tilekeeperMap && window.tilekeeperMap.seen.size === {len(tiles)}",
        timeout=30_000,
    )
    page.wait_for_function(
        "title => document.getElementById('title').textContent === title",
        arg=f"Campaign {PAYLOAD}",
        timeout=10_000,
    )
    page.evaluate(f"window.tilekeeperMap.showTile({tiles[0]!r})")
    page.locator("#tile pre").wait_for(timeout=10_000)
    assert page.locator("#tile pre").inner_text() == f"failed {PAYLOAD}"
    assert f"job {PAYLOAD}" in page.locator("#tile table").first.inner_text()
    _as_text(page)

    # The product's assets are listed by name; none of their javascript: URLs is a link
    # or an image, while the link into STAC Browser (http) is one.
    page.evaluate(f"window.tilekeeperMap.showTile({tiles[1]!r})")
    page.get_by_role("link", name="open in STAC Browser").wait_for(timeout=10_000)
    assert sorted(page.locator("#tile li").all_inner_texts()) == ["data", "script", "thumbnail"]
    assert page.locator("#tile li a").count() == 0
    assert page.locator("#tile img").count() == 0
    _as_text(page)

    page.evaluate(f"window.tilekeeperMap.showTile({tiles[2]!r})")
    page.get_by_text(f"product: failed harvest {PAYLOAD}").wait_for(timeout=10_000)
    _as_text(page)


def test_catalogue_values_reach_the_map_and_the_list_as_text(api: str, browser: Browser) -> None:
    """Escaping alone holds: with the Content-Security-Policy switched off in the browser,
    nothing from the catalogue runs and every value shows literally."""
    campaign, tiles = _hostile_campaign(api)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    offline = Offline(page)
    _check_map_and_list(page, api, campaign, tiles)
    shot(page, "map-hostile", full_page=False)
    assert offline.left == [], offline.left
    context.close()

    # And under the policy, as served: the same, and nothing refused.
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    csp = CspViolations(page)
    _check_map_and_list(page, api, campaign, tiles)
    assert csp.seen == [], csp.seen
    page.close()


def test_stac_browser_shows_hostile_values_without_running_them(api: str, browser: Browser) -> None:
    """STAC Browser renders descriptions as Markdown and sanitises the HTML (no event
    handler, no script, no javascript: link) and links an asset only for a web URL: with
    or without the policy, nothing runs and no javascript: link is made."""
    campaign, _ = _hostile_campaign(api)
    for bypass_csp in (True, False):
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp
        )
        page = context.new_page()
        csp = CspViolations(page)
        page.goto(f"{api}/browser/#/collections/{campaign}")
        page.get_by_text(f"Campaign {PAYLOAD}").first.wait_for(timeout=30_000)
        page.get_by_text("a link").first.wait_for(timeout=10_000)
        _nothing_ran(page)
        page.goto(f"{api}/browser/#/collections/{campaign}-products/items/P")
        page.get_by_text(f"Product {PAYLOAD}").first.wait_for(timeout=30_000)
        page.get_by_text(f"Data {PAYLOAD}").first.wait_for(timeout=10_000)
        _nothing_ran(page)
        for asset in (f"Data {PAYLOAD}", "a script", "thumbnail"):  # each one's details
            page.get_by_text(asset, exact=True).first.click()
            page.wait_for_timeout(500)  # its buttons and links settle
            _nothing_ran(page)
        if not bypass_csp:
            shot(page, "browser-hostile")
            assert csp.unexpected() == [], csp.unexpected()
        context.close()


def test_the_policy_refuses_script_in_markup_and_javascript_links(
    api: str, browser: Browser
) -> None:
    """The second line of defence, on the map and in STAC Browser (which holds the signed-in
    key): markup with an event handler or a script, and a javascript: link, do not run even
    when they reach the page."""
    _, campaign, _ = _map_campaign(api)
    for path in (f"/campaigns/{campaign}/map", "/browser/"):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        csp = CspViolations(page)
        page.goto(f"{api}{path}")
        page.wait_for_load_state("networkidle")
        page.evaluate(
            """payload => {
                const box = document.createElement("div");
                box.innerHTML = payload + '<a id="evil" href="javascript:window.__pwned=8">go</a>';
                document.body.prepend(box);
            }""",
            PAYLOAD,
        )
        page.locator("#evil").click()
        page.wait_for_function("() => document.querySelector('img[src=\"x\"]').complete")
        page.wait_for_timeout(500)
        assert page.evaluate("window.__pwned") is None, path
        refused = "\n".join(csp.seen)
        assert "script-src-attr" in refused, refused  # the onerror handler
        assert "script-src-elem" in refused, refused  # the javascript: link
        page.close()
