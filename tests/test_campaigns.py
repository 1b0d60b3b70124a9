"""Campaigns and the job store over the real API: registration, legal and illegal
transitions, compare-and-set under concurrency, history, refusal of raw writes."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods
from support.campaigns import AOI, create_campaign, grid_tiles, register_tiles
from support.database import auth_headers

from catalog_service.client.campaigns import tile_records
from catalog_service.database.schema import RENAME_JOB_ID_SQL
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.jobs.campaign import CampaignDefinition, job_item


def new_campaign(http: httpx.Client, **fields: Any) -> str:
    return create_campaign(http, **fields)


def register(http: httpx.Client, campaign: str, aoi: str = AOI) -> list[dict[str, Any]]:
    return register_tiles(http, campaign, grid_tiles(aoi))


def change(http: httpx.Client, campaign: str, *changes: dict[str, Any]) -> httpx.Response:
    return http.post(
        f"/campaigns/{campaign}/jobs/changes", json={"actor": "test", "changes": list(changes)}
    )


def props(http: httpx.Client, campaign: str, tile: str) -> dict[str, Any]:
    response = http.get(f"/collections/{campaign}/items/{tile}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["properties"]
    return result


def test_campaign_is_a_collection_with_its_definition(http: httpx.Client) -> None:
    campaign = new_campaign(
        http,
        process={"process_id": "ndvi", "namespace": "https://example.org/ndvi.json"},
        backends=[{"name": "a", "url": "https://a.test", "parallel_jobs": 3}],
    )
    collection = http.get(f"/collections/{campaign}").json()
    assert collection["tilekeeper:campaign"]["process"]["process_id"] == "ndvi"
    listed = [c["id"] for c in http.get("/campaigns").json()["campaigns"]]
    assert campaign in listed
    again = http.post("/campaigns", json={"id": campaign})
    assert again.status_code == 409


def test_registration_items_and_resume(http: httpx.Client, database: Any) -> None:
    campaign = new_campaign(http)
    tiles = register(http, campaign)
    item = http.get(f"/collections/{campaign}/items/{tiles[0]['id']}").json()
    assert item["properties"]["status"] == "not_started"
    assert item["properties"]["datetime"] == "2024-01-01T00:00:00Z"
    assert item["properties"]["grid:code"].startswith("UTM20KM-31U")
    # Registering again (an interrupted registration repeated) adds nothing.
    again = http.post(f"/campaigns/{campaign}/tiles", json={"tiles": tiles[:5]}).json()
    assert again == {"received": 5, "registered": 0, "existing": 5}
    orders = database.sql(
        "SELECT count(DISTINCT (content->'properties'->>'tilekeeper:order')) FROM items WHERE collection=%s",
        campaign,
    )
    assert orders == [(len(tiles),)]
    counts = http.get(
        f"/collections/{campaign}/aggregate", params={"aggregations": "status_frequency"}
    )
    buckets = counts.json()["aggregations"][0]["buckets"]
    assert buckets == [{"key": "not_started", "data_type": "string", "frequency": len(tiles)}]


def test_registered_items_equal_what_pgstacs_loader_stores(
    http: httpx.Client, database: Any
) -> None:
    """The specialised COPY path stores exactly the rows pypgstac's Loader would."""
    ours, theirs = new_campaign(http), new_campaign(http)
    tiles = register(http, ours)[:3]
    definition = CampaignDefinition.model_validate(
        {k: v for k, v in http.get(f"/campaigns/{theirs}").json().items() if k != "links"}
    )
    items = [
        job_item(definition, t["id"], t["geometry"], t["bbox"], t["properties"], n)
        for n, t in enumerate(tiles)
    ]
    with PgstacDB(dsn=database.report.logins.admin.dsn) as db:
        Loader(db).load_items(iter(items), insert_mode=Methods.ignore)
    rows = {
        campaign: database.sql(
            "SELECT id, datetime, end_datetime, ST_AsEWKT(geometry), content, private "
            "FROM items WHERE collection = %s AND id = ANY(%s) ORDER BY id",
            campaign,
            [t["id"] for t in tiles],
        )
        for campaign in (ours, theirs)
    }
    assert len(rows[ours]) == 3
    assert rows[ours] == rows[theirs]
    assert all(row[3].startswith("SRID=4326;POLYGON") for row in rows[ours])


