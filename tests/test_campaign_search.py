"""A campaign's searches answered from its indexes (database/campaign_search.py and
api/campaign_pages.py) give exactly what pgstac and upstream give, and every search they
do not answer still reaches pgstac."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from support.campaigns import create_campaign, grid_tiles, register_tiles
from support.database import Database, admin_token


@pytest.fixture(scope="module")
def campaign(api: str, database: Database) -> str:
    """A campaign part-way through its run: tiles in four statuses, some with a job id,
    one with a null property and a nested null (which pgstac's hydration removes)."""
    headers = {"Authorization": f"Bearer {admin_token(database)}"}
    with httpx.Client(base_url=api, timeout=60, headers=headers) as http:
        campaign = create_campaign(http, "fast")
        tiles = register_tiles(http, campaign, grid_tiles())
        for final in (False, True):
            changes = [
                {
                    "tile": tile["id"],
                    "status": status if final or status != "finished" else "running",
                    "set": {"openeo:job_id": f"j-{n}", "backend_name": "alpha"},
                }
                for n, tile in enumerate(tiles[:24])
                for status in [("queued", "running", "finished", "error")[n % 4]]
                if not final or status == "finished"
            ]
            answer = http.post(
                f"/campaigns/{campaign}/jobs/changes",
                json={"actor": "test", "changes": changes},
            )
            assert answer.status_code == 200, answer.text
    database.sql(
        "UPDATE items SET content = jsonb_set(content, '{properties,notes}', "
        """'{"a": null, "b": 1}') WHERE collection = %s AND id = %s""",
        campaign,
        tiles[0]["id"],
    )
    return campaign


def _ours(database: Database, search: dict[str, Any]) -> Any:
    rows = database.sql("SELECT tilekeeper_search.campaign_page(%s::jsonb)", json.dumps(search))
    return rows[0][0]


def _pages(database: Database, search: dict[str, Any]) -> tuple[Any, Any]:
    pgstac = database.sql("SELECT pgstac.search(%s::jsonb)", json.dumps(search))[0][0]
    return _ours(database, search), pgstac


def _status(value: str) -> dict[str, Any]:
    return {"op": "=", "args": [{"property": "status"}, value]}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"limit": 5},
        {"limit": 0},
        {"limit": 1000},
        {"filter": _status("finished"), "filter-lang": "cql2-json"},
        {"filter": _status("not_started"), "limit": 3},
        {"filter": _status("no-such-status")},
        {"fields": {"include": [], "exclude": []}, "conf": {"nohydrate": False}},
        {"fields": {"include": ["id", "properties.status"]}},
        {"fields": {"exclude": ["geometry"]}},
        {"conf": {"nohydrate": True}},
    ],
)
def test_a_campaign_page_is_pgstacs_page(
    campaign: str, database: Database, extra: dict[str, Any]
) -> None:
    search = {"collections": [campaign], **extra}
    ours, pgstac = _pages(database, search)
    assert ours is not None, "the campaign's indexes answer this search"
    assert ours == pgstac


def test_pages_continue_on_either_path(campaign: str, database: Database) -> None:
    """Following next tokens gives pgstac's pages; a token from pgstac works here and back."""
    search: dict[str, Any] = {"collections": [campaign], "limit": 7}
    seen: list[str] = []
    while True:
        ours, pgstac = _pages(database, search)
        assert ours == pgstac
        seen += [f["id"] for f in ours["features"]]
        following = [link for link in ours["links"] if link["rel"] == "next"]
        if not following:
            break
        search["token"] = following[0]["href"].split("token=")[1]
    total = database.sql("SELECT count(*) FROM items WHERE collection = %s", campaign)[0][0]
    assert len(seen) == len(set(seen)) == total


def test_one_tile_is_pgstacs_answer(campaign: str, database: Database) -> None:
    tile = database.sql("SELECT id FROM items WHERE collection = %s LIMIT 1", campaign)[0][0]
    for ids in ([tile], ["no-such-tile"]):
        ours, pgstac = _pages(database, {"collections": [campaign], "ids": ids, "limit": 1})
        assert ours is not None and ours == pgstac


