"""Bad input gets a 4xx with a message and stores nothing; transient database errors
are retried inside the service and otherwise answer 503 with Retry-After."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from support.database import Database, auth_headers, start_api, wait_ready
from support.stac import bulk, make_collection, make_item

WIDE_OR = [{"op": "=", "args": [{"property": "id"}, f"i{n}"]} for n in range(2_000)]
BAD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/search", {"params": {"query": '{"status": {"eq": "x"}}', "filter": "status = 'x'"}}),
    (
        "POST",
        "/search",
        {
            "json": {
                "query": {"status": {"eq": "x"}},
                "filter": {"op": "=", "args": [{"property": "status"}, "x"]},
            }
        },
    ),
    ("GET", "/search", {"params": {"bbox": "nan,0,1,1"}}),
    ("POST", "/search", {"json": {"bbox": [0, 0, 1e308, 1]}}),
    ("POST", "/search", {"json": {"ids": [f"i{n}" for n in range(10_001)]}}),
    ("POST", "/search", {"json": {"filter": {"op": "or", "args": WIDE_OR}}}),
    ("GET", "/search", {"params": {"bbox": "1,2,3"}}),
    (
        "POST",
        "/collections/{cid}/products",
        {
            "json": {
                "writes": [
                    {
                        "items": [
                            {
                                **make_item("p", "{cid}"),
                                "geometry": {
                                    "type": "Polygon",
                                    "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                                },
                            }
                        ]
                    }
                ]
            }
        },
    ),
    ("GET", "/collections", {"params": {"filter": "false"}}),
    ("GET", "/collections", {"params": {"q": "^yFC:Ìg"}}),
    (
        "PATCH",
        "/collections/{cid}",
        {
            "json": [{"op": "remove", "path": "/properties/foo"}],
            "headers": {"content-type": "application/json-patch+json"},
        },
    ),
    (
        "PATCH",
        "/collections/{cid}",
        {
            "json": {"description": None},
            "headers": {"content-type": "application/merge-patch+json"},
        },
    ),
    ("PUT", "/collections/{cid}", {}),
    ("POST", "/aggregate", {"json": [None, None]}),
    ("POST", "/collections/{cid}/items", {"json": {"type": "FeatureCollection", "features": []}}),
    (
        "POST",
        "/collections/{cid}/items",
        {
            "json": {
                **make_item("bowtie", "{cid}"),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                },
            }
        },
    ),
    (
        "POST",
        "/collections/{cid}/items",
        {
            "json": {
                **make_item("far", "{cid}"),
                "geometry": {"type": "Point", "coordinates": [1e308, 0]},
            }
        },
    ),
    (
        "POST",
        "/collections/{cid}/items",
        {
            "json": {
                **make_item("long", "{cid}"),
                "properties": {"datetime": "2025-01-01T00:00:00Z", "x": "y" * 200_000},
            }
        },
    ),
    (
        "POST",
        "/collections",
        {"json": {**make_collection("long-description"), "description": "d" * 200_000}},
    ),
    ("GET", "/search", {"params": {"filter": "status = = 'x'"}}),
    ("GET", "/search", {"params": {"filter": "nosuchfn(status) = 1"}}),
    (
        "POST",
        "/search",
        {"json": {"filter": {"op": "nope", "args": []}, "filter-lang": "cql2-json"}},
    ),
    ("GET", "/search", {"params": {"datetime": "not-a-date"}}),
    ("GET", "/search", {"params": {"intersects": "{not json"}}),
    ("POST", "/search", {"json": {"intersects": {"type": "Polygon", "coordinates": [[[0, 0]]]}}}),
    ("GET", "/search", {"params": {"limit": "-1"}}),
    ("GET", "/search", {"params": {"token": "next:zz:zz"}}),
    ("POST", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("POST", "/collections", {"json": {**make_collection("bad/id")}}),
    ("POST", "/collections", {"json": {"id": "no-extent"}}),
    ("POST", "/collections/{cid}/items", {"json": make_item("bad:id", "{cid}")}),
    (
        "POST",
        "/collections/{cid}/items",
        {"json": {**make_item("nogeom", "{cid}"), "geometry": None}},
    ),
    ("POST", "/collections/{cid}/items", {"json": {"type": "Feature"}}),
    ("POST", "/collections/does-not-exist/items", {"json": make_item("x", "does-not-exist")}),
    ("PUT", "/collections/{cid}/items/absent", {"json": make_item("absent", "{cid}")}),
    ("PUT", "/collections/{cid}/items/other", {"json": make_item("mismatch", "{cid}")}),
    (
        "POST",
        "/collections/{cid}/bulk_items",
        {"json": {"method": "insert", "items": {"k": {"id": 1}}}},
    ),
    ("POST", "/collections/{cid}/bulk_items", {"json": {"method": "explode", "items": {}}}),
    ("GET", "/collections/{cid}/items", {"params": {"bbox": "0,95,1,96"}}),
    ("GET", "/collections/{cid}/items", {"params": {"filter": "status ="}}),
    # Stored by PostGIS, then unreadable as GeoJSON: every read of the item failed.
    (
        "POST",
        "/collections/{cid}/items",
        {
            "json": {
                **make_item("nested", "{cid}"),
                "geometry": {
                    "type": "GeometryCollection",
                    "geometries": [
                        {
                            "type": "GeometryCollection",
                            "geometries": [{"type": "Point", "coordinates": [1, 1]}],
                        }
                    ],
                },
            }
        },
    ),
    ("GET", "/collections", {"params": {"q": "\\"}}),
    ("GET", "/collections", {"params": {"q": "x,\\"}}),
    (
        "POST",
        "/search",
        {"content": b"[1]", "headers": {"content-type": "application/merge-patch+json"}},
    ),
    ("POST", "/search", {"content": b"null", "headers": {"content-type": "application/geo+json"}}),
    (
        "PATCH",
        "/collections/{cid}",
        {
            "json": [{"op": "replace", "path": "/id", "value": "other"}],
            "headers": {"content-type": "application/json-patch+json"},
        },
    ),
    (
        "PATCH",
        "/collections/{cid}",
        {
            "json": [{"op": "replace", "path": "", "value": make_collection("other")}],
            "headers": {"content-type": "application/json-patch+json"},
        },
    ),
    (
        "PATCH",
        "/collections/{cid}",
        {
            "json": [{"op": "move", "from": "/id", "path": "/title"}],
            "headers": {"content-type": "application/json-patch+json"},
        },
    ),
    ("POST", "/collections", {"content": b'{"id": "deep", "x": ' + b"[" * 600 + b"]" * 600 + b"}"}),
]


def _fill(value: Any, cid: str) -> Any:
    if isinstance(value, str):
        return value.replace("{cid}", cid)
    if isinstance(value, dict):
        return {k: _fill(v, cid) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, cid) for v in value]
    return value


# What names a record that does not exist is 404; every other bad input is 400.
NOT_FOUND = {
    ("POST", "/collections/does-not-exist/items"),
    ("PUT", "/collections/{cid}/items/absent"),
}


@pytest.mark.parametrize(("method", "path", "kwargs"), BAD_REQUESTS)
def test_bad_input_is_400_or_404_with_message(
    http: httpx.Client,
    new_collection: Callable[[], str],
    method: str,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    cid = new_collection()
    response = http.request(method, _fill(path, cid), **_fill(kwargs, cid))
    expected = 404 if (method, path) in NOT_FOUND else 400
    assert response.status_code == expected, response.text
    body = response.json()
    assert body.get("description")
    # Nothing changed: the collection is as made, without items; no new collection.
    stored = http.get(f"/collections/{cid}").json()
    assert stored["description"] == "test collection" and "extent" in stored
    assert http.get(f"/collections/{cid}/items").json()["features"] == []
    assert http.get("/collections/long-description").status_code == 404


def test_a_6_number_bbox_searches_by_its_2d_part(
    http: httpx.Client, new_collection: Callable[[], str]
) -> None:
    cid = new_collection()
    assert bulk(http, cid, [make_item("a", cid, lon=4.0, lat=50.0)]).status_code == 200
    flat = http.get("/search", params={"collections": cid, "bbox": "3.9,49.9,4.2,50.2"}).json()
    tall = http.get("/search", params={"collections": cid, "bbox": "3.9,49.9,-10,4.2,50.2,10"})
    assert tall.status_code == 200, tall.text
    assert (
        [f["id"] for f in tall.json()["features"]] == [f["id"] for f in flat["features"]] == ["a"]
    )
    posted = http.post("/search", json={"collections": [cid], "bbox": [3.9, 49.9, -10, 4.2, 50.2, 10]})  # fmt: skip
    assert [f["id"] for f in posted.json()["features"]] == ["a"]


def test_limits_are_named_in_the_answer(http: httpx.Client) -> None:
    many = http.post("/search", json={"ids": [f"i{n}" for n in range(10_001)]})
    assert many.status_code == 400 and "TILEKEEPER_API_MAX_IDS" in many.json()["description"]
    terms = [{"op": "=", "args": [{"property": "id"}, f"i{n}"]} for n in range(2_000)]
    wide = http.post("/search", json={"filter": {"op": "or", "args": terms}})
    assert wide.status_code == 400 and "MAX_FILTER_TERMS" in wide.json()["description"]
    # Upstream answered 500 without ids; they stay (links are built from them).
    fields = http.get("/collections", params={"fields": "-id"})
    assert fields.status_code == 200 and all("id" in c for c in fields.json()["collections"])
    nan = http.get("/search", params={"bbox": "nan,0,1,1"})
    assert nan.status_code == 400 and "finite" in nan.json()["description"]


def test_bulk_with_invalid_items_stores_nothing(
    http: httpx.Client, database: Database, new_collection: Callable[[], str]
) -> None:
    cid = new_collection()
    good = [make_item(f"ok{n}", cid) for n in range(3)]
    no_geometry = {**make_item("nogeom", cid), "geometry": None}
    no_datetime = make_item("nodate", cid)
    del no_datetime["properties"]["datetime"]
    items = {i["id"]: i for i in [*good, no_geometry, no_datetime]}
    items["wrong-key"] = make_item("other-id", cid)
    response = http.post(
        f"/collections/{cid}/bulk_items", json={"method": "insert", "items": items}
    )
    assert response.status_code == 400
    body = response.json()
    assert {e["id"] for e in body["errors"]} == {"nogeom", "nodate", "wrong-key"}
    assert "nothing was stored" in body["description"]
    assert database.sql("SELECT count(*) FROM pgstac.items WHERE collection = %s", cid) == [(0,)]


def test_bulk_insert_duplicate_rolls_back_whole_batch(
    http: httpx.Client, database: Database, new_collection: Callable[[], str]
) -> None:
    cid = new_collection()
    assert bulk(http, cid, [make_item("dup", cid)]).status_code == 200
    response = bulk(
        http, cid, [make_item("new1", cid), make_item("dup", cid), make_item("new2", cid)]
    )
    assert response.status_code == 409
    ids = {row[0] for row in database.sql("SELECT id FROM pgstac.items WHERE collection = %s", cid)}
    assert ids == {"dup"}


@pytest.fixture()
def impatient_api(database: Database) -> Iterator[str]:
    """An API that gives up waiting for a lock after 100 ms, retrying 4 times."""
    server = start_api(database, lock_timeout_ms=100, retry_attempts=4, retry_after_s=7)
    wait_ready(server.url)
    yield server.url
    server.stop()


def _upsert_while_locked(
    api: str, database: Database, cid: str, http: httpx.Client, hold_s: float
) -> tuple[httpx.Response, str]:
    """Store x as queued, lock its partition for ``hold_s``, upsert x as running meanwhile.

    Returns the upsert's response and the status stored afterwards."""
    bulk(http, cid, [make_item("x", cid, status="queued")])
    partition = database.sql(
        "SELECT partition FROM pgstac.partitions_view WHERE collection = %s", cid
    )[0][0]
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(database.report.logins.admin.dsn) as conn:
            conn.execute(f"LOCK TABLE pgstac.{partition} IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(hold_s)
            conn.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(5)
        response = httpx.post(
            f"{api}/collections/{cid}/bulk_items",
            json={"method": "upsert", "items": {"x": make_item("x", cid, status="running")}},
            headers=auth_headers(),
            timeout=30,
        )
    finally:
        holder.join()
    stored = database.sql(
        "SELECT content->'properties'->>'status' FROM pgstac.items WHERE collection = %s", cid
    )[0][0]
    return response, stored


def test_lock_timeout_is_retried_then_succeeds(
    impatient_api: str, database: Database, new_collection: Callable[[], str], http: httpx.Client
) -> None:
    # Held for 0.3 s: the first tries hit lock_timeout (55P03), a later one gets through.
    response, stored = _upsert_while_locked(impatient_api, database, new_collection(), http, 0.3)
    assert response.status_code == 200, response.text
    assert stored == "running"


def test_persistent_lock_answers_503_with_retry_after(
    impatient_api: str, database: Database, new_collection: Callable[[], str], http: httpx.Client
) -> None:
    response, stored = _upsert_while_locked(impatient_api, database, new_collection(), http, 6)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert "nothing was changed" in response.json()["description"]
    assert stored == "queued"


def test_a_statement_over_the_timeout_answers_503_at_once_saying_so(database: Database) -> None:
    server = start_api(database, statement_timeout_ms=1, retry_attempts=6)
    params = {"aggregations": "total_count,datetime_frequency,datetime_min,datetime_max"}
    try:
        for _ in range(100):  # until the pools are up (their own queries may time out too)
            answer = httpx.get(f"{server.url}/aggregate", params=params, timeout=60)
            if "unavailable" not in answer.text:
                break
            time.sleep(0.3)
        assert answer.status_code == 503, answer.text
        assert "STATEMENT_TIMEOUT_MS" in answer.json()["description"]
    finally:
        server.stop()


def test_a_bug_answers_500_in_the_stac_shape_and_says_the_connection_ends(
    database: Database,
) -> None:
    server = start_api(database)

    async def boom() -> None:
        raise RuntimeError("a bug")  # a route that fails: no real route is known to

    server.app.add_api_route("/boom", boom)
    try:
        wait_ready(server.url)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.get("/boom")
            assert answer.status_code == 500
            assert answer.json()["code"] == "InternalServerError"
            assert answer.headers["connection"] == "close"
            # Sent from outside every middleware, it still carries the security headers.
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["content-security-policy"].startswith("default-src 'none'")
            assert client.get("/_mgmt/ping").status_code == 200  # a new connection works
    finally:
        server.stop()


def test_a_patch_cannot_give_an_item_a_geometry_that_cannot_be_stored(
    http: httpx.Client, new_collection: Callable[[], str]
) -> None:
    cid = new_collection()
    assert bulk(http, cid, [make_item("a", cid)]).status_code == 200
    before = http.get(f"/collections/{cid}/items/a").json()["geometry"]
    merge = {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}  # fmt: skip
    json_patch = [{"op": "replace", "path": "/geometry/coordinates", "value": [[]]}]
    for body, media in ((merge, "application/merge-patch+json"), (json_patch, "application/json-patch+json")):  # fmt: skip
        answer = http.patch(f"/collections/{cid}/items/a", json=body, headers={"content-type": media})  # fmt: skip
        assert answer.status_code == 400 and "geometry" in answer.json()["description"]
    assert http.get(f"/collections/{cid}/items/a").json()["geometry"] == before
    # The listing still renders (a stored bad geometry broke every later search).
    assert http.get(f"/collections/{cid}/items").status_code == 200


def test_an_item_for_a_collection_deleted_meanwhile_is_404(
    http: httpx.Client, new_collection: Callable[[], str]
) -> None:
    # Deleting the collection while items are posted to it: an item either lands (before
    # the delete) or is refused with 404 (never pgstac's foreign-key 424, never a 500).
    seen: set[int] = set()
    for _ in range(8):
        cid = new_collection()
        with ThreadPoolExecutor(4) as pool:
            posts = [
                pool.submit(http.post, f"/collections/{cid}/items", json=make_item(f"i{n}", cid))
                for n in range(3)
            ]
            deleted = pool.submit(http.delete, f"/collections/{cid}")
            answers = [post.result() for post in posts]
        assert deleted.result().status_code == 200
        for answer in answers:
            assert answer.status_code in (201, 404), answer.text
            seen.add(answer.status_code)
            if answer.status_code == 404:
                assert "does not exist" in answer.json()["description"]
    assert 404 in seen