@pytest.mark.parametrize(
    "body, message",
    [
        (
            {"tiles": [{"id": "a/b", "geometry": {"type": "Point", "coordinates": [0, 0]}}]},
            "is not valid: an id has",
        ),
        ({"tiles": [{"id": "a", "geometry": {"type": "Nope"}}]}, "not GeoJSON"),
        (
            {
                "tiles": [
                    {
                        "id": "a",
                        "geometry": {"type": "Point", "coordinates": [0, 0]},
                        "properties": {"id": "j-1"},
                    }
                ]
            },
            "the openEO job id is openeo:job_id",
        ),
        (
            {
                "tiles": [
                    {
                        "id": "a",
                        "geometry": {"type": "Point", "coordinates": [0, 0]},
                        "properties": {"attempts": "x"},
                    }
                ]
            },
            "property attempts must be an integer",
        ),
        ({"tiles": [{"id": "a"}]}, "geometry"),
        ({"tiles": {"id": "a"}}, '{"tiles": [...]}'),
        (
            {"tiles": [{"id": "a", "geometry": {"type": "Polygon", "coordinates": []}}]},
            "at least one ring",
        ),
        (
            # The first tile is fine; PostGIS cannot read the second: neither is stored.
            {
                "tiles": [
                    {"id": "a", "geometry": {"type": "Point", "coordinates": [0, 0]}},
                    {
                        "id": "b",
                        "geometry": {"type": "Polygon", "coordinates": [[1, 2]]},
                        "bbox": [0, 0, 1, 1],
                    },
                ]
            },
            "tile b: a polygon ring",
        ),
        (
            {
                "tiles": [
                    {
                        "id": "a",
                        "geometry": {"type": "Point", "coordinates": [0, 0]},
                        "properties": {"status": "finished"},
                    }
                ]
            },
            "tiles enter as not_started",
        ),
        (
            {
                "tiles": [
                    {
                        "id": "bowtie",
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                        },
                    }
                ]
            },
            "Self-intersection",
        ),
        (
            {"tiles": [{"id": "far", "geometry": {"type": "Point", "coordinates": [1e308, 0]}}]},
            "outside longitude",
        ),
        (
            {
                "tiles": [
                    {
                        "id": "open",
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]],
                        },
                    }
                ]
            },
            "must be closed",
        ),
    ],
)
def test_bad_tiles_are_refused(http: httpx.Client, body: dict[str, Any], message: str) -> None:
    campaign = new_campaign(http)
    response = http.post(f"/campaigns/{campaign}/tiles", json=body)
    assert response.status_code == 400 and message in response.json()["description"]
    assert http.get(f"/campaigns/{campaign}/summary").json()["tiles"] == 0


def test_transitions_history_and_illegal_moves(http: httpx.Client) -> None:
    campaign = new_campaign(http)
    tile = register(http, campaign)[0]["id"]
    ok = change(
        http,
        campaign,
        {
            "tile": tile,
            "status": "queued_for_start",
            "set": {"openeo:job_id": "j-1", "backend_name": "a"},
        },
    )
    assert ok.status_code == 200, ok.text
    assert change(http, campaign, {"tile": tile, "status": "running"}).status_code == 200
    illegal = change(http, campaign, {"tile": tile, "status": "not_started"})
    assert illegal.status_code == 409
    assert "not a legal transition" in illegal.json()["description"]
    assert (
        change(
            http, campaign, {"tile": tile, "status": "finished", "set": {"costs": 4.5}}
        ).status_code
        == 200
    )
    # Older news about the same job is ignored, not an error and not applied.
    late = change(
        http, campaign, {"tile": tile, "status": "queued", "set": {"openeo:job_id": "j-1"}}
    )
    assert late.status_code == 200 and late.json()["stale"] == [tile]
    # Another job's "queued" on a finished tile is a conflict (a misdirected write).
    wrong = change(
        http, campaign, {"tile": tile, "status": "queued", "set": {"openeo:job_id": "j-other"}}
    )
    assert wrong.status_code == 409
    p = props(http, campaign, tile)
    assert (p["status"], p["openeo:job_id"], p["costs"], p["attempts"]) == (
        "finished",
        "j-1",
        4.5,
        1,
    )
    assert "finish_time" in p
    history = http.get(f"/campaigns/{campaign}/jobs/{tile}/history").json()["history"]
    assert [(h["from"], h["to"]) for h in history] == [
        ("not_started", "queued_for_start"),
        ("queued_for_start", "running"),
        ("running", "finished"),
    ]
    # The key's name is recorded, not the name the client claims.
    assert all(h["by"] == "key:admin" for h in history)


