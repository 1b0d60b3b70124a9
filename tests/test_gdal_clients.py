"""Debian's command-line GDAL (gdal-bin, 3.6 on bookworm) against the real API over HTTP:
STACIT over a search of a campaign's products opens as one mosaic whose pixels are the
products' own, and a product's COG opens through /vsicurl/ in a few ranged requests.

Skipped only when ``gdalinfo`` is missing (scripts/bootstrap.sh installs gdal-bin)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds
from support.cli import runner
from support.database import Database, auth_headers, products_settings
from support.rasters import write_raster

from catalog_service.cli.main import app
from catalog_service.ids import campaign_products_id

pytestmark = pytest.mark.skipif(
    shutil.which("gdalinfo") is None,
    reason="GDAL's command-line tools are not installed (apt-get install gdal-bin)",
)

PIXEL = 10.0  # write_raster's resolution (m)
SIZE = 64  # px, each mosaic product
ORIGIN = (600_000.0, 5_660_000.0)  # write_raster's default upper-left corner, EPSG:32631
# Three products: two side by side and one below the first (the mosaic has a hole).
OFFSETS = [(0, 0), (1, 0), (0, 1)]
# gdalinfo /vsicurl/ of a product COG: a HEAD (size) and one ranged GET of the first
# 16 KiB, which hold every IFD (measured with GDAL 3.6.2). Without the COG layout (the
# overviews' IFDs at the end of the file) a third request reads them; without Range
# support the GET brings the whole file.
MAX_COG_REQUESTS = 2
MAX_COG_BYTES = 64 * 1024


@dataclass(frozen=True)
class Products:
    campaign: str
    collection: str
    items: dict[str, dict[str, Any]]  # item id -> item as served
    sources: dict[str, Path]  # item id -> the raster ingested


@dataclass(frozen=True)
class Exchange:
    method: str
    status: int
    length: int  # the answer's Content-Length


def http_exchanges(transcript: str) -> list[Exchange]:
    """The requests and answers in GDAL's CPL_CURL_VERBOSE=YES transcript (curl's
    ``> GET /path HTTP/1.1`` and ``< HTTP/1.1 206 ...``, ``< content-length: n``)."""
    found: list[list[Any]] = []
    for line in transcript.splitlines():
        if request := re.match(r"> ([A-Z]+) \S+ HTTP/", line):
            found.append([request[1], 0, 0])
        elif found and (status := re.match(r"< HTTP/\S+ (\d{3})", line)):
            found[-1][1] = int(status[1])
        elif found and (length := re.match(r"(?i)< content-length:\s*(\d+)", line)):
            found[-1][2] = int(length[1])
    return [Exchange(method, status, length) for method, status, length in found]


def gdal_version() -> str:
    return gdal("gdalinfo", "--version").stdout.strip()


def gdal(*args: str, **config: str) -> subprocess.CompletedProcess[str]:
    """A GDAL utility as a user runs it, with the configuration users are advised to
    set for remote files (no directory listing on open) plus ``config``."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_TIMEOUT": "30"})
    env.update(config)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)


def gdalinfo_json(name: str) -> dict[str, Any]:
    done = gdal("gdalinfo", "-json", name, CPL_DEBUG="STACIT")
    assert done.returncode == 0, f"gdalinfo {name} failed:\n{done.stderr}"
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def ingest(api: str, store: str, *args: str) -> None:
    env = {"TILEKEEPER_API_URL": api, "TILEKEEPER_PRODUCTS_STORE": store, "COLUMNS": "1000"}
    result = runner.invoke(app, ["ingest", *args], env=env)
    assert result.exit_code == 0, result.output


