"""`tilekeeper ingest` and `export` on small real rasters made here: COG, plain GeoTIFF,
multi-band, class map, and bad inputs (no CRS, corrupt, truncated, not a raster, wrong
checksum, href leaving its folder, unwritable store), against the real API and product
store; the object store against a local S3-compatible server (moto)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import requests
from rio_cogeo.cogeo import cog_validate
from support.cli import ingest, runner
from support.database import Database, products_settings
from support.rasters import write_raster
from support.servers import moto_s3

from catalog_service.api.server import free_port
from catalog_service.cli.main import app
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import ApiError, HttpSession
from catalog_service.database import hrefs
from ingest.validate import validate


@pytest.fixture()
def rasters(tmp_path: Path) -> dict[str, Path]:
    from ingest.rasters import make_cog

    plain = write_raster(tmp_path / "plain.tif")  # striped: not a COG at 600 px
    cog = tmp_path / "cog.tif"
    make_cog(write_raster(tmp_path / "src.tif", seed=2), cog)
    (tmp_path / "src.tif").unlink()
    classes = write_raster(
        tmp_path / "classes.tif",
        count=1,
        dtype="uint8",
        colormap={i: (40 * i % 256, 120, 200 - 20 * i, 255) for i in range(8)},
    )
    return {"plain": plain, "cog": cog, "classes": classes}


@pytest.fixture()
def env(api: str, database: Database, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    store = products_settings(database).store
    assert store
    monkeypatch.setenv("TILEKEEPER_API_URL", api)
    monkeypatch.setenv("TILEKEEPER_PRODUCTS_STORE", store)
    return {"api": api, "store": store}


def files_in(store: str) -> set[Path]:
    root = Path(store)
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def items_of(api: str, collection: str) -> list[dict[str, Any]]:
    http = HttpSession(api)
    if not http.exists(f"collections/{collection}"):
        return []
    features: list[dict[str, Any]] = http.get(
        f"collections/{collection}/items", params={"limit": 1000}
    )["features"]
    return features


def test_ingest_makes_valid_cogs_with_provenance_served_with_ranges(
    env: dict[str, str], rasters: dict[str, Path]
) -> None:
    result = ingest(*(str(p) for p in rasters.values()), "--collection", "products-a", "--json")
    assert result.exit_code == 0, result.output
    items = {i["id"]: i for i in items_of(env["api"], "products-a")}
    assert set(items) == {"plain", "cog", "classes"}
    for item in items.values():
        validate(item)
        asset = item["assets"]["data"]
        assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
        assert item["properties"]["proj:code"] == "EPSG:32631"
        assert item["properties"]["proj:shape"] == [600, 600]
        assert item["properties"]["processing:software"]["tilekeeper"]
        body = requests.get(asset["href"], timeout=30)
        assert body.status_code == 200
        assert "content-encoding" not in body.headers  # a COG is not gzipped again
        digest = "1220" + hashlib.sha256(body.content).hexdigest()
        assert asset["file:checksum"] == digest and asset["file:size"] == len(body.content)
        ranged = requests.get(asset["href"], headers={"Range": "bytes=0-99"}, timeout=30)
        assert ranged.status_code == 206 and len(ranged.content) == 100
        thumb = requests.get(item["assets"]["thumbnail"]["href"], timeout=30)
        assert thumb.status_code == 200
        with _decoded_png(thumb.content) as png:  # drawn from the 256 px statistics' read
            assert (png.height, png.width) == (256, 256)  # 600 px, no overview: resampled
            if item["id"] == "classes":  # palette indices, the file's own colours
                assert png.count == 1 and png.colormap(1)[3][:3] == (120, 120, 140)
            else:  # RGB and alpha
                assert png.count == 4 and png.read(4).max() == 255
    # The COG came through byte for byte; the plain GeoTIFF was converted.
    assert items["cog"]["assets"]["data"]["file:size"] == rasters["cog"].stat().st_size
    local = Path(env["store"]) / "products-a" / "plain"
    converted = next(local.rglob("data.tif"))
    assert cog_validate(str(converted))[0]
    bands = items["plain"]["assets"]["data"]["raster:bands"]
    assert len(bands) == 4 and bands[0]["data_type"] == "float32" and bands[0]["nodata"] == 0
    assert 0 < bands[0]["statistics"]["mean"] < 100
    # A class map keeps its classes in the overviews (mode resampling).
    with rasterio.open(
        next((Path(env["store"]) / "products-a" / "classes").rglob("data.tif"))
    ) as src:
        overview = src.read(1, out_shape=(1, 75, 75))
        assert set(np.unique(overview)) <= set(range(8))
        assert src.colormap(1)[3][:3] == (120, 120, 140)
    collection = HttpSession(env["api"]).get("collections/products-a")
    west, south, east, north = collection["extent"]["spatial"]["bbox"][0]
    assert 4.4 < west < east < 4.6 and 50.9 < south < north < 51.2
    assert collection["summaries"]["proj:code"] == ["EPSG:32631"]


def test_the_same_input_twice_changes_nothing_and_a_change_is_a_new_version(
    env: dict[str, str], tmp_path: Path
) -> None:
    tile = write_raster(tmp_path / "T1.tif", size=300)
    assert ingest(str(tile), "--collection", "products-v").exit_code == 0
    before = files_in(env["store"])
    again = ingest(str(tile), "--collection", "products-v", "--json")
    assert again.exit_code == 0 and '"result": "unchanged"' in again.output
    assert files_in(env["store"]) == before
    write_raster(tile, size=300, seed=9)  # reprocessed
    third = ingest(str(tile), "--collection", "products-v", "--json")
    assert third.exit_code == 0 and '"result": "updated"' in third.output
    items = {i["id"]: i for i in items_of(env["api"], "products-v")}
    assert set(items) == {"T1", "T1_v1"}
    latest, old = items["T1"], items["T1_v1"]
    assert latest["properties"]["version"] == "2" and old["properties"]["deprecated"] is True
    rels = {link["rel"]: link["href"] for link in latest["links"]}
    assert rels["predecessor-version"].endswith("/items/T1_v1")
    old_rels = {link["rel"]: link["href"] for link in old["links"]}
    assert old_rels["latest-version"].endswith("/items/T1")
    # Both versions' files stay readable.
    for item in (latest, old):
        assert requests.get(item["assets"]["data"]["href"], timeout=30).status_code == 200


def _hrefs(item: dict[str, Any]) -> list[str]:
    return [a["href"] for a in item["assets"].values()] + [
        link["href"] for link in item["links"] if link["rel"] != "via"
    ]


def test_hrefs_follow_the_address_the_api_is_reached_at(
    env: dict[str, str], database: Database, tmp_path: Path
) -> None:
    """Files and links are stored relative to the API's root and served at the address
    each request used: reached as ``localhost``, nothing points at ``127.0.0.1``."""
    tile = write_raster(tmp_path / "T1.tif", size=200)
    assert ingest(str(tile), "--collection", "products-h").exit_code == 0
    write_raster(tile, size=200, seed=4)  # a second version: links between versions too
    assert ingest(str(tile), "--collection", "products-h").exit_code == 0
    stored = database.sql(
        "SELECT content->'assets'->'data'->>'href' FROM items WHERE collection = 'products-h'"
    )
    assert stored and all(href.startswith("products/files/products-h/") for (href,) in stored)
    other = env["api"].replace("127.0.0.1", "localhost")
    for item in items_of(other, "products-h"):
        assert all(href.startswith(f"{other}/") for href in _hrefs(item)), _hrefs(item)
        assert requests.get(item["assets"]["data"]["href"], timeout=30).status_code == 200
    # Items stored before (absolute, at the ingest's address) are rewritten by the
    # migration; hrefs to elsewhere (object storage, the back-end) stay as they were.
    elsewhere = "https://bucket.example.org/products-h/T1/x.tif"
    database.sql(
        """UPDATE items SET content = jsonb_set(jsonb_set(jsonb_set(content,
               '{assets,data,href}', to_jsonb('http://10.0.0.9:8080/tk/' || (content->'assets'->'data'->>'href'))),
               '{assets,extra}', jsonb_build_object('href', %s::text)),
               '{links}', content->'links' || jsonb_build_array(
                   jsonb_build_object('rel', 'predecessor-version',
                                      'href', 'http://10.0.0.9:8080/tk/collections/products-h/items/T1_v1'),
                   jsonb_build_object('rel', 'via', 'href', 'http://10.0.0.9:9/jobs/j1/results')))
           WHERE collection = 'products-h' AND id = 'T1'""",
        elsewhere,
    )
    database.sql(hrefs.MIGRATION_SQL)
    item = HttpSession(other).get("collections/products-h/items/T1")
    assert item["assets"]["data"]["href"].startswith(f"{other}/products/files/products-h/T1/")
    assert item["assets"]["extra"]["href"] == elsewhere
    links = [(link["rel"], link["href"]) for link in item["links"]]
    assert ("predecessor-version", f"{other}/collections/products-h/items/T1_v1") in links
    assert ("via", "http://10.0.0.9:9/jobs/j1/results") in links
    assert requests.get(item["assets"]["data"]["href"], timeout=30).status_code == 200


@pytest.mark.parametrize(
    "href",
    ["javascript:alert(1)", "file:///etc/passwd", "/etc/passwd", "../../x.tif", "x.tif", ""],
)
def test_a_product_file_must_be_on_the_web_in_a_bucket_or_the_apis_own(
    env: dict[str, str], tmp_path: Path, href: str
) -> None:
    """One ``javascript:`` href broke GDAL's STACIT mosaic of the whole collection."""
    tile = write_raster(tmp_path / "H1.tif", size=100)
    assert ingest(str(tile), "--collection", "products-hrefs").exit_code == 0
    item = items_of(env["api"], "products-hrefs")[0]
    bad = {**item, "id": "H2", "assets": {"data": {**item["assets"]["data"], "href": href}}}
    http = HttpSession(env["api"])
    with pytest.raises(ApiError) as refused:
        http.post("collections/products-hrefs/products", json={"writes": [{"items": [bad]}]})
    assert refused.value.status == 400 and "asset data" in str(refused.value)
    assert [i["id"] for i in items_of(env["api"], "products-hrefs")] == ["H1"]
    good = {**bad, "assets": {"data": {**bad["assets"]["data"], "href": "s3://bucket/H2.tif"}}}
    http.post("collections/products-hrefs/products", json={"writes": [{"items": [good]}]})
    assert {i["id"] for i in items_of(env["api"], "products-hrefs")} == {"H1", "H2"}
    http.delete("collections/products-hrefs/items/H2")


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    bad = tmp_path / "bad"
    bad.mkdir()
    no_crs = write_raster(bad / "no_crs.tif", crs=None, size=100)
    corrupt = bad / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + os.urandom(5000))
    text = bad / "notes.tif"
    text.write_text("not a raster at all\n")
    from ingest.rasters import make_cog

    make_cog(write_raster(bad / "big.tif", size=1200), bad / "full.tif")
    truncated = bad / "truncated.tif"
    truncated.write_bytes((bad / "full.tif").read_bytes()[:-200_000])
    (bad / "big.tif").unlink()
    (bad / "full.tif").unlink()
    folder = tmp_path / "stac"
    folder.mkdir()
    write_raster(folder / "r.tif", size=100)
    mismatch = folder / "item-checksum.json"
    escape = folder / "item-escape.json"
    base = {
        "type": "Feature", "stac_version": "1.1.0", "id": "x", "bbox": [0, 0, 1, 1],
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "properties": {"datetime": "2024-06-01T00:00:00Z"}, "links": [],
    }  # fmt: skip
    mismatch.write_text(json.dumps({**base, "id": "m", "assets": {"r": {
        "href": "r.tif", "type": "image/tiff", "file:checksum": "1220" + "0" * 64}}}))  # fmt: skip
    escape.write_text(json.dumps({**base, "id": "e", "assets": {"r": {
        "href": "../bad/no_crs.tif", "type": "image/tiff"}}}))  # fmt: skip
    return {
        "no CRS": no_crs,
        "corrupt": corrupt,
        "not a raster": text,
        "truncated": truncated,
        "checksum": mismatch,
        "escape": escape,
        "missing": tmp_path / "nowhere.tif",
    }