def test_hydration_keeps_pgstacs_answer_for_nulls(campaign: str, database: Database) -> None:
    rows = database.sql(
        "SELECT tilekeeper_search.hydrated(i, collection_base_item(i.collection)),"
        " content_hydrate(i) FROM items i WHERE collection = %s",
        campaign,
    )
    assert rows and all(ours == pgstac for ours, pgstac in rows)
    with_notes = [ours for ours, _ in rows if "notes" in ours["properties"]]
    assert with_notes == [w for w in with_notes if w["properties"]["notes"] == {"b": 1}]


@pytest.mark.parametrize(
    "extra",
    [
        {"sortby": [{"field": "id", "direction": "asc"}]},
        {"bbox": [4.0, 50.5, 4.8, 51.0]},
        {"datetime": "2024-01-01T00:00:00Z/.."},
        {"filter": _status("finished"), "filter-lang": "cql2-text"},
        {"filter": {"op": "=", "args": [{"property": "backend_name"}, "alpha"]}},
        {"filter": {"op": "in", "args": [{"property": "status"}, ["finished"]]}},
        {"ids": ["a", "b"]},
        {"token": "prev:00:00"},
        {"conf": {"context": "off"}},
        {"query": {"status": {"eq": "finished"}}},
    ],
)
def test_other_searches_are_pgstacs(
    campaign: str, database: Database, extra: dict[str, Any]
) -> None:
    assert _ours(database, {"collections": [campaign], **extra}) is None


def test_collections_that_are_not_one_campaign_are_pgstacs(
    campaign: str, database: Database, new_collection: Any
) -> None:
    for collections in ([], [campaign, campaign], [new_collection()], ["no-such"]):
        assert _ours(database, {"collections": collections}) is None, collections


def test_a_token_of_another_collection_is_pgstacs(
    campaign: str, database: Database, http: httpx.Client
) -> None:
    other = create_campaign(http, "fast-other")
    register_tiles(http, other, grid_tiles()[:3])
    _, page = _pages(database, {"collections": [other], "limit": 1})
    token = next(link for link in page["links"] if link["rel"] == "next")["href"].split("=")[1]
    assert _ours(database, {"collections": [campaign], "token": token}) is None


def test_the_api_answers_as_upstream_does(campaign: str, http: httpx.Client) -> None:
    """Over HTTP: a status search, its pages and an item are what the pgstac path gives
    (forced by a sortby of pgstac's own default order), links included."""
    query = {"collections": campaign, "filter": "status='finished'", "limit": "2"}
    fast = http.get("/search", params=query).json()
    slow = http.get("/search", params={**query, "sortby": "-datetime"}).json()
    assert fast["features"] == slow["features"]
    finished = http.get(f"/campaigns/{campaign}/counts").json()["counts"]["finished"]
    assert fast["numberMatched"] == slow["numberMatched"] == finished > 2
    assert [link["rel"] for link in fast["links"]] == [link["rel"] for link in slow["links"]]
    assert [link["rel"] for link in fast["links"]] == ["root", "self", "next"]
    following = next(link for link in fast["links"] if link["rel"] == "next")
    assert "token=next%3A" in following["href"] or "token=next:" in following["href"]
    second = http.get(following["href"]).json()
    slow_next = next(link for link in slow["links"] if link["rel"] == "next")["href"]
    slow_second = http.get(slow_next).json()
    assert second["features"] == slow_second["features"]
    assert [f["id"] for f in second["features"]] != [f["id"] for f in fast["features"]]
    assert {link["rel"] for link in second["links"]} >= {"previous", "root", "self"}
    posted = http.post("/search", json={"collections": [campaign], "limit": 2}).json()
    follow = next(link for link in posted["links"] if link["rel"] == "next")
    assert follow["method"] == "POST" and follow["body"]["token"].startswith("next:")
    item_id = fast["features"][0]["id"]
    item = http.get(f"/collections/{campaign}/items/{item_id}")
    assert item.status_code == 200 and item.headers["content-type"] == "application/geo+json"
    assert item.json() == fast["features"][0]
    assert http.get(f"/collections/{campaign}/items/no-such-tile").status_code == 404
