"""An outside tester's attacks on the raster service (/raster), kept as regression cases.

Each test states what the service promises (docs/http-api.md "The raster service",
docs/security.md) and asks what broke it: a private campaign's product file drawn
through another collection's item, a deleted private campaign's overview drawn for a
new campaign of its name, server paths in the asset listings, sizes, zoom ranges and
vertex counts that are not bounded, a coordinate that pins a CPU for ever, inputs that
answer 500, and raster reads (POSTed features) refused as if they were writes."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.cli import runner
from support.database import Database, admin_token, products_settings
from support.rasters import write_raster
from support.stac import make_collection, make_item
from test_raster import (
    ORIGIN,
    SIZE,
    Campaign,
    _campaign,
    _db_env,
    _ingest,
    _key,
    _lonlat,
    _tile,
)

from catalog_service.api.raster import OVERVIEW_TTL_S
from catalog_service.cli.main import app

# The documented bound on any image a request makes (`width`/`height`/`max_size` 4096).
MAX_SIDE = 4096
MAX_ZOOM = 24


@dataclass(frozen=True)
class World:
    api: str
    admin: str
    owner: str  # owns the private campaign
    tenant: str  # another tenant: every write scope, owns nothing here
    public: Campaign
    private: Campaign
    store: Path


@pytest.fixture(scope="module")
def world(api: str, database: Database, tmp_path_factory: pytest.TempPathFactory) -> World:
    suffix = uuid.uuid4().hex[:6]
    owner = _key(database, f"att-owner-{suffix}", ["campaigns:write", "products:write"])
    tenant = _key(
        database, f"att-tenant-{suffix}", ["campaigns:write", "stac:write", "products:write"]
    )
    folder = tmp_path_factory.mktemp("raster-attacks")
    public = _campaign(api, database, folder, admin_token(database))
    private = _campaign(api, database, folder, owner, visibility="private")
    store = Path(str(products_settings(database).store)).resolve()
    return World(api, admin_token(database), owner, tenant, public, private, store)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world.api, timeout=120) as c:
        yield c


def _as(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _where() -> tuple[float, float]:
    """A point inside the first product of every campaign made by _campaign."""
    return _lonlat(ORIGIN[0] + 105, ORIGIN[1] - 105)


def _square(lon: float, lat: float, half: float) -> dict[str, object]:
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]  # fmt: skip
    return {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def _is_stac_error(answer: httpx.Response) -> bool:
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and set(body) == {"code", "description"}


# -- 1. a private campaign's files, drawn through somebody else's item ----------------


def test_a_private_campaigns_file_cannot_be_drawn_through_another_collections_item(
    world: World, client: httpx.Client
) -> None:
    """hrefs.py checks only that an href is *in* the store, not that it is a file of the
    collection asked for: an item in a plain collection (anybody with stac:write may make
    one) naming a private campaign's product file has it read and drawn for anybody,
    where /products/files/{key} answers 404 for the very same file."""
    lon, lat = _where()
    product = client.get(
        f"/collections/{world.private.collection}/items/{world.private.id}-tile-0",
        headers=_as(world.owner),
    ).json()
    href = product["assets"]["data"]["href"]
    key = href[href.index("products/files/") + len("products/files/") :]
    served = client.get(f"/products/files/{key}", headers=_as(world.tenant))
    assert served.status_code == 404  # the file route keeps it private ...

    collection = f"borrow-{uuid.uuid4().hex[:6]}"
    made = client.post("/collections", json=make_collection(collection), headers=_as(world.tenant))
    assert made.status_code == 201, made.text
    item = make_item("borrowed", collection, lon=lon - 0.001, lat=lat - 0.001)
    item["assets"] = {
        "data": {"href": f"products/files/{key}", "type": "image/tiff; application=geotiff"}
    }
    made = client.post(f"/collections/{collection}/items", json=item, headers=_as(world.tenant))
    assert made.status_code == 201, made.text

    for who in (None, world.tenant):  # ... and so must the raster service
        for path in (
            f"/raster/collections/{collection}/items/borrowed/point/{lon},{lat}?assets=data",
            f"/raster/collections/{collection}/items/borrowed/info?assets=data",
            f"/raster/collections/{collection}/point/{lon},{lat}?assets=data",
        ):
            answer = client.get(path, headers=_as(who))
            assert "values" not in answer.text and "band_metadata" not in answer.text, (
                path, answer.status_code, answer.text[:300])  # fmt: skip
            assert answer.status_code in (204, 404), (path, answer.text[:300])


# -- 1b. the asset listings -------------------------------------------------------------


@pytest.mark.parametrize("route", ["point", "bbox", "tile"])
def test_asset_listings_do_not_reveal_the_servers_file_paths(
    world: World, client: httpx.Client, route: str
) -> None:
    """The /assets listings answer the items with their hrefs rewritten to what GDAL
    opens: the product store's absolute path on the server, shown to anonymous callers."""
    lon, lat = _where()
    path = {
        "point": f"/point/{lon},{lat}/assets",
        "bbox": f"/bbox/{lon - 0.01},{lat - 0.01},{lon + 0.01},{lat + 0.01}/assets",
        "tile": f"/tiles/WebMercatorQuad/{_tile(lon, lat, 14)}/assets",
    }[route]
    answer = client.get(f"/raster/collections/{world.public.collection}{path}")
    assert answer.status_code == 200, answer.text
    listed = answer.json()
    assert listed, "the public campaign's products are there"
    hrefs = [asset["href"] for item in listed for asset in item["assets"].values()]
    assert not any(h.startswith("/") or str(world.store) in h for h in hrefs), hrefs


