"""The Aggregation extension: counts checked against SQL on generated items."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support.database import Database, auth_headers
from support.stac import bulk, make_item

STATUSES = ("not_started", "queued", "running", "finished", "error")
BACKENDS = ("vito", "cdse", "eodc")

# The collection id and its items.
Generated = tuple[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def generated(api: str) -> Generated:
    """300 items with random statuses/back-ends; some lack a back-end; three months."""
    rng = random.Random(42)
    from support.stac import make_collection

    cid = "agg-generated"
    items: list[dict[str, Any]] = []
    for n in range(300):
        props: dict[str, Any] = {"status": rng.choice(STATUSES)}
        if n % 7:
            props["backend_name"] = rng.choice(BACKENDS)
        item = make_item(f"g{n:03d}", cid, lon=rng.uniform(0, 10), lat=rng.uniform(40, 50), **props)
        item["properties"]["datetime"] = f"2025-0{1 + n % 3}-15T12:00:00Z"
        items.append(item)
    with httpx.Client(base_url=api, headers=auth_headers(), timeout=60) as http:
        assert http.post("/collections", json=make_collection(cid)).status_code == 201
        assert bulk(http, cid, items).status_code == 200
    return cid, items


def buckets(agg: dict[str, Any]) -> dict[str, int]:
    return {b["key"]: b["frequency"] for b in agg["buckets"]}


def aggregate(http: httpx.Client, path: str, **params: str) -> dict[str, dict[str, Any]]:
    response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "AggregationCollection"
    return {a["name"]: a for a in body["aggregations"]}


def test_status_counts_equal_sql(
    http: httpx.Client, database: Database, generated: Generated
) -> None:
    cid, _ = generated
    got = aggregate(
        http,
        f"/collections/{cid}/aggregate",
        aggregations="total_count,status_frequency,backend_name_frequency",
    )
    sql_status = dict(
        database.sql(
            "SELECT content->'properties'->>'status', count(*) FROM pgstac.items "
            "WHERE collection = %s GROUP BY 1",
            cid,
        )
    )
    assert buckets(got["status_frequency"]) == sql_status
    assert got["total_count"]["value"] == 300
    sql_backend = dict(
        database.sql(
            "SELECT content->'properties'->>'backend_name', count(*) FROM pgstac.items "
            "WHERE collection = %s GROUP BY 1",
            cid,
        )
    )
    missing = sql_backend.pop(None)
    assert buckets(got["backend_name_frequency"]) == sql_backend
    assert got["backend_name_frequency"]["overflow"] == missing == 300 // 7 + 1


def test_filter_applies_get_and_post(http: httpx.Client, generated: Generated) -> None:
    cid, items = generated
    expected = Counter(
        i["properties"]["status"] for i in items if i["properties"].get("backend_name") == "vito"
    )
    got = aggregate(
        http,
        f"/collections/{cid}/aggregate",
        aggregations="status_frequency",
        filter="backend_name = 'vito'",
    )
    assert buckets(got["status_frequency"]) == expected
    posted = http.post(
        "/aggregate",
        json={
            "collections": [cid],
            "aggregations": ["status_frequency"],
            "filter-lang": "cql2-json",
            "filter": {"op": "=", "args": [{"property": "backend_name"}, "vito"]},
        },
    ).json()
    assert buckets(posted["aggregations"][0]) == expected


def test_bbox_and_datetime_narrow(http: httpx.Client, generated: Generated) -> None:
    cid, items = generated
    in_bbox = [
        i for i in items if i["bbox"][0] >= 5 and i["bbox"][2] <= 10.1 and i["bbox"][1] >= 40
    ]
    # Items are 0.1° squares: one intersects bbox [5,40,11,51] iff its west edge >= 4.9.
    expected = sum(1 for i in items if i["bbox"][2] >= 5)
    got = aggregate(
        http, "/aggregate", collections=cid, bbox="5,40,11,51", aggregations="total_count"
    )
    assert got["total_count"]["value"] == expected
    assert in_bbox  # the generator spread items over the box
    got = aggregate(
        http,
        "/aggregate",
        collections=cid,
        datetime="2025-02-01T00:00:00Z/2025-02-28T23:59:59Z",
        aggregations="total_count,datetime_min,datetime_max,datetime_frequency",
    )
    assert got["total_count"]["value"] == 100
    assert got["datetime_min"]["value"] == got["datetime_max"]["value"] == "2025-02-15T12:00:00Z"
    assert buckets(got["datetime_frequency"]) == {"2025-02-01T00:00:00Z": 100}


def test_collection_frequency_across_collections(http: httpx.Client, generated: Generated) -> None:
    cid, _ = generated
    got = aggregate(http, "/aggregate", aggregations="collection_frequency")
    assert buckets(got["collection_frequency"])[cid] == 300


def test_counts_are_fresh(http: httpx.Client, new_collection: Callable[[], str]) -> None:
    cid = new_collection()
    items = [make_item(f"f{n}", cid, status="queued") for n in range(10)]
    bulk(http, cid, items)
    before = aggregate(http, f"/collections/{cid}/aggregate", aggregations="status_frequency")
    assert buckets(before["status_frequency"]) == {"queued": 10}
    for item in items[:3]:
        item["properties"]["status"] = "finished"
    bulk(http, cid, items[:3], method="upsert")
    after = aggregate(http, f"/collections/{cid}/aggregate", aggregations="status_frequency")
    assert buckets(after["status_frequency"]) == {"queued": 7, "finished": 3}


def test_aggregations_listing(http: httpx.Client, generated: Generated) -> None:
    cid, _ = generated
    names = {a["name"] for a in http.get(f"/collections/{cid}/aggregations").json()["aggregations"]}
    assert {
        "total_count",
        "collection_frequency",
        "datetime_min",
        "datetime_max",
        "datetime_frequency",
        "status_frequency",
        "backend_name_frequency",
        "grid:code_frequency",
    } <= names
    assert "id_frequency" not in names


def test_new_string_queryable_gets_a_frequency(
    http: httpx.Client, database: Database, generated: Generated
) -> None:
    cid, _items = generated
    database.sql(
        "INSERT INTO pgstac.queryables (name, definition, collection_ids) "
        "VALUES ('tier', '{\"type\": \"string\"}', %s)",
        [cid],
    )
    try:
        got = aggregate(http, f"/collections/{cid}/aggregate", aggregations="tier_frequency")
        assert got["tier_frequency"]["buckets"] == [] and got["tier_frequency"]["overflow"] == 300
        other = http.get("/collections/agg-missing-other/aggregations")
        assert other.status_code == 404
    finally:
        database.sql("DELETE FROM pgstac.queryables WHERE name = 'tier'")


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/aggregate", {"aggregations": "nope_frequency"}, 400),
        ("/collections/no-such-collection/aggregate", {}, 404),
        ("/aggregate", {"filter": "status = "}, 400),
        ("/aggregate", {"bbox": "nan,0,1,1"}, 400),
        ("/aggregate", {"datetime": "yesterday"}, 400),
        ("/aggregate", {"query": "{not json"}, 400),
        ("/aggregate", {"intersects": "{not json"}, 400),
        ("/aggregate", {"query": '{"status": {"eq": "x"}}', "filter": "status = 'x'"}, 400),
    ],
)
def test_bad_aggregation_requests(
    http: httpx.Client, path: str, params: dict[str, str], status: int
) -> None:
    response = http.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.json().get("description") or response.json().get("detail")