def test_job_ids_stored_as_id_are_renamed_by_the_migration(
    http: httpx.Client, database: Any
) -> None:
    campaign = new_campaign(http)
    tile = register(http, campaign)[0]["id"]
    change(http, campaign, {"tile": tile, "status": "created", "set": {"openeo:job_id": "j-9"}})
    database.sql(
        """UPDATE items SET content = jsonb_set(content #- '{properties,openeo:job_id}',
               '{properties,id}', '"j-9"') WHERE collection = %s AND id = %s""",
        campaign,
        tile,
    )
    assert props(http, campaign, tile)["id"] == "j-9"  # as stored before
    database.sql(RENAME_JOB_ID_SQL)
    p = props(http, campaign, tile)
    assert p["openeo:job_id"] == "j-9" and "id" not in p
    # And the renamed property is typed for searches.
    query = {"op": "=", "args": [{"property": "openeo:job_id"}, "j-9"]}
    found = http.post("/search", json={"collections": [campaign], "filter": query}).json()
    assert [f["id"] for f in found["features"]] == [tile]


def test_bulk_changes_are_all_or_nothing(http: httpx.Client) -> None:
    campaign = new_campaign(http)
    a, b = (t["id"] for t in register(http, campaign)[:2])
    response = change(
        http,
        campaign,
        {"tile": a, "status": "queued_for_start"},
        {"tile": b, "status": "finished"},  # not_started -> finished is illegal
    )
    assert response.status_code == 409
    assert [c["tile"] for c in response.json()["conflicts"]] == [b]
    assert props(http, campaign, a)["status"] == "not_started"
    missing = change(
        http,
        campaign,
        {"tile": a, "status": "queued_for_start"},
        {"tile": "nope", "status": "queued"},
    )
    assert missing.status_code == 404 and missing.json()["tiles"] == ["nope"]
    assert props(http, campaign, a)["status"] == "not_started"


@pytest.mark.parametrize(
    "body",
    [
        {"changes": [{"tile": "x", "status": "done"}]},
        {"changes": [{"tile": "x", "set": {"status": "finished"}}]},
        {"changes": [{"tile": "x", "set": {"tilekeeper:order": 5}}]},
        {"changes": [{"tile": "x", "set": {"id": "j-1"}}]},  # the job id is openeo:job_id
        {"changes": [{"tile": "x", "set": {"start_time": "yesterday"}}]},  # not a timestamp
        {"changes": []},
        {"changes": [{"tile": "x", "bogus": 1}]},
    ],
)
def test_bad_changes_are_refused(http: httpx.Client, body: dict[str, Any]) -> None:
    campaign = new_campaign(http)
    register(http, campaign)
    response = http.post(f"/campaigns/{campaign}/jobs/changes", json=body)
    assert response.status_code == 400, response.text


