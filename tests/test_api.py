"""The STAC API over real HTTP: conformance, search, extensions and transactions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pystac_client import Client
from support.database import auth_headers
from support.stac import bulk, make_item

REQUIRED_CONFORMANCE = {
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "https://api.stacspec.org/v1.1.0/item-search#sort",
    # What pystac-client 0.x looks for (v1.0.*): sortby is the same in both.
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/ogcapi-features#sort",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0-rc.1/collection-search",
    "https://api.stacspec.org/v1.0.0/ogcapi-features/extensions/transaction",
    "https://api.stacspec.org/v0.3.0/aggregation",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
}


def test_conformance_lists_every_class(http: httpx.Client) -> None:
    conforms = set(http.get("/conformance").json()["conformsTo"])
    assert conforms >= REQUIRED_CONFORMANCE


def test_landing_page_links(http: httpx.Client) -> None:
    rels = {link["rel"] for link in http.get("/").json()["links"]}
    assert {"self", "conformance", "data", "search", "aggregate", "aggregations"} <= rels
    assert any(rel.endswith("queryables") for rel in rels)


@pytest.fixture(scope="module")
def tiles(api: str) -> str:
    """40 tile items with known statuses, back-ends and orders."""
    with httpx.Client(base_url=api, headers=auth_headers()) as http:
        collection_id = "search-tiles"
        from support.stac import make_collection

        assert http.post("/collections", json=make_collection(collection_id)).status_code == 201
        items = [
            make_item(
                f"t{n:02d}",
                collection_id,
                lon=4 + (n % 8) * 0.1,
                lat=50 + (n // 8) * 0.1,
                status=("finished", "error", "running", "not_started")[n % 4],
                backend_name=("b1", "b2")[n % 2],
                order=f"{40 - n:03d}",  # unregistered properties sort as text
            )
            for n in range(40)
        ]
        assert bulk(http, collection_id, items).status_code == 200
    return collection_id


def test_pystac_client_opens_and_searches(api: str, tiles: str) -> None:
    client = Client.open(api)
    collection = client.get_collection(tiles)
    assert collection is not None
    assert collection.id == tiles
    found = list(
        client.search(collections=[tiles], filter="status = 'error'", max_items=None).items()
    )
    assert len(found) == 10
    assert {item.properties["status"] for item in found} == {"error"}


def test_filter_cql2_text_and_json_agree(http: httpx.Client, tiles: str) -> None:
    text = http.get(
        "/search",
        params={
            "collections": tiles,
            "filter": "status = 'finished' AND backend_name = 'b1'",
            "filter-lang": "cql2-text",
            "limit": 100,
        },
    ).json()
    json_body = {
        "collections": [tiles],
        "limit": 100,
        "filter-lang": "cql2-json",
        "filter": {
            "op": "and",
            "args": [
                {"op": "=", "args": [{"property": "status"}, "finished"]},
                {"op": "=", "args": [{"property": "backend_name"}, "b1"]},
            ],
        },
    }
    posted = http.post("/search", json=json_body).json()
    ids_text = {f["id"] for f in text["features"]}
    assert ids_text == {f["id"] for f in posted["features"]}
    assert ids_text == {f"t{n:02d}" for n in range(0, 40, 4)}


def test_sort_fields_and_token_paging(http: httpx.Client, tiles: str) -> None:
    body = {
        "collections": [tiles],
        "limit": 7,
        "sortby": [{"field": "properties.order", "direction": "asc"}],
        "fields": {"include": ["id", "properties.order"], "exclude": ["geometry", "assets"]},
    }
    seen: list[str] = []
    page = http.post("/search", json=body).json()
    pages = 1
    while True:
        for feature in page["features"]:
            assert "geometry" not in feature
            assert set(feature["properties"]) == {"order"}
            seen.append(feature["id"])
        nxt = [link for link in page["links"] if link["rel"] == "next"]
        if not nxt:
            break
        link = nxt[0]
        page = (
            http.post(link["href"], json=link["body"])
            if link.get("method") == "POST"
            else http.get(link["href"])
        ).json()
        pages += 1
    assert pages == 6
    # order = 40 - n, so ascending order means descending tile number, each exactly once.
    assert seen == [f"t{n:02d}" for n in range(39, -1, -1)]


def test_get_paging_follows_token_links(http: httpx.Client, tiles: str) -> None:
    url = f"/collections/{tiles}/items?limit=15"
    ids: list[str] = []
    while url:
        page = http.get(url).json()
        ids += [f["id"] for f in page["features"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), "")
    assert sorted(ids) == [f"t{n:02d}" for n in range(40)]


def test_query_extension(http: httpx.Client, tiles: str) -> None:
    page = http.post(
        "/search", json={"collections": [tiles], "limit": 100, "query": {"order": {"lte": "005"}}}
    ).json()
    assert sorted(f["properties"]["order"] for f in page["features"]) == [
        "001",
        "002",
        "003",
        "004",
        "005",
    ]


def test_collection_search(http: httpx.Client, tiles: str) -> None:
    found = http.get("/collections", params={"q": "test", "limit": 100}).json()
    assert tiles in {c["id"] for c in found["collections"]}


def test_queryables_list_job_properties(http: httpx.Client, tiles: str) -> None:
    props = http.get("/queryables").json()["properties"]
    assert {"status", "backend_name", "grid:code"} <= set(props)
    assert props["tilekeeper:order"]["type"] == "integer" and props["costs"]["type"] == "number"
    # A plain collection's items are not tile jobs: its queryables do not list their fields
    # (tests/test_stac_clients.py checks every kind of collection).
    own = http.get(f"/collections/{tiles}/queryables").json()["properties"]
    assert {"id", "geometry", "datetime"} <= set(own) and "backend_name" not in own


def test_item_transactions(http: httpx.Client, new_collection: Callable[[], str]) -> None:
    cid = new_collection()
    item = make_item("a", cid, status="not_started")
    assert http.post(f"/collections/{cid}/items", json=item).status_code == 201
    assert http.post(f"/collections/{cid}/items", json=item).status_code == 409
    item["properties"]["status"] = "queued"
    assert http.put(f"/collections/{cid}/items/a", json=item).status_code == 200
    patched = http.patch(
        f"/collections/{cid}/items/a",
        json={"properties": {"backend_name": "b1"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    stored = http.get(f"/collections/{cid}/items/a").json()["properties"]
    assert (stored["status"], stored["backend_name"]) == ("queued", "b1")
    assert http.delete(f"/collections/{cid}/items/a").status_code == 200
    assert http.get(f"/collections/{cid}/items/a").status_code == 404


@pytest.mark.parametrize(
    "props", [{"costs": "abc"}, {"attempts": 1.5}, {"start_time": "yesterday"}, {"costs": True}]
)
def test_a_value_searches_cannot_read_as_its_type_is_refused_on_every_write(
    http: httpx.Client, new_collection: Callable[[], str], props: dict[str, Any]
) -> None:
    """One ``costs: "abc"`` anywhere made every ``sortby=costs`` answer 400 for all."""
    cid = new_collection()
    name = next(iter(props))
    assert (
        http.post(f"/collections/{cid}/items", json=make_item("bad", cid, **props)).status_code
        == 400
    )
    assert http.post(f"/collections/{cid}/items", json=make_item("a", cid)).status_code == 201
    merge = http.patch(
        f"/collections/{cid}/items/a",
        json={"properties": props},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert merge.status_code == 400 and f"property {name} must be" in merge.text
    ops = [{"op": "add", "path": f"/properties/{name}", "value": props[name]}]
    patch = http.patch(
        f"/collections/{cid}/items/a",
        json=ops,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patch.status_code == 400, patch.text
    assert name not in http.get(f"/collections/{cid}/items/a").json()["properties"]
    assert http.get("/search", params={"sortby": f"-{name}"}).status_code == 200


def test_bulk_upsert_replaces(http: httpx.Client, new_collection: Callable[[], str]) -> None:
    cid = new_collection()
    items = [make_item(f"i{n}", cid, status="not_started") for n in range(5)]
    assert bulk(http, cid, items).json()["success"] == 5
    for item in items:
        item["properties"]["status"] = "finished"
    assert bulk(http, cid, items, method="upsert").json() == {
        "received": 5,
        "success": 5,
        "skipped": 0,
        "errors": [],
    }
    statuses = {
        f["properties"]["status"]
        for f in http.get(f"/collections/{cid}/items", params={"limit": 10}).json()["features"]
    }
    assert statuses == {"finished"}


def test_collections_link_to_aggregation(http: httpx.Client, tiles: str) -> None:
    rels = {link["rel"]: link["href"] for link in http.get(f"/collections/{tiles}").json()["links"]}
    assert rels["aggregate"].endswith(f"/collections/{tiles}/aggregate")
    assert http.get(rels["aggregations"]).status_code == 200


def test_health_and_ping(http: httpx.Client) -> None:
    assert http.get("/_mgmt/ping").json() == {"message": "PONG"}
    health = http.get("/_mgmt/health").json()
    assert health["status"] == "UP" and health["pgstac"]["pgstac_version"] == "0.10.0"
