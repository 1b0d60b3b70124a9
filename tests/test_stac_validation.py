"""Every kind of item and collection the API serves (campaign collection and its job items,
product collection and product items, a plain item with a time range) passes pystac's
validation and stac-validator, both offline: their schemas come from ingest/schemas, and
any attempt to reach another host fails the test. A campaign's extent contains its tiles."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pystac
import pystac.validation
import pytest
from stac_validator.validate import StacValidate
from support.campaigns import AOI, create_campaign, grid_tiles, register_tiles
from support.cli import ingest
from support.database import Database, products_settings
from support.rasters import write_raster
from support.stac import make_item

from catalog_service.jobs.campaign import EXTENSIONS_BY_PREFIX

SCHEMAS = Path(__file__).parent.parent / "ingest" / "schemas"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def schema_path(url: str) -> Path | None:
    """The shipped copy of a schema URL (the folder mirrors the URLs), or None."""
    for prefix in ("https://", "http://"):
        if url.startswith(prefix):
            path = SCHEMAS / url.removeprefix(prefix).split("#")[0]
            return path if path.is_file() else None
    return None


class OfflineSchemasIO(pystac.stac_io.DefaultStacIO):
    """pystac reads schemas through its StacIO: this one reads them from ingest/schemas
    and refuses any other remote read but the API's own (a collection's validate()
    resolves its root link)."""

    def read_text_from_href(self, href: str) -> str:
        if href.startswith(("http://", "https://")) and urlsplit(href).hostname not in LOOPBACK:
            path = schema_path(href)
            if path is None:
                raise OSError(f"{href} is not shipped in ingest/schemas (offline)")
            return path.read_text()
        return super().read_text_from_href(href)


# stac-validator's schema_map: a schema URL -> its local file, for the object's own
# schemas and every $ref they make.
SCHEMA_MAP = {
    f"https://{p.relative_to(SCHEMAS).as_posix()}": str(p) for p in SCHEMAS.rglob("*.json")
}


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No name but loopback resolves, and pystac reads schemas from ingest/schemas."""
    real = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            raise OSError(f"offline test: no lookup of {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    pystac.StacIO.set_default(OfflineSchemasIO)
    # A fresh validator: its schema cache must not hold anything read before.
    pystac.validation.set_validator(pystac.validation.JsonSchemaSTACValidator())
    yield
    pystac.StacIO.set_default(pystac.stac_io.DefaultStacIO)
    pystac.validation.set_validator(pystac.validation.JsonSchemaSTACValidator())


def check_valid(obj: dict[str, Any]) -> None:
    """pystac (the dict, and the object's own validate()) and stac-validator."""
    what = f"{obj.get('type')} {obj.get('id')}"
    pystac.validation.validate_dict(obj)
    if obj["type"] == "Feature":
        pystac.Item.from_dict(obj, preserve_dict=True).validate()
    else:
        pystac.Collection.from_dict(obj, preserve_dict=True).validate()
    validator = StacValidate(schema_map=dict(SCHEMA_MAP))
    assert validator.validate_dict(obj), f"{what}: {validator.message}"
    message = validator.message[-1]
    assert message["valid_stac"], f"{what}: {message}"
    # Every schema it used was a local file: core ones shipped with stac-validator,
    # the rest from ingest/schemas.
    for schema in message["schema"]:
        assert not str(schema).startswith("http") or str(schema) in SCHEMA_MAP, schema


def contains(outer: list[float], inner: list[float]) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and outer[2] >= inner[2]
        and outer[3] >= inner[3]
    )


def all_items(http: httpx.Client, collection: str) -> list[dict[str, Any]]:
    response = http.get(f"/collections/{collection}/items", params={"limit": 1000})
    assert response.status_code == 200, response.text
    features: list[dict[str, Any]] = response.json()["features"]
    return features


def new_campaign(http: httpx.Client, grid: str) -> tuple[str, list[dict[str, Any]]]:
    # A small AOI: the grid's cells reach out of it on every side.
    aoi = {
        "type": "Polygon",
        "coordinates": [[[4.3, 50.8], [4.4, 50.8], [4.4, 50.9], [4.3, 50.9], [4.3, 50.8]]],
    }
    campaign = create_campaign(http, "valid", grid=grid, aoi=aoi)
    return campaign, register_tiles(http, campaign, grid_tiles(AOI, grid))


