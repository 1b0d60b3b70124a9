"""The summary figures the job store keeps (jobs/figures.py): one tile's part and the deltas
without a database, then a campaign driven through the API whose summary must equal, after
every step, the full scan ``summarize`` ran before (kept below as the oracle)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
from support.campaigns import create_campaign, grid_tiles, register_tiles
from support.database import Database

from catalog_service.database import figures_schema
from catalog_service.jobs import budget, figures, status
from catalog_service.jobs.campaign import CampaignDefinition
from catalog_service.jobs.definitions import get_definition
from catalog_service.jobs.figures import Figures
from catalog_service.jobs.summary import summarize


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


TIMES: list[tuple[Any, datetime | None]] = [
    ("2024-05-01T10:00:00Z", _utc(2024, 5, 1, 10)),
    ("2024-05-01T10:00:00", _utc(2024, 5, 1, 10)),  # no offset: UTC
    ("2024-05-01 10:00Z", _utc(2024, 5, 1, 10)),
    ("2024-05-01", _utc(2024, 5, 1)),
    ("2024-05-01T10:00:00.25+02:00", _utc(2024, 5, 1, 8, 0, 0, 250000)),
    ("2024-05-01T10:00:00-0530", _utc(2024, 5, 1, 15, 30)),
    ("2024-05-01T10:00:00+05", _utc(2024, 5, 1, 5)),
    ("2024-02-29T00:00:00Z", _utc(2024, 2, 29)),
    ("2023-02-29T00:00:00Z", None),  # no such day
    ("2024-05-01T10:00:00.1234567Z", None),  # PostgreSQL rounds, Python truncates
    ("2024-05-01T10:00:00+16:00", None),  # PostgreSQL refuses the offset
    ("2024-05-01T24:00:00Z", None),
    ("2024-05-01T23:59:60Z", None),
    ("2024-05-01T10:00:00z", None),
    ("2024-05-01\n", None),
    ("0000-01-01", None),
    ("2024-W18-3", None),
    ("yesterday", None),
    ("", None),
    (1714557600, None),
    (None, None),
]
COSTS: list[tuple[Any, Decimal | None]] = [
    (0, Decimal(0)),
    (3, Decimal(3)),
    (1.5, Decimal("1.5")),
    (0.1, Decimal("0.1")),
    (0.1 + 0.2, Decimal("0.30000000000000004")),  # the float8, printed shortest
    (2**60 + 1, Decimal("1.152921504606847E+18")),  # the float8 it reads as, printed so
    (1e301, None),
    (True, None),
    ("3", None),
    (None, None),
    ([1], None),
]


@pytest.mark.parametrize(("value", "expected"), TIMES)
def test_a_time_is_read_as_postgresql_reads_it_in_utc(value: Any, expected: Any) -> None:
    assert figures.parse_time(value) == expected


@pytest.mark.parametrize(("value", "expected"), COSTS)
def test_costs_count_when_a_json_number(value: Any, expected: Decimal | None) -> None:
    assert figures.costs(value) == expected


START, FINISH = "2024-05-01T10:00:00Z", "2024-05-01T11:30:00.5Z"
CONTRIBUTIONS: list[tuple[dict[str, Any], tuple[str, str], Figures]] = [
    ({}, ("not_started", ""), Figures(n=1)),
    ({"status": "queued", "backend_name": "a"}, ("queued", "a"), Figures(n=1)),
    ({"status": "error", "costs": 2.5}, ("error", ""), Figures(1, 1, Decimal("2.5"))),
    ({"status": "running", "costs": "2.5"}, ("running", ""), Figures(n=1)),
    (
        {"status": "finished", "start_time": START, "finish_time": FINISH, "costs": 4},
        ("finished", ""),
        Figures(1, 1, Decimal(4), 1, Decimal("5400.500000")),
    ),
    # Runtimes only of finished tiles, and only with both times readable.
    ({"status": "error", "start_time": START, "finish_time": FINISH}, ("error", ""), Figures(1)),
    ({"status": "finished", "finish_time": FINISH}, ("finished", ""), Figures(1)),
    ({"status": "finished", "start_time": "soon", "finish_time": FINISH}, ("finished", ""), Figures(1)),
    # Clocks disagree: a negative runtime counts, as it did in the scan.
    (
        {"status": "finished", "start_time": FINISH, "finish_time": START},
        ("finished", ""),
        Figures(1, 0, Decimal(0), 1, Decimal("-5400.500000")),
    ),
    ({"status": "finished", "backend_name": 7}, ("finished", "7"), Figures(n=1)),
    # A retried tile: its earlier attempts' credits count, 0 included (as the fill reads them).
    ({"tilekeeper:earlier_costs": 0.0}, ("not_started", ""), Figures(1, 1, Decimal(0))),
    ({"status": "error", "costs": 1.5, "tilekeeper:earlier_costs": 2}, ("error", ""), Figures(1, 1, Decimal("3.5"))),
]  # fmt: skip


@pytest.mark.parametrize(("props", "key", "expected"), CONTRIBUTIONS)
def test_one_tiles_contribution(
    props: dict[str, Any], key: tuple[str, str], expected: Figures
) -> None:
    assert figures.contribution(props) == (key, expected)


def test_a_delta_moves_a_tile_between_rows_and_drops_what_does_not_change() -> None:
    launched = {"status": "running", "backend_name": "a", "start_time": START}
    done = {**launched, "status": "finished", "finish_time": FINISH, "costs": 1.5}
    delta = figures.delta(
        [
            (None, {}),  # registered
            ({"status": "not_started"}, launched),
            (launched, done),
            (launched, {**launched, "openeo:job_id": "j1"}),  # same row, same figures
        ]
    )
    # Registered then launched: not_started nets to nothing, and is no row.
    assert delta.rows == {("finished", "a"): Figures(1, 1, Decimal("1.5"), 1, Decimal("5400.5"))}
    assert (delta.first_start, delta.last_finish) == (
        _utc(2024, 5, 1, 10),
        _utc(2024, 5, 1, 11, 30, 0, 500000),
    )


def test_a_reset_takes_the_tile_back_but_its_times_stay_seen() -> None:
    done = {"status": "error", "backend_name": "a", "start_time": START, "costs": 2}
    delta = figures.delta([(done, {"status": "not_started", "attempts": 1})])
    assert delta.rows == {
        ("error", "a"): Figures(-1, -1, Decimal(-2)),
        ("not_started", ""): Figures(1),
    }
    assert delta.first_start == _utc(2024, 5, 1, 10)


def test_rows_come_sorted_so_writers_lock_them_in_one_order() -> None:
    pairs = [(None, {"status": s, "backend_name": b}) for s in ("queued", "error") for b in "ba"]
    assert list(figures.delta(pairs).rows) == [
        ("error", "a"),
        ("error", "b"),
        ("queued", "a"),
        ("queued", "b"),
    ]


def test_nothing_changes_no_rows() -> None:
    assert figures.delta([]).rows == {}
    same = {"status": "queued"}
    assert figures.delta([(same, dict(same))]).rows == {}


def test_registered_tiles_count_as_stored() -> None:
    assert figures.key(figures.as_registered(None)) == ("not_started", "")
    assert figures.as_registered({"status": "", "costs": 1})["status"] == "not_started"
    assert figures.as_registered({"status": None})["status"] == "not_started"


def test_tiles_without_a_property_read_are_counted_alike() -> None:
    """The fast path of registrations: tiles with nothing the figures read."""
    plain: list[dict[str, Any]] = [
        {},
        {"attempts": 1, "grid:code": "31UFS"},
        {"tilekeeper:order": 3},
    ]
    pairs: list[figures.Pair] = [(None, p) for p in plain]
    fast = figures.delta([*pairs, ({"grid:code": "x"}, None)])
    read = [figures.contribution(p) for p in plain]
    assert read == [(("not_started", ""), Figures(n=1))] * 3
    assert fast.rows == {("not_started", ""): Figures(n=2)}


# An AOI of 42 utm-20km tiles.
WIDER = "3.5,50.3,5.0,51.2"

# --- The campaign through the API, against the full scan -------------------------------

# The summary as it was computed before the figures were kept: every tile, three scans. A
# tile's credits are its attempt's and its earlier attempts' (kept apart by a reset).
_OLD_COUNTS = """
SELECT content->'properties'->>'status' AS status,
       coalesce(content->'properties'->>'backend_name', '') AS backend,
       count(*) AS n,
       coalesce(sum(CASE WHEN jsonb_typeof(content->'properties'->'costs') = 'number'
                           OR jsonb_typeof(content->'properties'->'tilekeeper:earlier_costs') = 'number'
                      THEN coalesce(CASE WHEN jsonb_typeof(content->'properties'->'costs') = 'number'
                                         THEN (content->'properties'->>'costs')::float8 END, 0)
                         + coalesce(CASE WHEN jsonb_typeof(content->'properties'->'tilekeeper:earlier_costs') = 'number'
                                         THEN (content->'properties'->>'tilekeeper:earlier_costs')::float8 END, 0)
                 END), 0) AS spent
