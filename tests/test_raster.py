"""The raster service (titiler-pgstac under /raster) over a campaign's real products,
through the real API: tiles, TileJSON, WMTS (read by Debian's GDAL), points, statistics
and parts answer the products' own values; a private campaign's mosaic is missing to
others; only the product store's files are opened; sizes are bounded."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import rasterio
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.warp import reproject
from support.cli import runner
from support.database import (
    Database,
    admin_token,
    auth_headers,
    products_settings,
    start_api,
    wait_ready,
)
from support.rasters import write_raster
from support.stac import make_collection, make_item

from catalog_service.api.raster import OVERVIEW_TTL_S
from catalog_service.auth import keys
from catalog_service.cli.main import app
from catalog_service.ids import campaign_products_id
from catalog_service.raster.render import RENDER_EXTENSION, WEB_MAP_LINKS
from ingest.validate import validate as validate_stac

PIXEL = 10.0
SIZE = 64
ORIGIN = (600_000.0, 5_660_000.0)  # EPSG:32631, write_raster's default corner
OFFSETS = [(0, 0), (1, 0), (0, 1)]
TO_WGS84 = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)


@dataclass(frozen=True)
class Campaign:
    id: str
    collection: str
    sources: dict[str, Path]


def _ingest(api: str, store: str, token: str, *args: str) -> None:
    env = {"TILEKEEPER_API_URL": api, "TILEKEEPER_PRODUCTS_STORE": store, "COLUMNS": "1000",
           "TILEKEEPER_API_KEY": token}  # fmt: skip
    result = runner.invoke(app, ["ingest", *args], env=env)
    assert result.exit_code == 0, result.output


def _key(database: Database, name: str, scopes: list[str]) -> str:
    with psycopg.connect(database.report.logins.admin.dsn, autocommit=True) as conn:
        return keys.create_key(conn, name, scopes, None)[1]


def _campaign(
    api: str, database: Database, folder: Path, token: str, visibility: str = "public"
) -> Campaign:
    store = str(products_settings(database).store)
    campaign = f"raster-x{uuid.uuid4().hex[:6]}"  # never 8 digits: the ingest reads those as a date
    body = {"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-01-01", "2024-12-31"],
            "visibility": visibility}  # fmt: skip
    made = httpx.post(f"{api}/campaigns", json=body, headers={"Authorization": f"Bearer {token}"})
    assert made.status_code == 201, made.text
    sources: dict[str, Path] = {}
    for n, (col, row) in enumerate(OFFSETS):
        origin = (ORIGIN[0] + col * SIZE * PIXEL, ORIGIN[1] - row * SIZE * PIXEL)
        path = folder / f"{campaign}-tile-{n}.tif"
        sources[path.stem] = write_raster(path, count=1, size=SIZE, seed=20 + n, origin=origin)
    _ingest(api, store, token, *(str(p) for p in sources.values()), "--campaign", campaign)
    return Campaign(campaign, campaign_products_id(campaign), sources)


@pytest.fixture(scope="module")
def http(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, headers=auth_headers(), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def campaign(api: str, database: Database, tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    return _campaign(api, database, tmp_path_factory.mktemp("raster"), admin_token(database))


def _lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = TO_WGS84.transform(x, y)
    return float(lon), float(lat)


def _tile(lon: float, lat: float, z: int) -> str:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2 * n)
    return f"{z}/{x}/{y}"


def _value_at(source: Path, x: float, y: float) -> float:
    with rasterio.open(source) as src:
        return float(next(src.sample([(x, y)]))[0])


def test_the_product_collection_carries_its_render_and_web_map_links(
    http: httpx.Client, campaign: Campaign
) -> None:
    collection = http.get(f"/collections/{campaign.collection}").json()
    assert RENDER_EXTENSION in collection["stac_extensions"]
    assert WEB_MAP_LINKS in collection["stac_extensions"]
    render = collection["renders"]["default"]
    assert render["assets"] == ["data"]
    assert render["colormap_name"] == "viridis"
    # The rescale spans the products' own minimum and maximum.
    lows, highs = [], []
    for source in campaign.sources.values():
        with rasterio.open(source) as src:
            data = src.read(1, masked=True)
            lows.append(float(data.min()))
            highs.append(float(data.max()))
    assert render["rescale"][0] == pytest.approx([min(lows), max(highs)], rel=1e-5)
    rels = {link["rel"]: link for link in collection["links"]}
    assert {"xyz", "wmts", "tilejson"} <= set(rels)
    assert rels["xyz"]["href"].startswith(str(http.base_url).rstrip("/") + "/raster/collections/")
    validate_stac(collection)
    # ... and each product item links its own COG's tiles.
    item = http.get(f"/collections/{campaign.collection}/items/{campaign.id}-tile-0").json()
    assert any(link["rel"] == "xyz" and "/items/" in link["href"] for link in item["links"])
    validate_stac(item)


def test_tilejson_and_a_tile_over_the_products(http: httpx.Client, campaign: Campaign) -> None:
    tilejson_link = next(
        link for link in http.get(f"/collections/{campaign.collection}").json()["links"]
        if link["rel"] == "tilejson"
    )  # fmt: skip
    tilejson = http.get(tilejson_link["href"])
    assert tilejson.status_code == 200, tilejson.text
    body = tilejson.json()
    lon, lat = _lonlat(ORIGIN[0] + SIZE * PIXEL, ORIGIN[1] - SIZE * PIXEL)
    west, south, east, north = body["bounds"]
    assert west <= lon <= east and south <= lat <= north
    z, x, y = _tile(lon, lat, 14).split("/")
    url = body["tiles"][0].replace("{z}", z).replace("{x}", x).replace("{y}", y)
    tile = http.get(url)
    assert tile.status_code == 200, tile.text
    assert tile.headers["content-type"] == "image/png"
    with rasterio.open(io.BytesIO(tile.content)) as png:
        pixels = png.read()
    assert pixels.shape[1:] in ((256, 256), (512, 512))
    assert pixels[3].any()  # some pixels are drawn (alpha)
    assert len(np.unique(pixels[0][pixels[3] > 0])) > 10  # a colormap over real values


def test_a_point_answers_the_products_value(http: httpx.Client, campaign: Campaign) -> None:
    for name, (col, row) in zip(campaign.sources, OFFSETS, strict=True):
        x = ORIGIN[0] + (col * SIZE + 10.5) * PIXEL
        y = ORIGIN[1] - (row * SIZE + 20.5) * PIXEL
        lon, lat = _lonlat(x, y)
        answer = http.get(
            f"/raster/collections/{campaign.collection}/point/{lon},{lat}",
            params={"assets": "data"},
        )
        assert answer.status_code == 200, answer.text
        values = {a["name"]: a["values"] for a in answer.json()["assets"]}
        assert values[f"{campaign.collection}/{name}"] == pytest.approx(
            [_value_at(campaign.sources[name], x, y)], rel=1e-6
        )


def test_statistics_over_a_feature_match_the_cog(http: httpx.Client, campaign: Campaign) -> None:
    source = campaign.sources[f"{campaign.id}-tile-0"]
    # A square of 20 x 20 pixels inside the first product (pixel edges, in its CRS).
    x0, y0 = ORIGIN[0] + 8 * PIXEL, ORIGIN[1] - 8 * PIXEL
    x1, y1 = x0 + 20 * PIXEL, y0 - 20 * PIXEL
    ring_utm = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    feature = {"type": "Feature", "properties": {},
               "geometry": {"type": "Polygon", "coordinates": [[list(_lonlat(*p)) for p in ring_utm]]}}  # fmt: skip
    answer = http.post(
        f"/raster/collections/{campaign.collection}/statistics",
        params={"assets": "data", "dst_crs": "EPSG:32631", "max_size": 64},
        json=feature,
    )
    assert answer.status_code == 200, answer.text
    stats = answer.json()["properties"]["statistics"]
    band = next(iter(stats.values()))
    with rasterio.open(source) as src:
        data = src.read(1)
        inside = ~geometry_mask(
            [{"type": "Polygon", "coordinates": [ring_utm]}], data.shape, src.transform
        )
        expected = data[inside & (data != 0)]
    assert band["count"] == pytest.approx(expected.size, rel=0.12)
    assert band["mean"] == pytest.approx(float(expected.mean()), rel=0.02)
    assert band["min"] >= float(expected.min()) - 1e-3
    assert band["max"] <= float(expected.max()) + 1e-3


def test_a_part_as_geotiff_holds_the_products_pixels(
    http: httpx.Client, campaign: Campaign
) -> None:
    source = campaign.sources[f"{campaign.id}-tile-1"]
    x0, y0 = ORIGIN[0] + (SIZE + 30) * PIXEL, ORIGIN[1] - 30 * PIXEL
    answer = http.get(
        f"/raster/collections/{campaign.collection}/bbox/{x0},{y0 - 100},{x0 + 100},{y0}.tif",
        params={"assets": "data", "coord_crs": "EPSG:32631", "dst_crs": "EPSG:32631"},
    )
    assert answer.status_code == 200, answer.text
    with rasterio.open(io.BytesIO(answer.content)) as part:
        assert part.crs.to_epsg() == 32631
        got = part.read(1)
        cx, cy = part.xy(got.shape[0] // 2, got.shape[1] // 2)
        value = float(next(part.sample([(cx, cy)]))[0])
    assert value == pytest.approx(_value_at(source, cx, cy), rel=1e-6)


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdal-bin is not installed")
def test_gdal_reads_the_wmts_capabilities_and_a_tile(
    api: str, http: httpx.Client, campaign: Campaign, tmp_path: Path
) -> None:
    wmts = next(
        link for link in http.get(f"/collections/{campaign.collection}").json()["links"]
        if link["rel"] == "wmts"
    )  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "GDAL_HTTP_TIMEOUT": "60", "GDAL_ENABLE_WMS_CACHE": "NO"}
    done = subprocess.run(
        ["gdalinfo", "-json", f"WMTS:{wmts['href']},layer={wmts['wmts:layer']}"], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["driverShortName"] == "WMTS"
    # The layer's extent (web mercator) holds the products'.
    x0, pixel, _, y0, _, neg = info["geoTransform"]
    x1, y1 = x0 + info["size"][0] * pixel, y0 + info["size"][1] * neg
    to_mercator = Transformer.from_crs("EPSG:32631", "EPSG:3857", always_xy=True)
    mx, my = to_mercator.transform(ORIGIN[0] + 320, ORIGIN[1] - 320)
    assert x0 <= mx <= x1 and y1 <= my <= y0
    # A small window over the products, fetched from the tiles GDAL finds in the
    # capabilities, holds drawn pixels.
    lon0, lat0 = _lonlat(ORIGIN[0] + 100, ORIGIN[1] - 100)
    lon1, lat1 = _lonlat(ORIGIN[0] + 500, ORIGIN[1] - 500)
    out = tmp_path / "wmts.tif"
    done = subprocess.run(
        ["gdal_translate", "-q", "-projwin_srs", "EPSG:4326", "-projwin", str(lon0), str(lat0),
         str(lon1), str(lat1), "-outsize", "64", "64", f"WMTS:{wmts['href']},layer={wmts['wmts:layer']}",
         str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with rasterio.open(out) as got:
        pixels = got.read()
    assert pixels.shape[0] == 4 and pixels[3].min() == 255  # inside the products: opaque
    assert len(np.unique(pixels[0])) > 5


def test_a_private_campaigns_mosaic_is_missing_to_others(
    api: str, database: Database, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    owner = _key(database, f"owner-{suffix}", ["campaigns:write", "products:write"])
    other = _key(database, f"other-{suffix}", ["campaigns:write", "stac:write", "products:write"])
    private = _campaign(api, database, tmp_path, owner, visibility="private")
    lon, lat = _lonlat(ORIGIN[0] + 105, ORIGIN[1] - 105)
    tile = _tile(lon, lat, 14)
    paths = [
        "/WebMercatorQuad/tilejson.json?assets=data",
        "/WMTSCapabilities.xml?tileMatrixSet=WebMercatorQuad&assets=data",
        f"/tiles/WebMercatorQuad/{tile}.png?assets=data",
        f"/point/{lon},{lat}?assets=data",
        f"/items/{private.id}-tile-0/tiles/WebMercatorQuad/{tile}.png?assets=data",
        f"/items/{private.id}-tile-0/info?assets=data",
    ]
    missing = f"nothing-{suffix}-products"
    with httpx.Client(base_url=api, timeout=60) as client:
        for path in paths:
            mine = client.get(f"/raster/collections/{private.collection}{path}",
                              headers={"Authorization": f"Bearer {owner}"})  # fmt: skip
            assert mine.status_code in (200, 204), (path, mine.text)
            for who in (None, other):
                headers = {"Authorization": f"Bearer {who}"} if who else {}
                hidden = client.get(
                    f"/raster/collections/{private.collection}{path}", headers=headers
                )
                absent = client.get(f"/raster/collections/{missing}{path}", headers=headers)
                assert hidden.status_code == absent.status_code == 404, (path, hidden.text)
                assert hidden.json()["code"] == absent.json()["code"] == "NotFoundError"
                said = hidden.json()["description"].replace(private.collection, "X")
                assert said == absent.json()["description"].replace(missing, "X")
        feature = {"type": "Feature", "properties": {},
                   "geometry": {"type": "Point", "coordinates": [lon, lat]}}  # fmt: skip
        stats = client.post(f"/raster/collections/{private.collection}/statistics?assets=data",
                            json=feature)  # fmt: skip
        assert stats.status_code == 404


def test_assets_outside_the_product_store_are_never_opened(
    http: httpx.Client, tmp_path: Path
) -> None:
    # A real GeoTIFF, readable by the API's process, but not in the product store: an
    # item may name it (by path or file:// URL) but the raster service does not open it.
    outside = write_raster(tmp_path / "outside.tif", count=1, size=SIZE)
    collection = f"plain-{uuid.uuid4().hex[:6]}"
    assert http.post("/collections", json=make_collection(collection)).status_code == 201
    lon, lat = _lonlat(ORIGIN[0] + 105, ORIGIN[1] - 105)
    for n, href in enumerate((str(outside), f"file://{outside}", "/etc/hostname",
                              "http://127.0.0.1:1/x.tif", "products/files/../../outside.tif")):  # fmt: skip
        item = make_item(f"I{n}", collection, lon=lon - 0.001, lat=lat - 0.001)
        item["assets"] = {"data": {"href": href, "type": "image/tiff; application=geotiff"}}
        assert http.post(f"/collections/{collection}/items", json=item).status_code == 201
        point = http.get(f"/raster/collections/{collection}/items/I{n}/point/{lon},{lat}",
                         params={"assets": "data"})  # fmt: skip
        assert point.status_code == 404, (href, point.text)
        assert "not in the product store" in point.json()["description"]
    mosaic = http.get(
        f"/raster/collections/{collection}/point/{lon},{lat}", params={"assets": "data"}
    )
    assert mosaic.status_code in (204, 404), mosaic.text
    assert "values" not in mosaic.text


@pytest.mark.parametrize(
    "query",
    [
        "tilesize=100000",
        "max_size=1000000",
        "width=200000&height=200000",
        "histogram_bins=100000000",
        "buffer=100000",
        "scan_limit=100000000",
        "tilesize=abc",
        "expression=" + "b1%2B" * 2000 + "b1",
        "&".join(["assets=data"] * 100),
    ],
)
def test_sizes_a_request_asks_for_are_bounded(
    http: httpx.Client, campaign: Campaign, query: str
) -> None:
    for path in ("/tiles/WebMercatorQuad/14/8245/5468.png", "/bbox/3,50,3.1,50.1.tif"):
        answer = http.get(f"/raster/collections/{campaign.collection}{path}?assets=data&{query}")
        assert answer.status_code == 400, (path, query, answer.status_code, answer.text[:200])
        assert answer.json()["code"] == "BadRequest"


def test_a_bare_raster_request_gets_a_clear_error(http: httpx.Client, campaign: Campaign) -> None:
    answer = http.get(
        f"/raster/collections/{campaign.collection}/tiles/WebMercatorQuad/14/8245/5468.png"
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["description"]


def _db_env(database: Database) -> dict[str, str]:
    return {
        "COLUMNS": "1000",
        "TILEKEEPER_DB_DATA_DIR": str(database.settings.data_dir),
        "TILEKEEPER_DB_PORT": str(database.settings.port),
        "TILEKEEPER_PRODUCTS_STORE": str(products_settings(database).store),
    }


def _tile_tif(
    http: httpx.Client, collection: str, tile: str
) -> tuple[np.ma.MaskedArray[Any, Any], str]:
    answer = http.get(
        f"/raster/collections/{collection}/tiles/WebMercatorQuad/{tile}.tif",
        params={"assets": "data", "tilesize": 256},
    )
    assert answer.status_code == 200, answer.text
    with rasterio.open(io.BytesIO(answer.content)) as got:
        data = got.read(1)
    # titiler's GeoTIFF tiles carry no mask: nodata is the products' own, 0.
    return np.ma.masked_equal(data, 0), answer.headers.get("x-assets", "")


def _expected_tile(sources: list[Path], tile: str) -> np.ma.MaskedArray[Any, Any]:
    """The sources averaged into the tile's 256 x 256 web mercator grid, by GDAL."""
    z, x, y = (int(v) for v in tile.split("/"))
    size = 2 * math.pi * 6378137 / 2**z
    west, north = -math.pi * 6378137 + x * size, math.pi * 6378137 - y * size
    transform = rasterio.transform.from_origin(west, north, size / 256, size / 256)
    out = np.full((256, 256), np.nan, dtype="float32")
    for source in sources:
        with rasterio.open(source) as src:
            part = np.full((256, 256), np.nan, dtype="float32")
            reproject(
                rasterio.band(src, 1), part, dst_transform=transform, dst_crs="EPSG:3857",
                resampling=Resampling.average, dst_nodata=np.nan,
            )  # fmt: skip
        out = np.where(np.isnan(out), part, out)
    return np.ma.masked_invalid(out)


