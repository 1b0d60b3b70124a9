"""pystac-client against the real API: numbers sort and compare as numbers, counts come
back as numberMatched, no warning about sort, and each collection's queryables describe
its own items, self-contained (issue 23, points 3 to 5)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pystac_client import Client, CollectionClient
from support.campaigns import create_campaign, register_tiles
from support.database import Database, auth_headers
from support.stac import make_collection, make_item

from catalog_service.database.queryables import migration_sql
from ingest.items import product_collection

TILES = 16


def _ring(n: int) -> list[list[float]]:
    lon, lat = 4.0 + (n % 4) * 0.1, 50.0 + (n // 4) * 0.1
    return [[lon, lat], [lon + 0.1, lat], [lon + 0.1, lat + 0.1], [lon, lat + 0.1], [lon, lat]]


def _collection(client: Client, collection_id: str) -> CollectionClient:
    """The API's collection, as the client that can ask for its queryables."""
    collection = client.get_collection(collection_id)
    assert isinstance(collection, CollectionClient)
    return collection


def _costs(n: int) -> float:
    # 0.75, 1.5, ..., 12.0: as text "12.0" < "2.25" < "9.75", as numbers in tile order.
    return 0.75 * (n + 1)


@pytest.fixture(scope="module")
def campaign(api: str) -> Iterator[str]:
    """A campaign of 16 tiles, each with its costs and a start time."""
    with httpx.Client(base_url=api, headers=auth_headers(), timeout=60) as http:
        campaign_id = create_campaign(http, "clients", temporal_extent=["2024-03-01", "2024-09-30"])
        tiles = [
            {"id": f"T{n:02d}", "geometry": {"type": "Polygon", "coordinates": [_ring(n)]}}
            for n in range(TILES)
        ]
        register_tiles(http, campaign_id, tiles)
        changes = [
            {
                "tile": f"T{n:02d}",
                "status": "queued_for_start",
                "set": {
                    "backend_name": "a",
                    "start_time": f"2024-05-01T{n:02d}:00:00Z",
                    "costs": _costs(n),
                },
            }
            for n in range(TILES)
        ]
        answer = http.post(
            f"/campaigns/{campaign_id}/jobs/changes", json={"actor": "test", "changes": changes}
        )
        assert answer.status_code == 200, answer.text
        yield campaign_id
        http.delete(f"/campaigns/{campaign_id}")


@pytest.fixture(scope="module")
def client(api: str) -> Client:
    return Client.open(api)


def _orders(client: Client, campaign: str, sortby: str) -> list[int]:
    search = client.search(collections=[campaign], sortby=sortby, max_items=None)
    return [item.properties["tilekeeper:order"] for item in search.items()]