# -- 3. sizes and ranges that are not bounded -------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/tiles/WebMercatorQuad?assets=data&maxzoom=1100",
        "/items/{item}/tiles/WebMercatorQuad?assets=data&maxzoom=1100",
        "/WMTSCapabilities.xml?assets=data&zooms=*::0,1100",
        "/items/{item}/WMTSCapabilities.xml?assets=data&zooms=WebMercatorQuad::0,1100",
    ],
)
def test_zoom_ranges_are_bounded(world: World, client: httpx.Client, path: str) -> None:
    """Tiles are refused past zoom 24, but a tileset's `maxzoom` and WMTS's `zooms` are not
    bounded: ~8 s of CPU for an anonymous `maxzoom=1000` (a 680 kB answer) and a 500
    after ~10 s past ~1030 (morecantile overflows)."""
    url = f"/raster/collections/{world.public.collection}" + path.replace(
        "{item}", f"{world.public.id}-tile-0"
    )
    answer = client.get(url)
    assert answer.status_code == 400, (answer.status_code, answer.text[:200])
    assert _is_stac_error(answer)


def test_a_point_far_away_in_a_projected_crs_answers_at_once(
    world: World, client: httpx.Client
) -> None:
    """The mosaic's point routes transform the point to longitude/latitude with GDAL,
    whose time grows with the coordinate (3e16 m: 1.3 s, 3e17 m: 8 s): x = 1e30 pins a
    CPU for ever with one anonymous GET (every other request starved on a 2-core box)."""
    collection = world.public.collection
    for path in (
        f"/raster/collections/{collection}/point/3e17,3e17?assets=data&coord_crs=EPSG:3857",
        f"/raster/collections/{collection}/point/3e17,0/assets?coord_crs=EPSG:3857",
    ):
        try:
            answer = client.get(path, timeout=30)
        except httpx.TimeoutException:
            pytest.fail(f"{path}: no answer in 30 s")
        assert answer.status_code == 400, answer.text
        assert _is_stac_error(answer)


def test_feature_statistics_read_no_more_than_the_size_bound(
    world: World, client: httpx.Client
) -> None:
    """A part's or a feature's size is bounded only when the caller names one: without
    `max_size`/`width`/`height`, titiler reads the feature at the products' full
    resolution (0.5 x 0.5 degrees: ~4,700 x 4,700 px, ~16 s; 10 degrees would be ~7e9
    pixels). Past the bound: 400, or read no larger than it."""
    lon, lat = _where()
    answer = client.post(
        f"/raster/collections/{world.public.collection}/items/{world.public.id}-tile-0"
        "/statistics?assets=data",
        json=_square(lon, lat, 0.28),
        headers=_as(world.admin),
    )
    if answer.status_code == 400:
        assert _is_stac_error(answer)
        return
    assert answer.status_code == 200, answer.text
    for band in answer.json()["properties"]["statistics"].values():
        read = band["valid_pixels"] + band["masked_pixels"]
        assert read <= MAX_SIDE * MAX_SIDE, f"{read:.0f} pixels read"


def test_a_posted_feature_with_many_vertices_is_bounded(world: World, client: httpx.Client) -> None:
    """A POSTed feature's vertices are bounded by the body size only (64 MiB, ~1.6 million
    vertices): 400,000 vertices (16 MB) cost ~6.5 s of one request, 100,000 ~2.2 s."""
    lon, lat = _where()
    n = 400_000
    ring = [[lon + 0.003 * math.cos(2 * math.pi * i / n), lat + 0.003 * math.sin(2 * math.pi * i / n)]
            for i in range(n)]  # fmt: skip
    ring.append(ring[0])
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    answer = client.post(
        f"/raster/collections/{world.public.collection}/items/{world.public.id}-tile-0"
        "/statistics?assets=data",
        json=feature,
        headers=_as(world.admin),
    )
    assert answer.status_code == 400, answer.text[:200]
    assert _is_stac_error(answer)


# -- 4. inputs that answer 500 ----------------------------------------------------------

TILE = "tiles/WebMercatorQuad/{tile}.png?assets=data"