def test_the_overview_draws_low_zooms_with_the_products_values(
    api: str, database: Database, http: httpx.Client, tmp_path: Path
) -> None:
    own = _campaign(api, database, tmp_path, admin_token(database))
    made = runner.invoke(app, ["campaign", "overview", own.id], env=_db_env(database))
    assert made.exit_code == 0, made.output
    assert "3 products taken in" in made.output
    zooms = re.search(r"overview of zooms (\d+)-(\d+)", made.output)
    assert zooms is not None, made.output
    low, high = int(zooms.group(1)), int(zooms.group(2))
    assert high - low == 6
    lon, lat = _lonlat(ORIGIN[0] + SIZE * PIXEL, ORIGIN[1] - SIZE * PIXEL)
    sources = list(own.sources.values())
    for z in (high - 3, high):
        data, drawn_by = _tile_tif(http, own.collection, _tile(lon, lat, z))
        assert drawn_by == f"overview z{z}"
        expected = _expected_tile(sources, _tile(lon, lat, z))
        # Where the products are (allowing a pixel's edge), and their mean there.
        assert abs(int(data.count()) - int(expected.count())) <= 0.1 * expected.count() + 8
        assert float(data.mean()) == pytest.approx(float(expected.mean()), rel=0.03)
    # Past the overview's zooms the products draw the tile themselves.
    _, drawn_by = _tile_tif(http, own.collection, _tile(lon, lat, high + 1))
    assert own.id in drawn_by and "overview" not in drawn_by

    # A product written later is queued, and taken in by the next update alone.
    extra = write_raster(tmp_path / f"{own.id}-tile-3.tif", count=1, size=SIZE, seed=40,
                         origin=(ORIGIN[0] + SIZE * PIXEL, ORIGIN[1] - SIZE * PIXEL))  # fmt: skip
    _ingest(api, str(products_settings(database).store), admin_token(database), str(extra),
            "--campaign", own.id)  # fmt: skip
    queued = database.sql(
        "SELECT item_id FROM tilekeeper.overview_pending WHERE collection = %s", own.collection
    )
    assert queued == [(extra.stem,)]
    again = runner.invoke(app, ["campaign", "overview", own.id], env=_db_env(database))
    assert again.exit_code == 0, again.output
    assert "1 products taken in" in again.output
    time.sleep(OVERVIEW_TTL_S)  # the API's view of the pyramid is kept this long
    data, drawn_by = _tile_tif(http, own.collection, _tile(lon, lat, high))
    expected = _expected_tile([*sources, extra], _tile(lon, lat, high))
    assert drawn_by == f"overview z{high}"
    assert float(data.mean()) == pytest.approx(float(expected.mean()), rel=0.03)

    rebuilt = runner.invoke(
        app, ["campaign", "overview", own.id, "--rebuild"], env=_db_env(database)
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "4 products queued again" in rebuilt.output and "4 products taken in" in rebuilt.output


def test_the_api_keeps_overviews_as_products_land(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEKEEPER_RASTER_OVERVIEW_INTERVAL_S", "0.5")
    server = start_api(database)
    try:
        wait_ready(server.url)
        own = _campaign(server.url, database, tmp_path, admin_token(database))
        lon, lat = _lonlat(ORIGIN[0] + SIZE * PIXEL, ORIGIN[1] - SIZE * PIXEL)
        with httpx.Client(base_url=server.url, headers=auth_headers(), timeout=60) as client:
            deadline = time.monotonic() + 60
            drawn_by = ""
            while time.monotonic() < deadline and not drawn_by.startswith("overview"):
                time.sleep(0.5)
                _, drawn_by = _tile_tif(client, own.collection, _tile(lon, lat, 10))
            assert drawn_by == "overview z10"
        left = database.sql(
            "SELECT count(*) FROM tilekeeper.overview_pending WHERE collection = %s", own.collection
        )
        assert left == [(0,)]
        # The latest version of a product is drawn, not the one it replaced.
        replaced = write_raster(own.sources[f"{own.id}-tile-0"], count=1, size=SIZE, seed=99)
        _ingest(server.url, str(products_settings(database).store), admin_token(database),
                str(replaced), "--campaign", own.id)  # fmt: skip
        x, y = ORIGIN[0] + 10.5 * PIXEL, ORIGIN[1] - 20.5 * PIXEL
        plon, plat = _lonlat(x, y)
        with httpx.Client(base_url=server.url, headers=auth_headers(), timeout=60) as client:
            point = client.get(f"/raster/collections/{own.collection}/point/{plon},{plat}",
                               params={"assets": "data"})  # fmt: skip
        assert point.status_code == 200, point.text
        values = [a["values"] for a in point.json()["assets"]]
        assert values == [pytest.approx([_value_at(replaced, x, y)], rel=1e-6)]
    finally:
        server.stop()


@pytest.mark.parametrize("tile", ["8989/219/70368744177663", "25/0/0", "3/17/0", "3/0/-1"])
def test_a_tile_outside_the_tile_matrix_is_refused(
    http: httpx.Client, campaign: Campaign, tile: str
) -> None:
    for suffix in (".png", "/assets"):
        answer = http.get(
            f"/raster/collections/{campaign.collection}/tiles/WebMercatorQuad/{tile}{suffix}",
            params={"assets": "data"},
        )
        assert answer.status_code in (400, 404), answer.text
        assert answer.json()["code"] in ("BadRequest", "NotFoundError")


def test_multiband_products_are_drawn_as_red_green_blue(
    api: str, database: Database, http: httpx.Client, tmp_path: Path
) -> None:
    store = str(products_settings(database).store)
    campaign = f"rgb-x{uuid.uuid4().hex[:6]}"
    made = http.post("/campaigns", json={"id": campaign, "grid": "utm-20km"})
    assert made.status_code == 201, made.text
    source = write_raster(tmp_path / "rgb.tif", count=4, size=SIZE, seed=5)
    _ingest(api, store, admin_token(database), str(source), "--campaign", campaign)
    collection = http.get(f"/collections/{campaign}-products").json()
    render = collection["renders"]["default"]
    assert render["bidx"] == [1, 2, 3] and len(render["rescale"]) == 3
    assert "colormap_name" not in render
    xyz = next(link for link in collection["links"] if link["rel"] == "xyz")
    assert "assets=data%7Cbidx%3D1%2C2%2C3" in xyz["href"]
    lon, lat = _lonlat(ORIGIN[0] + 320, ORIGIN[1] - 320)
    runner_env = _db_env(database)
    built = runner.invoke(app, ["campaign", "overview", campaign], env=runner_env)
    assert built.exit_code == 0, built.output
    time.sleep(OVERVIEW_TTL_S)
    for z in (10, 16):  # from the overview, and from the product
        z_, x, y = _tile(lon, lat, z).split("/")
        url = xyz["href"].replace("{z}", z_).replace("{x}", x).replace("{y}", y)
        tile = http.get(url)
        assert tile.status_code == 200, tile.text
        assert ("overview" in tile.headers["x-assets"]) == (z == 10)
        with rasterio.open(io.BytesIO(tile.content)) as png:
            assert png.count == 4  # red, green, blue and alpha
            pixels = png.read()
        assert pixels[3].any() and len(np.unique(pixels[0][pixels[3] > 0])) > 5
    item_xyz = next(
        link for link in http.get(f"/collections/{campaign}-products/items/rgb").json()["links"]
        if link["rel"] == "xyz"
    )  # fmt: skip
    z_, x, y = _tile(lon, lat, 16).split("/")
    tile = http.get(item_xyz["href"].replace("{z}", z_).replace("{x}", x).replace("{y}", y))
    assert tile.status_code == 200, tile.text