FROM pgstac.items WHERE collection = $1
GROUP BY 1, 2
"""
_OLD_FINISHED = """
WITH f AS (
    SELECT (content->'properties'->>'start_time')::timestamptz AS started,
           (content->'properties'->>'finish_time')::timestamptz AS finished,
           CASE WHEN jsonb_typeof(content->'properties'->'costs') = 'number'
                           OR jsonb_typeof(content->'properties'->'tilekeeper:earlier_costs') = 'number'
                      THEN coalesce(CASE WHEN jsonb_typeof(content->'properties'->'costs') = 'number'
                                         THEN (content->'properties'->>'costs')::float8 END, 0)
                         + coalesce(CASE WHEN jsonb_typeof(content->'properties'->'tilekeeper:earlier_costs') = 'number'
                                         THEN (content->'properties'->>'tilekeeper:earlier_costs')::float8 END, 0)
                 END AS costs
    FROM pgstac.items
    WHERE collection = $1 AND content->'properties'->>'status' = 'finished'
)
SELECT count(*) AS n,
       avg(extract(epoch FROM finished - started))::float8 AS mean_runtime_s,
       avg(costs) AS mean_costs,
       sum(costs) AS costs,
       min(started) AS first_start,
       max(finished) AS last_finish
FROM f
"""
_OLD_FIRST_START = """
SELECT min((content->'properties'->>'start_time')::timestamptz)
FROM pgstac.items WHERE collection = $1 AND content->'properties' ? 'start_time'
"""


async def old_summarize(
    conn: asyncpg.Connection, definition: CampaignDefinition, now: datetime
) -> dict[str, Any]:
    rows = await conn.fetch(_OLD_COUNTS, definition.id)
    by_status: dict[str, int] = {}
    by_backend: dict[str, dict[str, int]] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["backend"]:
            by_backend.setdefault(row["backend"], {})[row["status"]] = row["n"]
    total = sum(by_status.values())
    done = sum(n for s, n in by_status.items() if s in status.TERMINAL)
    finished = await conn.fetchrow(_OLD_FINISHED, definition.id)
    first_start = await conn.fetchval(_OLD_FIRST_START, definition.id)
    remaining = total - done
    mean_runtime = finished["mean_runtime_s"]
    mean_costs = finished["mean_costs"]
    parallel = sum(b.parallel_jobs for b in definition.backends)
    elapsed_h = (now - first_start).total_seconds() / 3600 if first_start else None
    throughput = done / elapsed_h if elapsed_h and done else None
    return {
        "campaign": definition.id,
        "tiles": total,
        "by_status": dict(sorted(by_status.items())),
        "by_backend": {b: dict(sorted(c.items())) for b, c in sorted(by_backend.items())},
        "done": done,
        "remaining": remaining,
        "progress": done / total if total else None,
        "finished": {
            "count": finished["n"],
            "mean_runtime_s": mean_runtime,
            "mean_costs": mean_costs,
            "costs": finished["costs"],
        },
        "throughput_per_hour": throughput,
        "eta_s": remaining / throughput * 3600 if throughput else None,
        "eta_by_parallelism_s": (
            remaining * mean_runtime / parallel if mean_runtime is not None and parallel else None
        ),
        "parallel_jobs": parallel,
        "projected_costs": mean_costs * total if mean_costs is not None else None,
        "first_start": first_start.isoformat() if first_start else None,
        "budget": budget.figures(
            definition.budget,
            float(sum(row["spent"] for row in rows)),
            sum(n for s, n in by_status.items() if s in status.ACTIVE),
            mean_costs,
        ),
    }


def _typed(value: Any) -> Any:
    """Values with their types, so 3 and 3.0 differ."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return (type(value).__name__, value)