@pytest.mark.parametrize("grid", ["utm-20km", "eea-20km"])
def test_campaign_collection_and_job_items_validate_and_extent_holds_the_tiles(
    http: httpx.Client, offline: None, grid: str
) -> None:
    campaign, tiles = new_campaign(http, grid)
    collection = http.get(f"/collections/{campaign}").json()
    check_valid(collection)
    (overall, *_) = collection["extent"]["spatial"]["bbox"]
    for tile in tiles:
        assert contains(overall, tile["bbox"]), (overall, tile["id"], tile["bbox"])
    # It grew from the AOI's bbox, and only as far as the tiles reach.
    assert overall[0] < 4.3 and overall[3] > 50.9
    assert overall[0] == min(t["bbox"][0] for t in tiles)
    assert overall[3] == max(t["bbox"][3] for t in tiles)

    items = all_items(http, campaign)
    assert len(items) == len(tiles)
    for item in items:
        used = {key.split(":")[0] + ":" for key in item["properties"] if ":" in key}
        wanted = {EXTENSIONS_BY_PREFIX[p] for p in used if p in EXTENSIONS_BY_PREFIX}
        assert wanted <= set(item["stac_extensions"]), item["id"]
        check_valid(item)
    # One item by itself, also after job changes (a job id, costs, a results link), and
    # through /search.
    tile = tiles[0]["id"]
    check_valid(http.get(f"/collections/{campaign}/items/{tile}").json())
    for step in (
        {"status": "created", "set": {"openeo:job_id": "j-1", "backend_name": "a", "title": None}},
        {"status": "running", "set": {"running_start_time": "2024-05-01T10:00:00Z"}},
        {
            "status": "finished",
            "set": {"costs": 4.5},
            "links": [{"rel": "results", "href": "https://a.test/jobs/j-1/results"}],
        },
    ):
        body = {"actor": "test", "changes": [{"tile": tile, **step}]}
        answer = http.post(f"/campaigns/{campaign}/jobs/changes", json=body)
        assert answer.status_code == 200, answer.text
        check_valid(http.get(f"/collections/{campaign}/items/{tile}").json())
    found = http.get("/search", params={"collections": campaign, "limit": 5}).json()
    assert found["features"]
    for item in found["features"]:
        check_valid(item)
    # The campaign's collection as /collections lists it.
    listed = http.get("/collections", params={"limit": 1000}).json()["collections"]
    check_valid(next(c for c in listed if c["id"] == campaign))


def test_an_extent_grows_with_later_registrations_and_never_shrinks(
    http: httpx.Client, database: Database
) -> None:
    campaign, tiles = new_campaign(http, "utm-20km")
    before = http.get(f"/collections/{campaign}").json()["extent"]["spatial"]["bbox"][0]
    far = grid_tiles("5.5,50.0,5.6,50.1")
    response = http.post(f"/campaigns/{campaign}/tiles", json={"tiles": far + tiles[:2]})
    assert response.status_code == 200, response.text
    after = http.get(f"/collections/{campaign}").json()["extent"]["spatial"]["bbox"][0]
    assert contains(after, before)
    for tile in far:
        assert contains(after, tile["bbox"])
    # A campaign registered before extents grew (its extent the AOI's bbox) is mended by
    # registering its tiles again, which adds none.
    database.sql(
        "UPDATE collections SET content = jsonb_set(content, '{extent,spatial,bbox}',"
        " '[[4.3, 50.8, 4.4, 50.9]]') WHERE id = %s",
        campaign,
    )
    response = http.post(f"/campaigns/{campaign}/tiles", json={"tiles": tiles + far})
    assert response.json()["registered"] == 0
    assert http.get(f"/collections/{campaign}").json()["extent"]["spatial"]["bbox"][0] == after


def test_a_campaign_without_an_aoi_has_its_tiles_extent_not_the_worlds(
    http: httpx.Client,
) -> None:
    campaign = create_campaign(http, "no-aoi")
    tiles = register_tiles(http, campaign, grid_tiles())
    bbox = http.get(f"/collections/{campaign}").json()["extent"]["spatial"]["bbox"][0]
    boxes = np.array([t["bbox"] for t in tiles])
    union = [*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)]
    assert bbox == pytest.approx(union)