def test_nan_is_refused(http: httpx.Client) -> None:
    campaign = new_campaign(http)
    tile = register(http, campaign)[0]["id"]
    body = '{"changes": [{"tile": "' + tile + '", "set": {"costs": NaN}}]}'
    response = http.post(
        f"/campaigns/{campaign}/jobs/changes",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and "NaN" in response.json()["description"]


def test_every_typed_body_is_strict_json(
    http: httpx.Client, new_collection: Callable[[], str]
) -> None:
    """Product routes read their bodies as the campaign routes do: NaN is no JSON."""
    campaign, collection = new_campaign(http), new_collection()
    tile = register(http, campaign)[0]["id"]
    for method, path, body in [
        ("PUT", f"/campaigns/{campaign}/workers/w1", '{"lease_s": NaN}'),
        ("PUT", f"/campaigns/{campaign}/jobs/{tile}/product", '{"state": "failed", "x": NaN}'),
        ("POST", f"/collections/{collection}/products", '{"writes": [Infinity]}'),
    ]:
        response = http.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert "NaN/Infinity are not JSON" in response.json()["description"]


def test_worker_ids_and_statuses_are_checked_with_their_messages(http: httpx.Client) -> None:
    campaign = new_campaign(http)
    bad_worker = http.put(f"/campaigns/{campaign}/workers/-w", json={})
    assert bad_worker.status_code == 400 and "worker id '-w' must match" in bad_worker.text
    unknown = http.post(f"/campaigns/{campaign}/workers/w1/claim", json={"statuses": ["done"]})
    assert unknown.status_code == 400
    assert unknown.json()["description"] == "invalid request body: statuses.0: unknown status done"
    listed = http.get(f"/campaigns/{campaign}/jobs", params={"status": "done,running"})
    assert listed.status_code == 400 and listed.json()["description"] == "unknown status done"


def test_a_campaigns_jobs_link_lists_every_job_by_order(http: httpx.Client) -> None:
    campaign = new_campaign(http)
    tiles = register(http, campaign)
    links = {
        link["rel"]: link["href"] for link in http.get(f"/campaigns/{campaign}").json()["links"]
    }
    answer = http.get(links["jobs"])
    assert answer.status_code == 200, answer.text
    jobs = answer.json()["jobs"]
    assert [j["tile"] for j in jobs] == [t["id"] for t in tiles]
    assert (
        http.get(f"/campaigns/{campaign}/jobs", params={"status": "x", "tile": "y"}).status_code
        == 400
    )


def test_unknown_campaign_is_404(http: httpx.Client) -> None:
    assert http.get("/campaigns/nope/summary").status_code == 404
    assert http.get("/campaigns/nope/jobs", params={"status": "not_started"}).status_code == 404
    assert change(http, "nope", {"tile": "a", "status": "queued"}).status_code == 404


def test_40_concurrent_changes_of_one_tile_lose_nothing(api: str, http: httpx.Client) -> None:
    campaign = new_campaign(http)
    tile = register(http, campaign)[0]["id"]

    def note(n: int) -> int:
        with httpx.Client(base_url=api, headers=auth_headers(), timeout=60) as client:
            return change(client, campaign, {"tile": tile, "set": {f"note_{n}": n}}).status_code

    with ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(note, range(40)))
    assert codes == [200] * 40
    p = props(http, campaign, tile)
    assert all(p[f"note_{n}"] == n for n in range(40))
    assert p["tilekeeper:revision"] == 40
    assert len(http.get(f"/campaigns/{campaign}/jobs/{tile}/history").json()["history"]) == 40

    # Compare-and-set: of 40 launches of the same not_started tile, exactly one wins.
    def launch(n: int) -> int:
        with httpx.Client(base_url=api, headers=auth_headers(), timeout=60) as client:
            body = {
                "tile": tile,
                "status": "queued_for_start",
                "expect_status": "not_started",
                "set": {"openeo:job_id": f"j-{n}"},
            }
            return change(client, campaign, body).status_code

    with ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(launch, range(40)))
    assert sorted(codes) == [200] + [409] * 39
    assert props(http, campaign, tile)["attempts"] == 1


def test_100_concurrent_registrations_lose_nothing(api: str, http: httpx.Client) -> None:
    campaign = new_campaign(http)
    tiles = list(tile_records(tiles_for("utm-10km", load_aoi("2.0,49.0,8.0,52.0"))))[:1000]
    assert len(tiles) == 1000
    batches = [tiles[i::100] for i in range(100)]

    def post(batch: list[dict[str, Any]]) -> int:
        with httpx.Client(base_url=api, headers=auth_headers(), timeout=120) as client:
            return client.post(f"/campaigns/{campaign}/tiles", json={"tiles": batch}).status_code

    with ThreadPoolExecutor(100) as pool:
        codes = list(pool.map(post, batches))
    assert codes == [200] * 100
    summary = http.get(f"/campaigns/{campaign}/summary").json()
    assert summary["tiles"] == 1000
    jobs = http.get(
        f"/campaigns/{campaign}/jobs", params={"status": "not_started", "limit": 2000}
    ).json()["jobs"]
    orders = [j["properties"]["tilekeeper:order"] for j in jobs]
    assert sorted(orders) == orders and len(set(orders)) == 1000