EXPECTED = {
    "no CRS": "has no CRS",
    "corrupt": "not a readable raster",
    "not a raster": "not a readable raster",
    "truncated": "truncated",
    "checksum": "does not match",
    "escape": "leaves the folder",
    "missing": "no such file",
}


def test_bad_inputs_fail_one_by_one_and_change_nothing(env: dict[str, str], tmp_path: Path) -> None:
    bad = _bad_inputs(tmp_path)
    good = write_raster(tmp_path / "good.tif", size=120)
    before = files_in(env["store"])
    for name, path in bad.items():
        result = ingest(str(path), "--collection", "products-bad")
        assert result.exit_code == 1, (name, result.output)
        assert EXPECTED[name] in result.output, (name, result.output)
        assert files_in(env["store"]) == before, name
        assert items_of(env["api"], "products-bad") == [], name
    # All at once with a good one: the good one lands, every bad one is named.
    result = ingest(str(good), *(str(p) for p in bad.values()), "--collection", "products-bad")
    assert result.exit_code == 1
    assert result.output.count("failed:") == len(bad)
    assert [i["id"] for i in items_of(env["api"], "products-bad")] == ["good"]


def test_an_unwritable_store_leaves_the_catalogue_unchanged(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0:
        # root ignores permissions: a store path under a regular file cannot be created.
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        monkeypatch.setenv("TILEKEEPER_PRODUCTS_STORE", str(blocker / "store"))
    else:
        store = tmp_path / "readonly"
        store.mkdir(mode=0o500)
        monkeypatch.setenv("TILEKEEPER_PRODUCTS_STORE", str(store))
    result = ingest(str(write_raster(tmp_path / "t.tif", size=100)), "--collection", "products-ro")
    assert result.exit_code == 1 and "cannot write" in result.output
    assert items_of(env["api"], "products-ro") == []


def test_a_failed_catalogue_write_removes_the_files(env: dict[str, str], tmp_path: Path) -> None:
    """The files are written, then the item: an item the API refuses (here: its job
    tile does not exist) leaves no file behind."""
    from catalog_service.client.campaigns import Campaigns

    Campaigns(HttpSession(env["api"])).create(
        {"id": "ingest-c", "grid": "utm-20km", "temporal_extent": ["2024-03-01", "2024-09-30"]}
    )
    before = files_in(env["store"])
    result = ingest(
        str(write_raster(tmp_path / "x.tif", size=100)),
        "--collection", "products-j", "--campaign", "ingest-c", "--tile", "T9",
    )  # fmt: skip
    assert result.exit_code == 1 and "has no tile T9" in result.output
    assert files_in(env["store"]) == before
    assert items_of(env["api"], "products-j") == []
    # A campaign's product collection is not a campaign.
    listed = [c["id"] for c in HttpSession(env["api"]).get("campaigns")["campaigns"]]
    assert "ingest-c" in listed and "products-j" not in listed


def test_one_refused_product_in_a_batch_fails_alone(env: dict[str, str], tmp_path: Path) -> None:
    """Staged products are written in batches, all or nothing; a batch the API refuses is
    retried product by product, so only the bad one fails and only its files go."""
    from catalog_service.client.campaigns import Campaigns
    from ingest.engine import Ingester, Staged
    from ingest.sources import Product, Raster
    from ingest.store import LocalStore

    Campaigns(HttpSession(env["api"])).create(
        {"id": "ingest-b", "grid": "utm-20km", "temporal_extent": ["2024-03-01", "2024-09-30"]}
    )
    store = LocalStore(Path(env["store"]))
    ingester = Ingester(HttpSession(env["api"]), store, "products-b", campaign="ingest-b")
    rasters = [write_raster(tmp_path / f"B{n}.tif", size=100, seed=n) for n in range(3)]
    staged = []
    for path in rasters:
        ready = ingester.stage(Product(path.stem, [Raster(path, "data")], str(path)))
        assert isinstance(ready, Staged) and ready.files
        staged.append(ready)
    bad = staged[1] = Staged(
        staged[1].product, staged[1].item, ("ingest-b", "T404"), staged[1].files
    )
    outcomes = ingester.commit(staged)
    assert [o.result for o in outcomes] == ["created", "failed", "created"]
    assert "has no tile T404" in (outcomes[1].error or "")
    assert {i["id"] for i in items_of(env["api"], "products-b")} == {"B0", "B2"}
    kept = {str(p) for p in files_in(env["store"])}
    assert not any(key in kept for key in bad.files)
    assert all(key in kept for s in (staged[0], staged[2]) for key in s.files)


def test_urls_of_rasters_and_stac_documents_are_downloaded_and_bad_ones_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert ingest(str(write_raster(tmp_path / "U1.tif", size=150)), "--collection", "products-u").exit_code == 0  # fmt: skip
    (item,) = items_of(env["api"], "products-u")
    tif_url = item["assets"]["data"]["href"]
    item_url = f"{env['api']}/collections/products-u/items/U1"
    result = ingest(tif_url, item_url, "--collection", "products-u2", "--json")
    assert result.exit_code == 0, result.output
    copied = {i["id"]: i for i in items_of(env["api"], "products-u2")}
    assert set(copied) == {"data", "U1"}  # the file's name, the item's id
    for product in copied.values():
        assert product["assets"]["data"]["file:checksum"] == item["assets"]["data"]["file:checksum"]
    gone = f"{env['api']}/products/files/products-u/U1/0000/data.tif?expires=1"
    closed = f"http://127.0.0.1:{free_port()}/x.tif"
    refused = ingest(gone, closed, "--collection", "products-u3")
    assert refused.exit_code == 1
    assert "404 Not Found (a signed URL that expired" in refused.output
    assert "cannot download" in refused.output
    assert items_of(env["api"], "products-u3") == []


def test_dry_run_writes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    result = ingest(str(write_raster(tmp_path / "d.tif", size=100)), "--collection", "products-d", "--dry-run", "--json")  # fmt: skip
    assert result.exit_code == 0 and "would create" in result.output
    assert not HttpSession(env["api"]).exists("collections/products-d")


def test_export_round_trips(env: dict[str, str], tmp_path: Path) -> None:
    for n in range(3):
        assert ingest(str(write_raster(tmp_path / f"E{n}.tif", size=100, seed=n)), "--collection", "products-e").exit_code == 0  # fmt: skip
    static = tmp_path / "static"
    assert runner.invoke(app, ["export", "products-e", str(static), "--with-assets"]).exit_code == 0
    catalog = pystac.Catalog.from_file(str(static / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert sorted(i.id for i in items) == ["E0", "E1", "E2"]
    for item in items:
        validate(item.to_dict(include_self_link=False, transform_hrefs=False))
        href = item.assets["data"].get_absolute_href()
        assert href and Path(href).is_file() and cog_validate(href)[0]
    assert "http" not in (static / "catalog.json").read_text()
    parquet = tmp_path / "items.parquet"
    assert runner.invoke(app, ["export", "products-e", str(parquet), "--format", "geoparquet"]).exit_code == 0  # fmt: skip
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    assert table.num_rows == 3 and "proj:code" in table.column_names
    ndjson = tmp_path / "items.ndjson"
    assert runner.invoke(app, ["export", "products-e", str(ndjson), "--format", "ndjson"]).exit_code == 0  # fmt: skip
    assert len(ndjson.read_text().splitlines()) == 3


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    with moto_s3() as url:
        yield url


def test_products_on_an_s3_compatible_store(
    env: dict[str, str], s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    import boto3

    # A dissemination bucket: public read.
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(
        Bucket="products", ACL="public-read"
    )
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
              "Action": "s3:GetObject", "Resource": "arn:aws:s3:::products/*"}]}  # fmt: skip
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").put_bucket_policy(
        Bucket="products", Policy=json.dumps(policy)
    )
    monkeypatch.setenv("TILEKEEPER_PRODUCTS_STORE", "s3://products/eu27")
    monkeypatch.setenv("TILEKEEPER_PRODUCTS_S3_ENDPOINT", s3_server)
    result = ingest(str(write_raster(tmp_path / "S1.tif", size=200)), "--collection", "products-s3")
    assert result.exit_code == 0, result.output
    (item,) = items_of(env["api"], "products-s3")
    href = item["assets"]["data"]["href"]
    assert href.startswith(f"{s3_server}/products/eu27/products-s3/S1/")
    body = requests.get(href, timeout=30)
    assert body.status_code == 200
    assert (
        "1220" + hashlib.sha256(body.content).hexdigest() == item["assets"]["data"]["file:checksum"]
    )
    with rasterio.open(href) as src:  # GDAL reads it by ranges over HTTP
        assert src.crs.to_epsg() == 32631 and src.overviews(1) is not None