def served_items(http: httpx.Client, collection: str) -> dict[str, dict[str, Any]]:
    answer = http.get(f"/collections/{collection}/items", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return {item["id"]: item for item in answer.json()["features"]}


@pytest.fixture(scope="module")
def http(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, headers=auth_headers(), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def products(
    api: str, database: Database, http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> Products:
    """A campaign with three adjacent one-band products (64 px, 10 m, EPSG:32631) in its
    product collection, each of its own random values."""
    store = products_settings(database).store
    assert store
    campaign = f"gdal-{uuid.uuid4().hex[:8]}"
    body = {"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-01-01", "2024-12-31"]}
    answer = http.post("/campaigns", json=body)
    assert answer.status_code == 201, answer.text
    folder = tmp_path_factory.mktemp("gdal-products")
    sources: dict[str, Path] = {}
    for n, (col, row) in enumerate(OFFSETS):
        origin = (ORIGIN[0] + col * SIZE * PIXEL, ORIGIN[1] - row * SIZE * PIXEL)
        path = folder / f"tile-{n}.tif"
        sources[path.stem] = write_raster(path, count=1, size=SIZE, seed=10 + n, origin=origin)
    ingest(api, store, *(str(p) for p in sources.values()), "--campaign", campaign)
    collection = campaign_products_id(campaign)
    # One product as stored before products carried proj:epsg (projection v2.0.0, only
    # proj:code): it is served as ingested today, so it mosaics too.
    database.sql(
        """UPDATE items SET content = jsonb_set(content #- '{properties,proj:epsg}',
               '{stac_extensions}', (SELECT jsonb_agg(replace(e, 'projection/v1.2.0', 'projection/v2.0.0'))
                                     FROM jsonb_array_elements_text(content->'stac_extensions') e))
           WHERE collection = %s AND id = 'tile-2'""",
        collection,
    )
    stored = database.sql(
        "SELECT content->'properties' ? 'proj:epsg' FROM items WHERE collection = %s AND id = 'tile-2'",
        collection,
    )
    assert stored == [(False,)]
    items = served_items(http, collection)
    assert set(items) == set(sources)
    assert items["tile-2"]["properties"]["proj:epsg"] == 32631
    assert items["tile-2"]["stac_extensions"] == items["tile-0"]["stac_extensions"]
    return Products(campaign, collection, items, sources)


def search_url(api: str, collection: str) -> str:
    query = urlencode({"collections": collection, "limit": 100})
    return f"{api.rstrip('/')}/search?{query}"


def test_stacit_over_a_search_of_a_campaigns_products_is_one_mosaic(
    api: str, products: Products, tmp_path: Path
) -> None:
    name = f'STACIT:"{search_url(api, products.collection)}":asset=data'
    info = gdalinfo_json(name)
    assert info["driverShortName"] == "VRT"  # STACIT builds a virtual mosaic
    # One mosaic, not a list of subdatasets (one per collection, asset or CRS).
    assert "SUBDATASETS" not in info.get("metadata", {}), info["metadata"]
    assert "32631" in info["coordinateSystem"]["wkt"]

    # Its extent is the union of the products' (native) bounds, at their resolution.
    bounds = np.array([item["properties"]["proj:bbox"] for item in products.items.values()])
    west, south = bounds[:, 0].min(), bounds[:, 1].min()
    east, north = bounds[:, 2].max(), bounds[:, 3].max()
    assert info["geoTransform"] == pytest.approx([west, PIXEL, 0, north, 0, -PIXEL])
    assert info["size"] == [round((east - west) / PIXEL), round((north - south) / PIXEL)]
    assert info["size"] == [2 * SIZE, 2 * SIZE]
    # ... and in WGS 84 it covers every product's bbox (a 1e-4 degree slack: the
    # mosaic's corners are reprojected, the items' bboxes come from their footprints).
    ring = np.array(info["wgs84Extent"]["coordinates"][0])
    for item in products.items.values():
        lon0, lat0, lon1, lat1 = item["bbox"]
        assert ring[:, 0].min() - 1e-4 <= lon0 and lon1 <= ring[:, 0].max() + 1e-4
        assert ring[:, 1].min() - 1e-4 <= lat0 and lat1 <= ring[:, 1].max() + 1e-4

    # Pixels read back through the mosaic (over HTTP, from the served COGs) are the
    # source rasters' own: a window across the seam of the two upper products...
    left, right = products.sources["tile-0"], products.sources["tile-1"]
    seam_x = ORIGIN[0] + SIZE * PIXEL
    window = (
        seam_x - 4 * PIXEL,
        ORIGIN[1] - 20 * PIXEL,
        seam_x + 4 * PIXEL,
        ORIGIN[1] - 12 * PIXEL,
    )
    out = tmp_path / "window.tif"
    done = gdal(
        "gdal_translate", "-q", "-projwin", str(window[0]), str(window[3]), str(window[2]),
        str(window[1]), name, str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with rasterio.open(out) as got, rasterio.open(left) as a, rasterio.open(right) as b:
        read = got.read(1)
        expected = np.hstack(
            [
                a.read(1, window=from_bounds(window[0], window[1], seam_x, window[3], a.transform)),
                b.read(1, window=from_bounds(seam_x, window[1], window[2], window[3], b.transform)),
            ]
        )
    assert read.shape == expected.shape == (8, 8)
    np.testing.assert_array_equal(read, expected)
    # ... and one pixel of the lower product, by its coordinates.
    x, y = ORIGIN[0] + 5.5 * PIXEL, ORIGIN[1] - (SIZE + 7.5) * PIXEL
    done = gdal("gdallocationinfo", "-valonly", "-geoloc", name, str(x), str(y))
    assert done.returncode == 0, done.stderr
    with rasterio.open(products.sources["tile-2"]) as src:
        value = float(next(src.sample([(x, y)]))[0])
    assert float(done.stdout.strip()) == pytest.approx(value, rel=1e-6)


def test_a_product_cog_opens_over_vsicurl_in_a_few_ranged_requests(
    api: str, database: Database, http: httpx.Client, products: Products, tmp_path: Path
) -> None:
    # A product big enough to have overviews (600 px, 4 bands: ~5.5 MB, incompressible).
    store = products_settings(database).store
    assert store
    source = write_raster(tmp_path / "big.tif", seed=3)
    ingest(api, store, str(source), "--campaign", products.campaign)
    item = served_items(http, products.collection)["big"]
    asset = item["assets"]["data"]
    href = asset["href"]
    assert href.startswith(("http://", "https://")), href

    done = gdal("gdalinfo", "-json", f"/vsicurl/{href}", CPL_CURL_VERBOSE="YES")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["driverShortName"] == "GTiff"
    assert info["size"] == [600, 600] and len(info["bands"]) == 4
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert info["bands"][0]["overviews"]  # internal overviews, as a COG of this size has

    exchanges = http_exchanges(done.stderr)
    print(
        f"\ngdalinfo /vsicurl/ of a {asset['file:size']} byte COG ({gdal_version()}): "
        f"{len(exchanges)} HTTP request(s): {exchanges}"
    )
    assert 1 <= len(exchanges) <= MAX_COG_REQUESTS, exchanges
    gets = [e for e in exchanges if e.method == "GET"]
    # The header came in ranges (206), never the whole file.
    assert gets and all(e.status == 206 for e in gets), exchanges
    downloaded = sum(e.length for e in gets)
    assert downloaded <= MAX_COG_BYTES < asset["file:size"], exchanges