def test_raw_stac_writes_to_campaign_tiles_fail_loudly(http: httpx.Client) -> None:
    campaign = new_campaign(http)
    tile = register(http, campaign)[0]
    item = http.get(f"/collections/{campaign}/items/{tile['id']}").json()
    item["properties"]["status"] = "finished"
    bulk = http.post(
        f"/collections/{campaign}/bulk_items",
        json={"method": "upsert", "items": {item["id"]: item}},
    )
    assert bulk.status_code == 409 and "jobs/changes" in bulk.json()["description"]
    assert http.put(f"/collections/{campaign}/items/{item['id']}", json=item).status_code == 409
    assert http.delete(f"/collections/{campaign}/items/{item['id']}").status_code == 409
    assert props(http, campaign, tile["id"])["status"] == "not_started"


def test_reset_for_retry_and_summary(http: httpx.Client) -> None:
    campaign = new_campaign(
        http, backends=[{"name": "a", "url": "https://a.test", "parallel_jobs": 4}]
    )
    tiles = [t["id"] for t in register(http, campaign)[:4]]
    start = "2024-05-01T10:00:00Z"
    for n, tile in enumerate(tiles):
        final = "finished" if n < 3 else "error"
        change(
            http,
            campaign,
            {
                "tile": tile,
                "status": "queued_for_start",
                "set": {"openeo:job_id": f"j{n}", "backend_name": "a", "start_time": start},
            },
        )
        assert (
            change(
                http, campaign, {"tile": tile, "status": final, "set": {"costs": 10.0 * (n + 1)}}
            ).status_code
            == 200
        )
    summary = http.get(f"/campaigns/{campaign}/summary").json()
    assert summary["by_status"]["finished"] == 3 and summary["by_status"]["error"] == 1
    assert summary["by_backend"] == {"a": {"error": 1, "finished": 3}}
    assert summary["finished"]["mean_costs"] == pytest.approx(20.0)
    assert summary["projected_costs"] == pytest.approx(20.0 * summary["tiles"])
    assert summary["eta_by_parallelism_s"] is not None and summary["eta_s"] is not None
    refused = http.post(f"/campaigns/{campaign}/reset", json={"statuses": ["running"]})
    assert refused.status_code == 400
    # A reason is one printable line: it goes into every reader's history of the tiles.
    spoof = {"statuses": ["error"], "reason": "retry\nactor: admin"}
    assert http.post(f"/campaigns/{campaign}/reset", json=spoof).status_code == 400
    assert props(http, campaign, tiles[3])["status"] == "error"
    reset = http.post(
        f"/campaigns/{campaign}/reset",
        json={"statuses": ["error"], "set": {"job_options": {"executor-memory": "4g"}}},
    )
    assert reset.json()["reset"] == 1
    p = props(http, campaign, tiles[3])
    assert p["status"] == "not_started" and p["job_options"] == {"executor-memory": "4g"}
    assert "id" not in p and p["attempts"] == 1


@pytest.mark.parametrize("costs", ["12.5", -4000, 1.7e308, True, [1]])
def test_costs_that_are_not_credits_are_refused_and_nothing_is_stored(
    http: httpx.Client, costs: Any
) -> None:
    campaign = new_campaign(http)
    tile = register(http, campaign)[0]["id"]
    before = props(http, campaign, tile)
    answer = change(http, campaign, {"tile": tile, "status": "queued", "set": {"costs": costs}})
    assert answer.status_code == 400, answer.text
    assert "costs must be a number of credits" in answer.json()["description"]
    assert props(http, campaign, tile) == before
    fine = change(http, campaign, {"tile": tile, "status": "queued", "set": {"costs": 12.5}})
    assert fine.status_code == 200, fine.text
    assert props(http, campaign, tile)["costs"] == 12.5
