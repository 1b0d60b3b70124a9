"""`tilekeeper export ID --format mosaic` against the real API and product store: a
private campaign's small real COGs (three in its UTM zone, one in EPSG:3035) ingested
with its owner's key, mosaicked into one COG whose pixels are the inputs' pixels, with a
STAC item that validates offline and lists every product with its checksum; the same as
a VRT and an overview COG above --max-pixels; another tenant's key finds no campaign."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import rasterio
from rasterio.warp import transform
from rio_cogeo.cogeo import cog_validate
from support.cli import runner
from support.database import Database, admin_token
from support.rasters import write_raster
from test_stac_validation import check_valid, offline  # noqa: F401 (a fixture)

from catalog_service.auth import keys
from catalog_service.cli.main import app
from ingest.rasters import FileDigest
from ingest.validate import validate

# Three 2 km x 2 km tiles side by side in UTM 31N (an L: the fourth corner is the 3035
# one), 10 m pixels, nodata 0.
UTM_ORIGINS = [(600_000, 5_660_000), (602_000, 5_660_000), (600_000, 5_658_000)]
SIZE = 200


@dataclass
class World:
    api: str
    campaign: str
    owner: str
    stranger: str
    files: dict[str, Path]  # product id -> the file ingested


def _key(database: Database, name: str, scopes: list[str]) -> str:
    with psycopg.connect(database.report.logins.admin.dsn, autocommit=True) as conn:
        return keys.create_key(conn, name, scopes, None)[1]


def _as(key: str, api: str, **more: str) -> dict[str, str]:
    return {"TILEKEEPER_API_KEY": key, "TILEKEEPER_API_URL": api, "COLUMNS": "1000", **more}


def export(
    world: World, ident: str, dest: Path, *args: str, key: str | None = None, **env: str
) -> Any:
    return runner.invoke(
        app,
        ["export", ident, str(dest), "--format", "mosaic", *args],
        env=_as(key or world.owner, world.api, **env),
    )


@pytest.fixture(scope="module")
def world(api: str, database: Database, tmp_path_factory: pytest.TempPathFactory) -> World:
    suffix = uuid.uuid4().hex[:6]
    owner = _key(database, f"mosaic-owner-{suffix}", ["campaigns:write", "products:write"])
    stranger = _key(database, f"mosaic-other-{suffix}", ["campaigns:write", "products:write"])
    campaign = f"mosaic-{suffix}"
    with httpx.Client(base_url=api, timeout=30) as http:
        body = {"id": campaign, "grid": "utm-20km", "visibility": "private"}
        made = http.post("/campaigns", json=body, headers={"Authorization": f"Bearer {owner}"})
        assert made.status_code == 201, made.text
    folder = tmp_path_factory.mktemp("mosaic-inputs")
    files = {}
    for n, origin in enumerate(UTM_ORIGINS):
        name = f"U{n}_2024-06-0{n + 1}"
        files[name] = write_raster(
            folder / f"{name}.tif", count=2, size=SIZE, seed=10 + n, origin=origin
        )
    # The fourth corner in EPSG:3035: warped to the campaign's most common CRS.
    # 300 m off the UTM tiles: its grid is turned a few degrees from theirs.
    (x,), (y,) = transform("EPSG:32631", "EPSG:3035", [602_300], [5_657_700])
    files["L0_2024-06-09"] = write_raster(
        folder / "L0_2024-06-09.tif", count=2, size=SIZE, seed=20, crs="EPSG:3035",
        origin=(round(x), round(y)),
    )  # fmt: skip
    result = runner.invoke(
        app, ["ingest", *map(str, files.values()), "--campaign", campaign], env=_as(owner, api)
    )
    assert result.exit_code == 0, result.output
    return World(api, campaign, owner, stranger, files)


def _product_items(world: World) -> dict[str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {world.owner}"}
    answer = httpx.get(
        f"{world.api}/collections/{world.campaign}-products/items",
        params={"limit": 100}, headers=headers, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return {f["id"]: f for f in answer.json()["features"]}


def _assert_pixels_are_the_inputs(world: World, mosaic: Path) -> None:
    """Sample points of every input: the UTM ones read back exactly, the warped one
    within the values of the input pixels around the point (bilinear)."""
    rng = np.random.default_rng(7)
    with rasterio.open(mosaic) as out:
        assert out.crs.to_epsg() == 32631 and out.count == 2 and out.res == (10.0, 10.0)
        for product, path in world.files.items():
            with rasterio.open(path) as src:
                data = src.read()
                for row, col in rng.integers(2, SIZE - 2, (25, 2)):
                    x, y = src.xy(row, col)
                    if src.crs != out.crs:
                        (x,), (y,) = transform(src.crs, out.crs, [x], [y])
                    got = next(out.sample([(x, y)]))
                    if src.crs == out.crs:
                        assert np.array_equal(got, data[:, row, col]), (product, row, col)
                    else:  # resampled: within its neighbours (a pixel of slack either side)
                        near = data[:, row - 2 : row + 3, col - 2 : col + 3]
                        assert (got >= near.min(axis=(1, 2)) - 1e-3).all(), (product, row, col)
                        assert (got <= near.max(axis=(1, 2)) + 1e-3).all(), (product, row, col)


def _assert_item(world: World, item_path: Path, data: Path) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(item_path.read_text())
    validate(item)  # the ingest's offline validation
    check_valid(item)  # pystac and stac-validator, offline
    products = _product_items(world)
    assert len(products) == len(world.files)
    provenance = {p["item"]: p for p in item["properties"]["tilekeeper:provenance"]}
    assert set(provenance) == set(products) == set(world.files)
    for product_id, product in products.items():
        asset = product["assets"]["data"]
        entry = provenance[product_id]
        assert entry["href"] == asset["href"] and entry["asset"] == "data"
        assert entry["file:checksum"] == asset["file:checksum"]
        assert entry["file:checksum"] == _served_checksum(world, asset["href"])
    derived = [link["href"] for link in item["links"] if link["rel"] == "derived_from"]
    assert sorted(derived) == sorted(
        f"{world.api.rstrip('/')}/collections/{world.campaign}-products/items/{p}" for p in products
    )
    own = FileDigest.of(data)
    assert item["assets"]["data"]["file:checksum"] == own.checksum
    assert item["assets"]["data"]["file:size"] == own.size == data.stat().st_size
    assert (item_path.parent / item["assets"]["data"]["href"]).resolve() == data.resolve()
    assert item["properties"]["proj:code"] == "EPSG:32631"
    assert item["properties"]["start_datetime"].startswith("2024-06-01")
    assert item["properties"]["end_datetime"].startswith("2024-06-09")
    return item


def _served_checksum(world: World, href: str) -> str:
    """The multihash of a product's file as the API serves it to the owner."""
    answer = httpx.get(href, headers={"Authorization": f"Bearer {world.owner}"}, timeout=30)
    assert answer.status_code == 200
    return "1220" + hashlib.sha256(answer.content).hexdigest()