class Checker:
    """After each step: the kept summary equals the scan's, in the database and over HTTP,
    except that the first start never moves back (the scan's did, on a reset)."""

    def __init__(self, database: Database, http: httpx.Client, campaign: str) -> None:
        self.dsn = database.report.logins.admin.dsn
        self.http, self.campaign = http, campaign
        self.first_start: str | None = None
        self.steps = 0

    async def __call__(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        conn = await asyncpg.connect(self.dsn, server_settings={"timezone": "UTC"})
        try:
            definition = await get_definition(conn, self.campaign)
            kept = await summarize(conn, definition, now)
            scanned = await old_summarize(conn, definition, now)
        finally:
            await conn.close()
        seen = [s for s in (self.first_start, scanned["first_start"]) if s is not None]
        self.first_start = min(seen, key=datetime.fromisoformat) if seen else None
        if scanned["first_start"] != self.first_start:  # a reset moved the scan's on
            scanned = await self._scan_from_first_start(scanned, now)
        assert _typed(kept) == _typed(scanned)
        served = self.http.get(f"/campaigns/{self.campaign}/summary").json()
        served.pop("workers")
        clocked = ("throughput_per_hour", "eta_s")  # the server's own now
        assert {k: v for k, v in served.items() if k not in clocked} == {
            k: v for k, v in json.loads(json.dumps(kept)).items() if k not in clocked
        }
        self.steps += 1
        return kept

    async def _scan_from_first_start(
        self, scanned: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        first = datetime.fromisoformat(str(self.first_start))
        done, remaining = scanned["done"], scanned["remaining"]
        throughput = done / ((now - first).total_seconds() / 3600) if done else None
        return {
            **scanned,
            "first_start": self.first_start,
            "throughput_per_hour": throughput,
            "eta_s": remaining / throughput * 3600 if throughput else None,
        }


def _change(http: httpx.Client, campaign: str, *changes: dict[str, Any]) -> dict[str, Any]:
    answer = http.post(f"/campaigns/{campaign}/jobs/changes", json={"changes": list(changes)})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _figure_rows(database: Database, campaign: str) -> list[tuple[Any, ...]]:
    return database.sql(
        "SELECT status, backend, n, costs_n, costs_sum, runtime_n, runtime_sum"
        " FROM tilekeeper.campaign_figures WHERE collection = %s AND n <> 0 ORDER BY 1, 2",
        campaign,
    )


def _filled_again(
    database: Database, campaign: str, *, spoil: str | None = None, migration: bool = False
) -> Any:
    """What ``figures.refill`` (or the migration, filling every campaign) makes of the
    tiles stored now, rolled back: the rows and the times; with one tile's start_time
    first spoiled when ``spoil`` names it."""
    with psycopg.connect(database.report.logins.admin.dsn) as conn, conn.cursor() as cur:
        if spoil:
            cur.execute(
                "UPDATE pgstac.items SET content = jsonb_set(content,"
                " '{properties,start_time}', '\"2024-02-30T00:00:00Z\"')"
                " WHERE collection = %s AND id = %s",
                [campaign, spoil],
            )
        if migration:  # the whole migration, as on a database that had tiles before it
            cur.execute("DROP TABLE tilekeeper.campaign_figures, tilekeeper.campaign_times")
            cur.execute(figures_schema.MIGRATION_SQL)
        else:
            figures.refill(cur, campaign)
        rows = cur.execute(
            "SELECT status, backend, n, costs_n, costs_sum, runtime_n, runtime_sum"
            " FROM tilekeeper.campaign_figures WHERE collection = %s AND n <> 0 ORDER BY 1, 2",
            [campaign],
        ).fetchall()
        times = cur.execute(
            "SELECT first_start, last_finish FROM tilekeeper.campaign_times WHERE collection = %s",
            [campaign],
        ).fetchone()
        conn.rollback()
    return rows, times


@pytest.mark.parametrize("value", [v for v, _ in TIMES])
def test_the_migration_reads_times_as_python_does(database: Database, value: Any) -> None:
    [(read,)] = database.sql("SELECT tilekeeper.figures_time(%s::jsonb)", json.dumps(value))
    assert read == figures.parse_time(value)


@pytest.mark.parametrize("value", [v for v, _ in COSTS])
def test_the_migration_reads_costs_as_python_does(database: Database, value: Any) -> None:
    [(read,)] = database.sql("SELECT tilekeeper.figures_costs(%s::jsonb)", json.dumps(value))
    assert read == figures.costs(value)


async def test_a_campaigns_summary_equals_the_full_scan_at_every_step(
    http: httpx.Client, database: Database
) -> None:
    campaign = create_campaign(
        http,
        "figures",
        backends=[
            {"name": "alpha", "url": "https://alpha.test", "parallel_jobs": 3},
            {"name": "beta", "url": "https://beta.test", "parallel_jobs": 2},
        ],
        budget=1000,
    )
    check = Checker(database, http, campaign)
    empty = await check()
    assert empty["tiles"] == 0 and empty["finished"]["costs"] is None

    tiles = grid_tiles(WIDER)[:24]
    ids = [t["id"] for t in tiles]
    register_tiles(http, campaign, tiles[:16])
    with_properties = [
        {"backend_name": "alpha", "costs": 1.5, "start_time": "2024-06-01T08:00:00Z"},
        {"costs": 2, "attempts": 1},
        {"start_time": "2024-06-02T00:00:00Z", "finish_time": "2024-06-02T01:00:00Z"},
        {"backend_name": "beta", "status": "not_started"},
    ]
    register_tiles(
        http,
        campaign,
        [{**t, "properties": p} for t, p in zip(tiles[16:20], with_properties, strict=True)],
    )
    registered = await check()
    assert registered["tiles"] == 20 and registered["budget"]["spent"] == 3.5
    # Registering the same tiles again adds nothing.
    again = http.post(f"/campaigns/{campaign}/tiles", json={"tiles": tiles[:20]})
    assert again.json()["registered"] == 0
    await check()

    # Launches on two back-ends, with start times in several spellings.
    starts = [
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:01.5+02:00",
        "2024-05-01T10:00:02",
        "2024-05-01T10:00:03.000250Z",
        "2024-05-01T10:00:04Z",
        "2024-05-01T10:00:05Z",
        "2024-05-01T10:00:06Z",
        "2024-05-01T10:00:07Z",
    ]
    _change(
        http,
        campaign,
        *(
            {
                "tile": ids[n],
                "status": "queued",
                "set": {
                    "openeo:job_id": f"j{n}",
                    "backend_name": "alpha" if n % 2 else "beta",
                    "start_time": start,
                },
            }
            for n, start in enumerate(starts)
        ),
    )
    await check()
    _change(http, campaign, *({"tile": ids[n], "status": "running"} for n in range(6)))
    # A property change without a move: costs reported while running.
    _change(http, campaign, {"tile": ids[5], "set": {"costs": 0.75}})
    await check()

    # Finishes with costs and times, one without either, errors with costs, a cancel.
    _change(
        http,
        campaign,
        {"tile": ids[0], "status": "finished", "set": {"costs": 4.25, "finish_time": "2024-05-01T11:30:00.25Z"}},
        {"tile": ids[1], "status": "finished", "set": {"costs": 8, "finish_time": "2024-05-01T12:00:00+01:00"}},
        {"tile": ids[2], "status": "finished", "set": {"costs": 0.5, "finish_time": "2024-05-01T10:59:59.999999Z"}},
        {"tile": ids[3], "status": "finished"},
        {"tile": ids[4], "status": "error", "set": {"costs": 1.25}},
        {"tile": ids[5], "status": "canceled"},
    )  # fmt: skip
    finished = await check()
    assert finished["finished"]["count"] == 4 and finished["finished"]["costs"] == 12.75
    assert finished["first_start"] == "2024-05-01T10:00:00+00:00"
    # The migration's fill, and a refill, make the same rows of the tiles as they are now.
    kept_rows = _figure_rows(database, campaign)
    rows, times = _filled_again(database, campaign, migration=True)
    assert rows == kept_rows and times[0] == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert _filled_again(database, campaign) == (rows, times)
    # A malformed stored time cannot fail them; that tile's runtime is left out.
    rows, _ = _filled_again(database, campaign, spoil=ids[0], migration=True)
    assert {(r[0], r[1]): r[5] for r in rows}[("finished", "beta")] == 1

    # A partial batch: the refused change moves nothing.
    answer = http.post(
        f"/campaigns/{campaign}/jobs/changes",
        json={
            "partial": True,
            "changes": [
                {
                    "tile": ids[0],
                    "status": "error",
                    "expect_status": "running",
                    "set": {"costs": 9},
                },
                {"tile": ids[6], "status": "error", "set": {"costs": 3}},
            ],
        },
    )
    assert answer.status_code == 200 and len(answer.json()["conflicts"]) == 1
    await check()

    # Retries: the errors reset (costs and times cleared), then the first tile to start.
    # The credits the reset attempts cost stay spent (the budget counts every attempt).
    spent = (await check())["budget"]["spent"]
    assert http.post(f"/campaigns/{campaign}/reset", json={"statuses": ["error"]}).is_success
    assert (await check())["budget"]["spent"] == spent
    reset = http.post(
        f"/campaigns/{campaign}/reset", json={"statuses": ["finished"], "tiles": [ids[0]]}
    )
    assert reset.json()["reset"] == 1
    after_reset = await check()
    # The scan would now start at the next tile; the kept figure stays.
    assert after_reset["first_start"] == "2024-05-01T10:00:00+00:00"

    # Relaunched and finished again, on the other back-end.
    _change(
        http,
        campaign,
        {"tile": ids[0], "status": "running", "set": {"backend_name": "alpha", "start_time": "2024-05-03T00:00:00Z"}},
        {"tile": ids[4], "status": "running", "set": {"backend_name": "alpha", "start_time": "2024-05-03T00:00:00Z"}},
    )  # fmt: skip
    await check()
    _change(
        http,
        campaign,
        {"tile": ids[0], "status": "finished", "set": {"costs": 16, "finish_time": "2024-05-03T02:00:00Z"}},
        {"tile": ids[4], "status": "finished", "set": {"costs": 0.125}},
        {"tile": ids[7], "status": "finished", "set": {"costs": 2.5}},
    )  # fmt: skip
    last = await check()
    assert last["finished"]["count"] == 6
    assert last["by_backend"]["alpha"]["finished"] == 5

    # More tiles after the run began.
    register_tiles(http, campaign, tiles[20:])
    await check()
    assert check.steps == 13

    # Deleting the campaign takes its figures along.
    assert http.delete(f"/campaigns/{campaign}").is_success
    assert _figure_rows(database, campaign) == []
    assert (
        database.sql("SELECT 1 FROM tilekeeper.campaign_times WHERE collection = %s", campaign)
        == []
    )


async def test_costs_that_are_not_binary_fractions_agree_to_rounding(
    http: httpx.Client, database: Database
) -> None:
    """0.1 + 0.2 summed in float8 (the scan) and exactly (the figures) may differ in
    the last bit: the kept sum is the exact one, rounded once."""
    campaign = create_campaign(http, "figures-cents")
    ids = [t["id"] for t in register_tiles(http, campaign, grid_tiles()[:3])]
    _change(
        http,
        campaign,
        *({"tile": t, "status": "running", "set": {"start_time": START}} for t in ids),
    )
    _change(
        http,
        campaign,
        *(
            {"tile": t, "status": "finished", "set": {"costs": c}}
            for t, c in zip(ids, (0.1, 0.2, 0.3), strict=True)
        ),
    )
    summary = http.get(f"/campaigns/{campaign}/summary").json()
    assert summary["finished"]["costs"] == pytest.approx(0.6, rel=1e-15)
    assert summary["budget"]["spent"] == pytest.approx(0.6, rel=1e-15)
    assert summary["finished"]["mean_costs"] == pytest.approx(0.2, rel=1e-15)
    [(exact,)] = database.sql(
        "SELECT sum(costs_sum) FROM tilekeeper.campaign_figures WHERE collection = %s", campaign
    )
    assert exact == Decimal("0.6")


def test_times_without_offset_and_with_are_the_same_moment() -> None:
    east = timezone(timedelta(hours=2))
    assert figures.parse_time("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 12, tzinfo=east)
