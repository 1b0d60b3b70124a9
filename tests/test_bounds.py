"""Every expression an anonymous caller can send is bounded before a parser sees it:
deep nesting, long lists and huge texts answer 400 naming the setting, and the
service answers the next request (a deep CQL2-text filter used to overflow the native
parser's stack and kill the process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.database import Database

DEEP = 2_000
DEEP_TEXT = "(" * DEEP + "status = 'x'" + ")" * DEEP


def deep_filter(levels: int) -> str:
    """A CQL2-JSON filter of ``levels`` nested nots, as text (json.dumps recurses)."""
    base = '{"op": "=", "args": [{"property": "status"}, "x"]}'
    return '{"op": "not", "args": [' * levels + base + "]}" * levels


READ_PATHS = [
    "/search",
    "/collections",
    "/collections/bounds-plain/items",
    "/aggregate",
    "/collections/bounds-plain/aggregate",
]


@pytest.fixture(scope="module")
def anonymous(api: str, database: Database) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=60) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def plain_collection(api: str, database: Database) -> None:
    from support.database import admin_token
    from support.stac import make_collection

    headers = {"Authorization": f"Bearer {admin_token(database)}"}
    with httpx.Client(base_url=api, timeout=60, headers=headers) as client:
        client.delete("/collections/bounds-plain")
        assert client.post("/collections", json=make_collection("bounds-plain")).status_code == 201


def _refused(answer: httpx.Response, setting: str) -> None:
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["code"] == "InvalidQueryParameter"
    assert setting in body["description"]


@pytest.mark.parametrize("path", READ_PATHS)
@pytest.mark.parametrize(
    ("params", "setting"),
    [
        ({"filter": DEEP_TEXT, "filter-lang": "cql2-text"}, "MAX_EXPRESSION_DEPTH"),
        ({"filter": deep_filter(DEEP)[:19_000], "filter-lang": "cql2-json"}, "DEPTH"),
        ({"intersects": "[" * DEEP + "]" * DEEP}, "MAX_EXPRESSION_DEPTH"),
        ({"sortby": ",".join(f"-p{n}" for n in range(2_000))}, "MAX_SORT_FIELDS"),
        ({"fields": ",".join(f"p{n}" for n in range(2_000))}, "MAX_FIELDS"),
        ({"filter": "status = '" + "x" * 30_000 + "'"}, "MAX_EXPRESSION_CHARS"),
    ],
    ids=["cql2-text", "cql2-json", "intersects", "sortby", "fields", "chars"],
)
def test_a_hostile_query_is_400_naming_its_setting(
    anonymous: httpx.Client, path: str, params: dict[str, str], setting: str
) -> None:
    _refused(anonymous.get(path, params=params), setting)
    assert anonymous.get("/search", params={"limit": 1}).status_code == 200


def test_many_filter_terms_are_refused_on_collection_search_too(anonymous: httpx.Client) -> None:
    wide = " OR ".join(f"id = 'c{n}'" for n in range(600))
    _refused(anonymous.get("/collections", params={"filter": wide}), "MAX_FILTER_TERMS")
    narrow = " OR ".join(f"id = 'c{n}'" for n in range(5))
    assert anonymous.get("/collections", params={"filter": narrow}).status_code == 200


def test_a_repeated_sortby_counts_every_occurrence(anonymous: httpx.Client) -> None:
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("sortby", f"p{n}") for n in range(50)
    ]
    _refused(anonymous.get("/search", params=params), "MAX_SORT_FIELDS")


def test_quoted_brackets_do_not_count_as_nesting(anonymous: httpx.Client) -> None:
    text = "id = '" + "(" * 100 + "'"
    assert anonymous.get("/search", params={"filter": text}).status_code == 200


@pytest.mark.parametrize("path", ["/search", "/aggregate", "/collections/bounds-plain/aggregate"])
@pytest.mark.parametrize(
    ("body", "setting"),
    [
        # 600 levels of JSON: under orjson's own limit, over ours.
        ({"filter": json.loads(deep_filter(300)), "filter-lang": "cql2-json"}, "DEPTH"),
        ({"intersects": {"type": "Polygon", "coordinates": [[[[[[0]]]]]] * 1}}, None),
        ({"sortby": [{"field": f"p{n}", "direction": "asc"} for n in range(5_000)]}, "SORT"),
        ({"fields": {"include": [f"p{n}" for n in range(5_000)]}}, "MAX_FIELDS"),
        ({"collections": [f"c{n}" for n in range(10_001)]}, "MAX_IDS"),
    ],
    ids=["filter", "shallow-intersects", "sortby", "fields", "collections"],
)
def test_a_hostile_search_body_is_400_naming_its_setting(
    anonymous: httpx.Client, path: str, body: dict[str, object], setting: str | None
) -> None:
    answer = anonymous.post(path, json=body)
    if setting is None:  # a bad but shallow geometry: upstream's own 400, never a 5xx
        assert 400 <= answer.status_code < 500, answer.text
    else:
        _refused(answer, setting)
    assert anonymous.get("/search", params={"limit": 1}).status_code == 200


@pytest.mark.parametrize("path", ["/search", "/aggregate", "/collections/bounds-plain/aggregate"])
def test_a_body_that_is_not_json_is_415(anonymous: httpx.Client, path: str) -> None:
    answer = anonymous.post(path, content=b"{}", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415, answer.text
    assert answer.json()["code"] == "UnsupportedMediaType"
    geojson = anonymous.post(path, content=b"{}", headers={"Content-Type": "application/geo+json"})
    assert geojson.status_code == 200, geojson.text


# Found by an outside tester: no bracket among them, so no bracket depth to see, yet each
# unary operator is a level of the native parser's recursion.
UNARY_RUNS = {
    "minus signs": "a = " + "-" * 4_500 + "1",
    "nots": "NOT " * 4_500 + "a = 1",
}


@pytest.mark.parametrize("path", READ_PATHS)
@pytest.mark.parametrize("text", list(UNARY_RUNS.values()), ids=list(UNARY_RUNS))
def test_a_filter_deep_in_operators_does_not_kill_the_service(
    anonymous: httpx.Client, path: str, text: str
) -> None:
    answer = anonymous.get(path, params={"filter": text})
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert "MAX_EXPRESSION_DEPTH" in answer.json()["description"]
    assert anonymous.get("/search", params={"limit": 1}).status_code == 200


def test_a_text_filter_that_does_not_parse_is_400(anonymous: httpx.Client) -> None:
    answer = anonymous.get("/search", params={"filter": "a = " + "-" * 4_500})
    assert answer.status_code == 400 and "Invalid filter" in answer.json()["description"]


DOTTED = ".".join(["a"] * 1_000)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/search", {"params": {"fields": DOTTED}}),
        ("GET", "/search", {"params": {"sortby": DOTTED}}),
        ("GET", "/collections/bounds-plain/items", {"params": {"fields": DOTTED}}),
        ("GET", "/search", {"params": {"filter": f"{DOTTED} = 1"}}),
        ("POST", "/search", {"json": {"fields": {"include": [DOTTED]}}}),
        ("POST", "/search", {"json": {"sortby": [{"field": DOTTED, "direction": "asc"}]}}),
        (
            "POST",
            "/search",
            {"json": {"filter": {"op": "=", "args": [{"property": DOTTED}, 1]}}},
        ),
    ],
    ids=["get-fields", "get-sortby", "items-fields", "get-filter", "fields", "sortby", "filter"],
)
def test_a_property_path_is_as_deep_as_a_bracket(
    anonymous: httpx.Client, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    # pgstac walks a dotted path recursively: 1,000 levels ran out of the database's stack.
    _refused(anonymous.request(method, path, **kwargs), "MAX_EXPRESSION_DEPTH")


def test_a_search_geometry_has_a_size_limit(anonymous: httpx.Client) -> None:
    ring = [[0.0 + n * 1e-6, 0.0] for n in range(70_000)] + [[0, 1], [0, 0]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    _refused(anonymous.post("/search", json={"intersects": polygon}), "MAX_GEOMETRY_VALUES")


def test_write_bodies_are_bounded_in_depth_before_they_are_parsed(
    api: str, database: Database
) -> None:
    from support.database import admin_token

    headers = {"Authorization": f"Bearer {admin_token(database)}"}
    deep = b"[" * 600 + b"]" * 600
    bodies = {
        "/campaigns": b'{"id": "deep-c", "job_options": {"x": ' + deep + b"}}",
        "/collections/bounds-plain/items": b'{"type": "Feature", "x": ' + deep + b"}",
        # Quotes and brackets in strings do not hide the depth (nor add to it).
        "/collections": b'{"id": "deep-s", "a": "]]]]\\"]]", "x": ' + deep + b"}",
    }
    with httpx.Client(base_url=api, timeout=60, headers=headers) as client:
        for path, body in bodies.items():
            answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, (path, answer.text)
            assert "MAX_EXPRESSION_DEPTH" in answer.json()["description"]
        shallow = b'{"id": "ok-c", "grid": "utm-20km", "description": "[[[[[[[[[[[[[[[["}'
        made = client.post(
            "/campaigns", content=shallow, headers={"Content-Type": "application/json"}
        )
        assert made.status_code == 201, made.text
        client.delete("/campaigns/ok-c")


# Found by an outside tester: this check read the first filter (or filter-lang), upstream
# the last, so a second one reached cql2's parser unchecked and killed the worker.
@pytest.mark.parametrize("path", ["/search", "/collections"])
@pytest.mark.parametrize(
    "params",
    [
        [("filter", "{}"), ("filter", UNARY_RUNS["nots"])],
        [
            ("filter-lang", "cql2-json"),
            ("filter-lang", "cql2-text"),
            ("filter", UNARY_RUNS["minus signs"]),
        ],
        [("filter", "{}"), ("filter", "id = 'x'")],
    ],
    ids=["nots", "languages", "harmless"],
)
def test_a_filter_given_twice_is_400(
    anonymous: httpx.Client, path: str, params: list[tuple[str, str]]
) -> None:
    answer = anonymous.get(path, params=tuple(params))
    assert answer.status_code == 400, answer.text[:300]
    assert "more than once" in answer.json()["description"]
    assert anonymous.get("/search", params={"limit": 1}).status_code == 200