@pytest.mark.usefixtures("offline")
def test_a_campaigns_products_become_one_cog_with_their_provenance(
    world: World, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "mosaic.tif"
    result = export(world, world.campaign, dest)
    assert result.exit_code == 0, result.output
    assert "read 4/4 inputs (4 from the local product store" in result.output
    assert "1 input(s) warped" in result.output
    assert f"exported 4 product file(s) of {world.campaign}-products as the COG" in result.output
    assert cog_validate(str(dest), strict=True, quiet=True)[0]
    with rasterio.open(dest) as out:
        assert out.overviews(1) and out.compression.name == "deflate" and out.nodata == 0
        # The L: 4 km x 4 km (400 px) at least, the UTM tiles' corner on the grid.
        assert out.width >= 400 and out.height >= 400
        assert out.bounds.left == 600_000 and out.bounds.top == 5_660_000
    _assert_pixels_are_the_inputs(world, dest)
    item = _assert_item(world, dest.with_suffix(".json"), dest)
    assert item["assets"]["data"]["type"].endswith("profile=cloud-optimized")
    assert len(item["assets"]["data"]["raster:bands"]) == 2
    assert not list((tmp_path / "out").glob(".mosaic-*"))  # the work folder is gone


def test_the_product_collection_id_works_too_and_files_come_through_the_api(
    world: World, tmp_path: Path
) -> None:
    local = tmp_path / "mosaic.tif"
    assert export(world, world.campaign, local).exit_code == 0
    # No local store holding the files: each is downloaded with the key.
    dest = tmp_path / "api" / "mosaic.tif"
    empty = tmp_path / "empty-store"
    empty.mkdir()
    result = export(world, f"{world.campaign}-products", dest, TILEKEEPER_PRODUCTS_STORE=str(empty))
    assert result.exit_code == 0, result.output
    assert "read 4/4 inputs (0 from the local product store, 4 through the API" in result.output
    with rasterio.open(local) as a, rasterio.open(dest) as b:
        assert a.transform == b.transform and np.array_equal(a.read(), b.read())


@pytest.mark.usefixtures("offline")
def test_above_max_pixels_a_vrt_and_an_overview_cog(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "big.tif"
    result = export(world, world.campaign, dest, "--max-pixels", "20000")
    assert result.exit_code == 0, result.output
    assert "more than --max-pixels 20,000: no single COG" in result.output
    vrt, overview = tmp_path / "big.vrt", tmp_path / "big.overview.tif"
    assert not dest.exists() and vrt.is_file() and overview.is_file()
    assert len(list((tmp_path / "big_inputs").glob("*.tif"))) == 4  # beside the VRT
    _assert_pixels_are_the_inputs(world, vrt)
    assert cog_validate(str(overview), quiet=True)[0]
    with rasterio.open(vrt) as full, rasterio.open(overview) as small:
        assert full.width * full.height > 20_000 >= small.width * small.height
        assert small.bounds == pytest.approx(full.bounds, abs=full.res[0] * 8)
    item = _assert_item(world, dest.with_suffix(".json"), vrt)
    assert item["assets"]["overview"]["roles"] == ["overview"]
    assert item["assets"]["overview"]["file:checksum"] == FileDigest.of(overview).checksum
    # Again: the earlier inputs are replaced; a folder of somebody else's is not.
    again = export(world, world.campaign, dest, "--max-pixels", "20000")
    assert again.exit_code == 0, again.output
    assert len(list((tmp_path / "big_inputs").glob("*.tif"))) == 4
    (tmp_path / "mine_inputs").mkdir()
    (tmp_path / "mine_inputs" / "notes.txt").write_text("mine")
    refused = export(world, world.campaign, tmp_path / "mine.tif", "--max-pixels", "20000")
    assert refused.exit_code == 1 and "is not an earlier mosaic's inputs" in refused.output
    assert (tmp_path / "mine_inputs" / "notes.txt").read_text() == "mine"


def test_another_tenants_key_finds_no_campaign_as_for_a_missing_one(
    world: World, tmp_path: Path, database: Database
) -> None:
    missing = f"mosaic-missing-{uuid.uuid4().hex[:6]}"
    answers = {}
    for ident in (world.campaign, f"{world.campaign}-products", missing):
        result = export(world, ident, tmp_path / "x.tif", key=world.stranger)
        assert result.exit_code == 1
        answers[ident] = result.output.replace(ident, "ID")
    assert len(set(answers.values())) == 1, answers
    assert "no campaign or product collection 'ID' here" in answers[missing]
    assert not list(tmp_path.iterdir())  # nothing written
    # A campaign without products says what to do.
    empty = f"mosaic-empty-{uuid.uuid4().hex[:6]}"
    headers = {"Authorization": f"Bearer {admin_token(database)}"}
    made = httpx.post(f"{world.api}/campaigns", json={"id": empty, "grid": "utm-20km"}, headers=headers, timeout=30)  # fmt: skip
    assert made.status_code == 201, made.text
    result = export(world, empty, tmp_path / "x.tif", key=admin_token(database))
    assert result.exit_code == 1
    assert "has no products yet" in result.output
    assert f"tilekeeper ingest --campaign {empty}" in result.output