def test_a_jobs_attempt_properties_are_served_null_until_it_has_one(
    http: httpx.Client, offline: None
) -> None:
    """OGR/QGIS make a layer's fields from its first page: a page of tiles not started
    yet must still name the job's fields, or the job id is lost for the whole layer."""
    campaign, _ = new_campaign(http, "utm-20km")
    first = http.get(f"/collections/{campaign}/items", params={"limit": 1}).json()["features"][0]
    props = first["properties"]
    for key in ("openeo:job_id", "backend_name", "start_time", "costs"):
        assert key in props and props[key] is None, key
    check_valid(first)
    # Not where the fields extension leaves them out.
    query = {"collections": [campaign], "limit": 1, "fields": {"include": ["properties.status"]}}
    narrow = http.post("/search", json=query).json()["features"][0]["properties"]
    assert "openeo:job_id" not in narrow and narrow["status"] == "not_started"


def test_job_items_stored_without_their_extensions_are_served_with_them(
    http: httpx.Client, database: Database, offline: None
) -> None:
    campaign, tiles = new_campaign(http, "utm-20km")
    tile = tiles[0]["id"]
    # As registrations before the extensions were declared stored them.
    database.sql(
        "UPDATE items SET content = jsonb_set(content, '{stac_extensions}', '[]')"
        " WHERE collection = %s AND id = %s",
        campaign,
        tile,
    )
    item = http.get(f"/collections/{campaign}/items/{tile}").json()
    assert set(item["stac_extensions"]) == set(EXTENSIONS_BY_PREFIX.values())
    check_valid(item)


def test_an_item_with_a_time_range_keeps_its_null_datetime(
    http: httpx.Client, database: Database, new_collection: Any, offline: None
) -> None:
    collection = new_collection()
    item = make_item(
        "ranged",
        collection,
        start_datetime="2025-01-01T00:00:00Z",
        end_datetime="2025-01-31T23:59:59Z",
        note=None,
    )
    item["properties"]["datetime"] = None
    response = http.post(f"/collections/{collection}/items", json=item)
    assert response.status_code in (200, 201), response.text
    # pgstac stores it without its null properties...
    stored = database.sql(
        "SELECT content->'properties' FROM items WHERE collection = %s AND id = 'ranged'",
        collection,
    )
    assert "datetime" not in stored[0][0]
    # ... and the API serves the null datetime again, on every read path.
    served = [
        http.get(f"/collections/{collection}/items/ranged").json(),
        *all_items(http, collection),
        *http.get("/search", params={"collections": collection}).json()["features"],
        *http.post("/search", json={"collections": [collection]}).json()["features"],
    ]
    for got in served:
        assert got["properties"]["datetime"] is None
        assert got["properties"]["start_datetime"] == "2025-01-01T00:00:00Z"
        # Other null properties are not restored: they read as absent.
        assert "note" not in got["properties"]
        check_valid(got)
    check_valid(http.get(f"/collections/{collection}").json())
    # Excluded on request, it stays excluded.
    fields = {"collections": [collection], "fields": {"exclude": ["properties.datetime"]}}
    excluded = http.post("/search", json=fields).json()["features"]
    assert "datetime" not in excluded[0]["properties"]


def test_product_collection_and_items_validate(
    http: httpx.Client,
    api: str,
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    offline: None,
) -> None:
    store = products_settings(database).store
    assert store
    monkeypatch.setenv("TILEKEEPER_API_URL", api)
    monkeypatch.setenv("TILEKEEPER_PRODUCTS_STORE", store)
    campaign, _ = new_campaign(http, "utm-20km")
    products = f"{campaign}-products"
    raster = write_raster(tmp_path / f"p-{os.urandom(3).hex()}.tif", size=64)
    result = ingest(str(raster), "--collection", products)
    assert result.exit_code == 0, result.output
    check_valid(http.get(f"/collections/{products}").json())
    listed = http.get("/collections", params={"limit": 1000}).json()["collections"]
    check_valid(next(c for c in listed if c["id"] == products))
    items = all_items(http, products)
    assert items
    for item in items:
        check_valid(item)
        check_valid(http.get(f"/collections/{products}/items/{item['id']}").json())