def test_order_sorts_as_a_number_both_ways(client: Client, campaign: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pystac-client's DoesNotConformTo("SORT") fails
        ascending = _orders(client, campaign, "+tilekeeper:order")
        descending = _orders(client, campaign, "-tilekeeper:order")
    assert len(ascending) == TILES
    assert max(ascending) >= 10  # two-digit orders: text would put 10 before 2
    assert ascending == sorted(ascending)
    assert descending == sorted(ascending, reverse=True)


def test_costs_sort_and_compare_as_numbers(client: Client, campaign: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search = client.search(collections=[campaign], sortby="-costs", max_items=None)
        costs = [item.properties["costs"] for item in search.items()]
        expensive = client.search(
            collections=[campaign],
            filter={"op": ">", "args": [{"property": "costs"}, 9.5]},
            filter_lang="cql2-json",
            max_items=None,
        )
        above = sorted(item.properties["costs"] for item in expensive.items())
        ten = {"timestamp": "2024-05-01T10:00:00Z"}
        since = client.search(
            collections=[campaign],
            filter={"op": ">=", "args": [{"property": "start_time"}, ten]},
            filter_lang="cql2-json",
            max_items=None,
        )
        started = len(list(since.items()))
    assert costs == sorted((_costs(n) for n in range(TILES)), reverse=True)
    assert above == [c for c in sorted(_costs(n) for n in range(TILES)) if c > 9.5]
    assert above and min(above) == pytest.approx(9.75)
    assert started == TILES - 10


def test_matched_is_the_count(client: Client, campaign: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "numberMatched or context.matched not in response"
        everything = client.search(collections=[campaign], limit=5)
        assert everything.matched() == TILES
        some = client.search(collections=[campaign], filter="costs > 9.5", limit=2)
        matched = some.matched()
        found = len(list(some.items()))
    assert isinstance(matched, int) and matched == found == 4


def test_no_sort_warning(client: Client, campaign: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(client.search(collections=[campaign], sortby="-tilekeeper:order", limit=4).items())
    assert not [w for w in caught if "conform" in str(w.message).lower()], [
        str(w.message) for w in caught
    ]


@pytest.fixture(scope="module")
def other_collections(api: str, campaign: str) -> Iterator[tuple[str, str]]:
    """The campaign's product collection and a plain collection, each with an item."""
    products = f"{campaign}-products"
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=api, headers=auth_headers(), timeout=60) as http:
        made = http.post("/collections", json=product_collection(products, campaign=campaign))
        assert made.status_code == 201, made.text
        assert http.post("/collections", json=make_collection(plain)).status_code == 201
        item = make_item("p1", products, version="1", created="2025-01-02T00:00:00Z")
        assert http.post(f"/collections/{products}/items", json=item).status_code == 201
        item = make_item("i1", plain, colour="red")
        assert http.post(f"/collections/{plain}/items", json=item).status_code == 201
        yield products, plain
        http.delete(f"/collections/{plain}")
        http.delete(f"/collections/{products}")


JOB_PROPERTIES = {
    "status",
    "backend_name",
    "tilekeeper:order",
    "costs",
    "attempts",
    "start_time",
    "running_start_time",
    "finish_time",
}
PRODUCT_PROPERTIES = {"created", "processing:datetime", "version", "tilekeeper:tile"}
CORE = {"id", "geometry", "datetime"}


def _external_refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        found = [
            v for k, v in schema.items() if k == "$ref" and isinstance(v, str) and v[:1] != "#"
        ]
        return found + [ref for v in schema.values() for ref in _external_refs(v)]
    if isinstance(schema, list):
        return [ref for v in schema for ref in _external_refs(v)]
    return []


def test_each_collection_describes_its_own_items(
    client: Client, campaign: str, other_collections: tuple[str, str]
) -> None:
    products, plain = other_collections
    of = {
        cid: set(_collection(client, cid).get_queryables()["properties"])
        for cid in (campaign, products, plain)
    }
    assert of[campaign] >= CORE | JOB_PROPERTIES
    assert not PRODUCT_PROPERTIES & of[campaign]
    assert of[products] >= CORE | PRODUCT_PROPERTIES
    assert not JOB_PROPERTIES & of[products]
    assert of[plain] >= CORE
    assert not (JOB_PROPERTIES | PRODUCT_PROPERTIES) & of[plain]
    union = set(client.get_queryables()["properties"])
    assert union >= CORE | JOB_PROPERTIES | PRODUCT_PROPERTIES


def test_types_are_declared(client: Client, campaign: str) -> None:
    props = _collection(client, campaign).get_queryables()["properties"]
    assert props["tilekeeper:order"]["type"] == "integer"
    assert props["attempts"]["type"] == "integer"
    assert props["costs"]["type"] == "number"
    for name in ("start_time", "running_start_time", "finish_time", "updated"):
        assert props[name]["format"] == "date-time", name


def test_served_queryables_are_self_contained(
    api: str, campaign: str, other_collections: tuple[str, str]
) -> None:
    products, plain = other_collections
    paths = ["/queryables"] + [f"/collections/{c}/queryables" for c in (campaign, products, plain)]
    with httpx.Client(base_url=api, timeout=60) as http:
        for path in paths:
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.text)
            assert _external_refs(answer.json()) == [], path
            props = answer.json()["properties"]
            assert props["id"]["type"] == "string" and "geometry" in props


def test_typing_again_changes_nothing_and_drops_internet_refs(database: Database) -> None:
    """The migration's SQL on a database that has it (``db up`` again, or an older
    database whose pgstac rows still $ref the internet): idempotent."""
    listed = (
        "SELECT name, definition, property_wrapper, property_index_type FROM queryables ORDER BY id"
    )
    before = database.sql(listed)
    database.sql(
        "UPDATE queryables SET definition = %s::jsonb WHERE name = 'geometry'",
        '{"title": "Item Geometry", "$ref": "https://geojson.org/schema/Feature.json#/properties/geometry"}',
    )
    database.sql(migration_sql())
    database.sql(migration_sql())
    assert database.sql(listed) == before
    assert not [row for row in before if "$ref" in row[1]]