@pytest.mark.parametrize(
    "path",
    [
        TILE + '&colormap={"a":[1,2,3]}',
        "tiles/WebMercatorQuad/{tile}.png?assets=thumbnail",  # a product's PNG: 500
        "tiles/WebMercatorQuad/{tile}.png?assets=data%7Cbidx%3D99",
        "tiles/WebMercatorQuad/{tile}.png?assets=data%7Cbidx%3D-1",
        TILE + "&algorithm=normalizedIndex",
        TILE + "&color_formula=gamma%20r%20-1",
        TILE + "&color_formula=sigmoidal%20rgb%201e308%201e308",
        "items/{item}/tiles/WebMercatorQuad/{tile}.png?assets=data%7Cbidx%3D99",
        "items/{item}/point/1e308,1e308?assets=data",
        "items/{item}/bbox/nan,nan,nan,nan.tif?assets=data",
        "items/{item}/bbox/-inf,-90,inf,90/16x16.tif?assets=data",
        "items/{item}/statistics?assets=data&histogram_range=1,0",
        "items/{item}/statistics?assets=data&histogram_bins=0",
        "items/{item}/statistics?assets=data&p=101",
    ],
)
def test_malformed_raster_requests_answer_4xx_in_the_stac_shape(
    world: World, client: httpx.Client, path: str
) -> None:
    lon, lat = _where()
    url = f"/raster/collections/{world.public.collection}/" + path.replace(
        "{tile}", _tile(lon, lat, 14)
    ).replace("{item}", f"{world.public.id}-tile-0")
    answer = client.get(url)
    assert answer.status_code < 500, (answer.status_code, answer.text[:200])
    if answer.status_code >= 400:
        assert _is_stac_error(answer), answer.text[:200]


# -- 5. raster POSTs are reads ----------------------------------------------------------


@pytest.mark.parametrize("path", ["statistics?assets=data", "feature.tif?assets=data"])
def test_a_posted_feature_is_a_read_of_a_public_campaigns_products(
    world: World, client: httpx.Client, path: str
) -> None:
    """docs/http-api.md: the raster routes 'only read: POSTed features are queries'; the
    guard takes them for writes (its template is the nested router's, not /raster/...),
    so everybody but the campaign's owners gets 403 'not an owner ... may change it'."""
    lon, lat = _where()
    url = f"/raster/collections/{world.public.collection}/{path}"
    for who in (None, world.tenant):
        answer = client.post(url, json=_square(lon, lat, 0.002), headers=_as(who))
        assert answer.status_code == 200, (who is not None, answer.text[:200])


# -- 1c. a deleted private campaign's overview ------------------------------------------


def test_a_deleted_private_campaigns_overview_is_not_drawn_for_a_new_campaign_of_its_name(
    api: str, database: Database, world: World, client: httpx.Client, tmp_path: Path
) -> None:
    """The overview pyramid (tilekeeper.raster_overviews and its files) is kept by
    collection id and nothing removes it when the campaign is deleted: a campaign made
    later under the same free id (by anybody, public) draws the deleted private
    campaign's pixels at the overview's zooms, to anybody."""

    private = _campaign(api, database, tmp_path, world.owner, visibility="private")
    built = runner.invoke(app, ["campaign", "overview", private.id], env=_db_env(database))
    assert built.exit_code == 0, built.output
    lon, lat = _where()
    tile = _tile(lon, lat, 10)
    url = f"/raster/collections/{private.collection}/tiles/WebMercatorQuad/{tile}.tif"
    time.sleep(OVERVIEW_TTL_S)
    mine = client.get(url, params={"assets": "data"}, headers=_as(world.owner))
    assert mine.status_code == 200 and "overview" in mine.headers["x-assets"], mine.text[:200]

    gone = client.delete(f"/campaigns/{private.id}", params={"products": "true"},
                         headers=_as(world.owner))  # fmt: skip
    assert gone.status_code in (200, 204), gone.text
    # Another tenant takes the free id, public, with one product 200 km away.
    made = client.post("/campaigns", headers=_as(world.tenant),
                       json={"id": private.id, "grid": "utm-20km", "visibility": "public",
                             "temporal_extent": ["2024-01-01", "2024-12-31"]})  # fmt: skip
    assert made.status_code == 201, made.text
    far = write_raster(tmp_path / f"{private.id}-far.tif", count=1, size=SIZE, seed=3,
                       origin=(ORIGIN[0] + 200_000, ORIGIN[1] - 200_000))  # fmt: skip
    _ingest(api, str(products_settings(database).store), world.tenant, str(far),
            "--campaign", private.id)  # fmt: skip
    time.sleep(OVERVIEW_TTL_S)
    seen = client.get(url, params={"assets": "data"})
    assert seen.status_code == 204, (seen.status_code, seen.headers.get("x-assets"))