def test_products_of_dates_far_apart_share_a_collection_and_are_found_by_date(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The second date falls outside the partition the first one made: the write path
    # that goes straight into the partition must hand it to pgstac to widen it.
    files = [
        write_raster(tmp_path / f"T{n}_{day}.tif", size=100, seed=n)
        for n, day in enumerate(["2024-06-01", "2024-06-01", "2019-01-15", "2030-12-31"])
    ]
    result = ingest(*map(str, files), "--collection", "products-dates")
    assert result.exit_code == 0, result.output
    http = HttpSession(env["api"])
    for day, expected in (("2024-06-01", {"T0_2024-06-01", "T1_2024-06-01"}),
                          ("2019-01-15", {"T2_2019-01-15"}), ("2030-12-31", {"T3_2030-12-31"})):  # fmt: skip
        found = http.post(
            "search",
            json={"collections": ["products-dates"], "datetime": f"{day}T00:00:00Z"},
        )["features"]
        assert {f["id"] for f in found} == expected, day
    collection = http.get("collections/products-dates")
    assert collection["extent"]["temporal"]["interval"][0] == [
        "2019-01-15T00:00:00Z", "2030-12-31T00:00:00Z"
    ]  # fmt: skip


def _decoded_png(data: bytes) -> Any:
    """A PNG opened by GDAL (rasterio), as a dataset kept open in memory."""
    from rasterio.io import MemoryFile

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    memory = MemoryFile(data)
    png = memory.open()
    assert png.driver == "PNG"
    return png


def test_thumbnails_decode_to_the_pixels_and_colours_drawn(tmp_path: Path) -> None:
    from rasterio.enums import ColorInterp

    from ingest.rasters import _write_thumbnail

    # Three values equally often: the 2-98 % stretch maps them to 0, 127 and 255.
    rng = np.random.default_rng(3)
    data = rng.choice(np.array([10.0, 50.0, 90.0], dtype="float32"), (3, 300, 300))
    data[:, :40, :] = 0  # nodata: transparent
    _write_thumbnail(data, 0, None, tmp_path / "rgb.png")
    with _decoded_png((tmp_path / "rgb.png").read_bytes()) as png:
        assert (png.count, png.height, png.width) == (4, 150, 150)  # every 2nd pixel
        assert png.colorinterp[3] == ColorInterp.alpha
        pixels = png.read()
    expected = np.select([data[:, ::2, ::2] == v for v in (10, 50, 90)], [0, 127, 255], 0)
    # Colours under full transparency are whatever the encoder had there: not compared.
    opaque = pixels[3] == 255
    assert not opaque[:20].any() and opaque[20:].all()
    assert np.array_equal(pixels[:3][:, opaque], expected[:, opaque])
    assert (pixels[3, :20] == 0).all() and (pixels[3, 20:] == 255).all()
    _write_thumbnail(data[:1], 0, None, tmp_path / "grey.png")  # one band: grey
    with _decoded_png((tmp_path / "grey.png").read_bytes()) as png:
        grey = png.read()
    assert png.count == 4 and np.array_equal(grey[0], grey[1]) and np.array_equal(grey[0], grey[2])
    assert np.array_equal(grey[0][opaque], expected[0][opaque])
    # A class map keeps its classes as palette indices, in its own colours; nodata (0)
    # becomes a transparent entry.
    classes = rng.integers(0, 3, (1, 200, 120)).astype("uint8")
    colormap = {0: (9, 9, 9, 255), 1: (10, 200, 30, 255), 2: (250, 5, 5, 255)}
    _write_thumbnail(classes, 0, colormap, tmp_path / "classes.png")
    with _decoded_png((tmp_path / "classes.png").read_bytes()) as png:
        assert (png.count, png.height, png.width) == (1, 200, 120)
        assert np.array_equal(png.read(1), classes[0])
        palette = png.colormap(1)
    assert palette[1] == colormap[1] and palette[2] == colormap[2]
    assert palette[0][3] == 0  # transparent


def test_a_cog_edited_in_place_is_no_longer_taken_for_one(tmp_path: Path) -> None:
    from ingest.raster_checks import check
    from ingest.rasters import make_cog

    cog = tmp_path / "cog.tif"
    make_cog(write_raster(tmp_path / "src.tif", count=1, size=1200), cog)
    assert check(cog) is True
    with rasterio.open(cog, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
        dst.write(np.random.default_rng(5).random((1, 1200, 1200)).astype("float32") * 100)
    assert check(cog) is False  # ingest makes it a COG again
    assert cog_validate(str(cog), quiet=True)[0] is False


def test_deleting_a_campaign_with_its_products_empties_its_folder_in_the_bucket(
    env: dict[str, str], s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="gone")
    monkeypatch.setenv("TILEKEEPER_PRODUCTS_STORE", "s3://gone/eu27")
    monkeypatch.setenv("TILEKEEPER_PRODUCTS_S3_ENDPOINT", s3_server)
    campaign = f"del-{os.urandom(4).hex()}"
    Campaigns(HttpSession(env["api"])).create(
        {"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-01-01", "2024-12-31"]}
    )
    other = ingest(str(write_raster(tmp_path / "K.tif", size=64)), "--collection", "kept-s3")
    mine = ingest(
        str(write_raster(tmp_path / "D.tif", size=64)), "--collection", f"{campaign}-products"
    )
    assert other.exit_code == 0 and mine.exit_code == 0, other.output + mine.output

    def keys() -> list[str]:
        listed = s3.list_objects_v2(Bucket="gone").get("Contents", [])
        return sorted(str(o["Key"]) for o in listed)

    assert any(k.startswith(f"eu27/{campaign}-products/") for k in keys())
    result = runner.invoke(
        app, ["campaign", "delete", campaign, "--products", "--yes"], env={"COLUMNS": "1000"}
    )
    assert result.exit_code == 0, result.output
    assert "Deleted 2 product file(s)" in result.output  # the COG and its thumbnail
    assert not any(k.startswith(f"eu27/{campaign}-products/") for k in keys())
    assert any(k.startswith("eu27/kept-s3/") for k in keys()), "another collection's files stay"
