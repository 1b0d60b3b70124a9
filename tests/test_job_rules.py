"""The rules of job status changes, without a database: the transition table
(jobs/status.py), the change model's refusals and the planner (jobs/changes.py), and the
HTTP meaning of the store's errors (jobs/errors.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from catalog_service.jobs import status
from catalog_service.jobs.campaign import (
    ATTEMPT_KEYS,
    EARLIER_COSTS_KEY,
    JOB_ID_KEY,
    REVISION_KEY,
    WORKER_KEY,
)
from catalog_service.jobs.changes import Change, Conflict, TileState, plan, retry_changes
from catalog_service.jobs.errors import (
    CampaignExists,
    CampaignInUse,
    CampaignNotFound,
    ChangesRejected,
    InvalidChange,
    InvalidTiles,
    StoreError,
    TilesNotFound,
)

WHEN = "2024-05-01T10:00:00.000000Z"
TILE = "t1"


# The transition table


@pytest.mark.parametrize(
    ("current", "new", "reset", "refusal"),
    [
        ("not_started", "queued_for_start", False, None),
        ("not_started", "creating", False, None),
        ("not_started", "skipped", False, None),
        ("creating", "not_started", False, None),  # never reached a back-end
        ("creating", "created", False, None),
        ("queued", "running", False, None),
        ("running", "finished", False, None),
        ("running", "running", False, None),  # staying updates properties only
        ("finished", "finished", False, None),
        ("not_started", "finished", False, "not_started -> finished is not a legal transition"),
        ("running", "queued", False, "running -> queued is not a legal transition"),
        ("queued", "not_started", False, "queued -> not_started is not a legal transition"),
        ("finished", "not_started", False, "(use a reset to retry it)"),
        ("error", "running", False, "error -> running is not a legal transition"),
        ("running", "done", False, "unknown status 'done'"),
        ("finished", "not_started", True, None),
        ("error", "not_started", True, None),
        ("not_started", "not_started", True, None),
        ("running", "not_started", True, "cannot reset a running job"),
        ("creating", "not_started", True, "cannot reset a creating job"),
        ("error", "queued", True, "a reset always goes to not_started"),
    ],
)
def test_transition_table(current: str, new: str, reset: bool, refusal: str | None) -> None:
    if refusal is None:
        status.check(current, new, reset=reset)
    else:
        with pytest.raises(status.IllegalTransition, match=re.escape(refusal)):
            status.check(current, new, reset=reset)


def test_every_move_the_table_lists_is_legal_and_no_other() -> None:
    for current in status.ALL:
        for new in status.ALL:
            legal = current == new or new in status.TRANSITIONS[current]
            try:
                status.check(current, new)
                allowed = True
            except status.IllegalTransition:
                allowed = False
            assert allowed == legal, (current, new)
    assert set(status.TRANSITIONS) == set(status.ALL)
    assert all(not status.TRANSITIONS[s] for s in status.TERMINAL)


@pytest.mark.parametrize(
    ("current", "new", "stale"),
    [
        ("running", "queued", True),
        ("running", "queued_for_start", True),
        ("queued", "created", True),
        ("finished", "running", True),
        ("error", "queued", True),
        ("queued", "running", False),
        ("running", "finished", False),
        ("running", "running", False),
        ("running", "not_started", False),
    ],
)
def test_stale_news(current: str, new: str, stale: bool) -> None:
    assert status.is_stale(current, new) is stale


def test_every_status_reaches_from_not_started_by_legal_steps() -> None:
    for target in status.ALL - {status.NOT_STARTED}:
        steps = status.steps_from_not_started(target)
        assert steps[-1] == target
        for before, after in zip([status.NOT_STARTED, *steps], steps, strict=False):
            status.check(before, after)


# The change model


def _problem(**change: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Change.model_validate({"tile": "x", **change})
    return str(caught.value.errors()[0]["msg"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"set": {"status": "finished"}}, "tile x: status cannot be set directly"),
        ({"set": {"updated": "2024-01-01T00:00:00Z"}}, "updated cannot be set directly"),
        ({"set": {"datetime": None}}, "datetime cannot be set directly"),
        ({"set": {"tilekeeper:order": 5}}, "tilekeeper:order cannot be set directly"),
        ({"set": {"tilekeeper:worker": "w"}}, "tilekeeper:worker cannot be set directly"),
        ({"set": {"tilekeeper:anything": 1}}, "tilekeeper:anything cannot be set directly"),
        ({"set": {"id": "j-1"}}, "a tile's property may not be named id"),
        ({"set": {"costs": -4000}}, "costs must be a number of credits from 0 to 1e+12"),
        ({"set": {"costs": "12.5"}}, "costs must be a number of credits"),
        ({"set": {"costs": 1.7e308}}, "costs must be a number of credits"),
        ({"set": {"costs": float("nan")}}, "costs must be a number of credits"),
        ({"set": {"costs": True}}, "costs must be a number of credits"),
        ({"set": {"costs": [1]}}, "costs must be a number of credits"),
        ({"set": {"start_time": "yesterday"}}, "tile x: property start_time must be"),
        ({"set": {"attempts": "three"}}, "tile x: property attempts must be"),
        ({"status": "done"}, "tile x: unknown status 'done'; known: canceled, created"),
        ({"reset": True, "status": "queued"}, "tile x: a reset goes to not_started"),
        ({"links": [{"rel": "result"}]}, "tile x: a link needs string `rel` and `href`"),
        ({"links": [{"rel": 1, "href": "h"}]}, "a link needs string `rel` and `href`"),
    ],
)
def test_changes_no_tile_may_take_are_refused(change: dict[str, Any], message: str) -> None:
    problem = _problem(**change)
    # The message is the problem itself, naming the tile (the API's 400 says it so).
    assert message in problem and problem.startswith("tile x: ")


@pytest.mark.parametrize(
    "change",
    [
        {"tile": "x", "bogus": 1},
        {"tile": "x", "worker": "w-1"},  # the worker is the request's, not a change's
        {"status": "queued"},
        {"tile": "x", "expect_revision": "soon"},
    ],
)
def test_malformed_changes_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Change.model_validate(change)


@pytest.mark.parametrize(
    "values",
    [
        {"costs": 12.5},
        {"costs": 0},
        {"costs": None},  # removes it
        {JOB_ID_KEY: "j-1", "backend_name": "a", "start_time": "2024-05-01T10:00:00Z"},
        {"last_error": None, "job_options": {"executor-memory": "4g"}},
    ],
)
def test_changes_that_set_ordinary_properties_are_accepted(values: dict[str, Any]) -> None:
    assert Change(tile="x", status="queued", set=values).set == values


# The planner


def _tile(**props: Any) -> dict[str, TileState]:
    return {TILE: ({"status": status.NOT_STARTED, **props}, [])}


def _finished(job: str = "j-1") -> dict[str, TileState]:
    return _tile(
        status=status.FINISHED,
        **{JOB_ID_KEY: job, REVISION_KEY: 3, "attempts": 1, "finish_time": "then"},
    )


def test_a_legal_move_is_planned_with_its_bookkeeping() -> None:
    result = plan([Change(tile=TILE, status="queued_for_start")], _tile(), WHEN)
    assert not result.conflicts and not result.stale
    [planned] = result.planned
    assert (planned.from_status, planned.to_status) == ("not_started", "queued_for_start")
    assert planned.props == {
        "status": "queued_for_start",
        "attempts": 1,  # leaving not_started for an active status is an attempt
        REVISION_KEY: 1,
        "updated": WHEN,
    }
    assert planned.links is None  # links untouched


def test_an_illegal_move_is_a_conflict() -> None:
    result = plan([Change(tile=TILE, status="finished")], _tile(), WHEN)
    assert not result.planned
    assert result.conflicts == [
        Conflict(
            TILE, "not_started", "finished", "not_started -> finished is not a legal transition"
        )
    ]


@pytest.mark.parametrize(
    ("change", "stale", "conflict"),
    [
        # Older news about the job the tile tracks: ignored, newer facts win.
        ({"status": "queued", "set": {JOB_ID_KEY: "j-1"}}, True, None),
        ({"status": "running"}, True, None),
        # Another job's news on a finished tile: a misdirected write.
        ({"status": "queued", "set": {JOB_ID_KEY: "j-other"}}, False, "finished -> queued"),
        # A reset is never stale.
        ({"reset": True}, False, None),
    ],
)
def test_stale_news_of_the_same_job_is_ignored_and_another_jobs_is_a_conflict(
    change: dict[str, Any], stale: bool, conflict: str | None
) -> None:
    result = plan([Change(tile=TILE, **change)], _finished(), WHEN)
    assert result.stale == ([TILE] if stale else [])
    if conflict is None:
        assert not result.conflicts
    else:
        assert [c.reason for c in result.conflicts] == [f"{conflict} is not a legal transition"]
    assert bool(result.planned) == (not stale and conflict is None)


def test_news_of_a_tile_without_a_job_is_never_stale() -> None:
    result = plan([Change(tile=TILE, status="queued")], _tile(status="running"), WHEN)
    assert [c.reason for c in result.conflicts] == ["running -> queued is not a legal transition"]


@pytest.mark.parametrize(
    ("expect", "reason"),
    [
        ({"expect_status": "running"}, None),
        ({"expect_status": "queued"}, "expected queued, is running"),
        ({"expect_revision": 2}, None),
        ({"expect_revision": 1}, "expected revision 1, is 2"),
        ({"expect_status": "running", "expect_revision": 5}, "expected revision 5, is 2"),
    ],
)
def test_compare_and_set(expect: dict[str, Any], reason: str | None) -> None:
    tiles = _tile(status="running", **{REVISION_KEY: 2})
    result = plan([Change(tile=TILE, status="finished", **expect)], tiles, WHEN)
    if reason is None:
        assert not result.conflicts and result.planned[0].props[REVISION_KEY] == 3
    else:
        assert not result.planned
        assert result.conflicts == [Conflict(TILE, "running", "finished", reason)]


def test_a_change_repeated_after_it_applied_is_reported_not_refused() -> None:
    tiles = _tile(status="finished", costs=4.5, **{REVISION_KEY: 4})
    repeat = Change(tile=TILE, status="finished", expect_status="running", set={"costs": 4.5})
    result = plan([repeat], tiles, WHEN)
    assert result.repeated == {TILE: tiles[TILE][0]}
    assert not result.planned and not result.conflicts
    differs = repeat.model_copy(update={"set": {"costs": 5.0}})
    assert [c.reason for c in plan([differs], tiles, WHEN).conflicts] == [
        "expected running, is finished"
    ]


def test_a_reset_clears_the_attempt_keys_and_keeps_the_count() -> None:
    attempt = dict.fromkeys(ATTEMPT_KEYS, "x") | {"costs": 3.0}
    tiles = _tile(status="error", attempts=2, last_error="boom", **attempt)
    reset = Change(tile=TILE, reset=True, set={"last_error": None})
    [planned] = plan([reset], tiles, WHEN).planned
    assert not set(ATTEMPT_KEYS) & planned.props.keys()
    assert "last_error" not in planned.props
    assert (planned.props["status"], planned.props["attempts"]) == ("not_started", 2)
    assert planned.change.history_details() == {"reset": True, "set": {"last_error": None}}
    # The attempt's credits stay spent: kept apart, added up over the resets.
    assert planned.props[EARLIER_COSTS_KEY] == 3.0
    again = {**planned.props, "status": "error", "costs": 1.5}
    [planned] = plan([reset], {TILE: (again, [])}, WHEN).planned
    assert planned.props[EARLIER_COSTS_KEY] == 4.5 and "costs" not in planned.props


def test_back_from_creating_gives_the_attempt_back() -> None:
    tiles = _tile(status="creating", attempts=1, **{JOB_ID_KEY: "j-1"})
    [planned] = plan([Change(tile=TILE, status="not_started")], tiles, WHEN).planned
    assert planned.props["attempts"] == 0 and JOB_ID_KEY not in planned.props


def test_a_job_that_ends_gets_its_finish_time_once() -> None:
    [planned] = plan([Change(tile=TILE, status="error")], _tile(status="running"), WHEN).planned
    assert planned.props["finish_time"] == WHEN
    given = Change(tile=TILE, status="finished", set={"finish_time": "2024-05-01T09:00:00Z"})
    [planned] = plan([given], _tile(status="running"), WHEN).planned
    assert planned.props["finish_time"] == "2024-05-01T09:00:00Z"


def test_changes_of_one_tile_apply_in_order_and_merge_links() -> None:
    link = {"rel": "result", "href": "https://b.test/jobs/j-1/results"}
    changes = [
        Change(tile=TILE, status="queued_for_start", set={JOB_ID_KEY: "j-1"}),
        Change(tile=TILE, status="running", links=[link]),
        Change(tile=TILE, status="finished", set={"costs": 2}, links=[{**link, "x": 1}]),
    ]
    result = plan(changes, _tile(), WHEN)
    assert [(p.from_status, p.to_status) for p in result.planned] == [
        ("not_started", "queued_for_start"),
        ("queued_for_start", "running"),
        ("running", "finished"),
    ]
    props, links = result.final()[TILE]
    assert (props["status"], props["costs"], props[REVISION_KEY]) == ("finished", 2, 3)
    assert links == [{**link, "x": 1}]  # same rel and href: replaced, not added


@pytest.mark.parametrize(
    ("holder", "live", "current", "refused"),
    [
        ("w-2", {"w-2"}, "not_started", True),
        ("w-2", {"w-2"}, "running", True),
        ("w-2", set(), "running", False),  # its lease ran out: the tile is free
        ("w-2", {"w-2"}, "finished", False),  # over: nobody works on it
        ("w-1", {"w-1", "w-2"}, "running", False),  # the worker's own
        (None, {"w-2"}, "not_started", False),
    ],
)
def test_tiles_a_live_worker_holds_are_refused_to_the_others(
    holder: str | None, live: set[str], current: str, refused: bool
) -> None:
    props = {"status": current, **({WORKER_KEY: holder} if holder else {})}
    change = Change(tile=TILE, status=current, set={"note": "n"})
    result = plan([change], _tile(**props), WHEN, worker="w-1", live_workers=frozenset(live))
    if refused:
        assert [c.reason for c in result.conflicts] == [f"the tile is worked on by {holder}"]
    else:
        assert result.planned[0].props[WORKER_KEY] == "w-1"


def test_retry_changes_pick_the_statuses_and_attempts_asked_for() -> None:
    jobs = [
        {"tile": "a", "properties": {"status": "error", "attempts": 1, "last_error": "boom"}},
        {"tile": "b", "properties": {"status": "error", "attempts": 3}},
        {"tile": "c", "properties": {"status": "finished", "attempts": 1}},
    ]
    changes = retry_changes(jobs, {"error"}, {"job_options": {"m": 1}}, below_attempts=3)
    assert [c.tile for c in changes] == ["a"]
    [change] = changes
    assert (change.reset, change.expect_status) == (True, "error")
    assert change.set == {"last_error": None, "job_options": {"m": 1}}
    assert change.details == {"previous_error": "boom"}
    assert [c.tile for c in retry_changes(jobs, {"error", "finished"})] == ["a", "b", "c"]


# The store's errors, as the API answers them


@pytest.mark.parametrize(
    ("error", "http", "code", "extra"),
    [
        (CampaignNotFound("no campaign 'c'"), 404, "NotFoundError", {}),
        (TilesNotFound("c", ["a", "b"]), 404, "NotFoundError", {"tiles": ["a", "b"]}),
        (CampaignExists("exists"), 409, "ConflictError", {}),
        (CampaignInUse("has products"), 409, "ConflictError", {}),
        (
            ChangesRejected([Conflict("a", "running", "queued", "why")]),
            409,
            "TransitionRejected",
            {
                "conflicts": [
                    {"tile": "a", "current": "running", "requested": "queued", "reason": "why"}
                ]
            },
        ),
        (InvalidChange("bad"), 400, "BadRequest", {}),
        (InvalidTiles("bad"), 400, "BadRequest", {}),
        (StoreError("no partition"), 400, "BadRequest", {}),
    ],
)
def test_store_errors_carry_their_http_meaning(
    error: StoreError, http: int, code: str, extra: dict[str, Any]
) -> None:
    assert (error.status, error.code, error.extra()) == (http, code, extra)


def test_rejected_changes_say_the_first_conflict_and_how_many_more() -> None:
    conflicts = [Conflict(t, "running", "queued", "why") for t in ("a", "b", "c")]
    assert str(ChangesRejected(conflicts)) == "tile a: why (and 2 more); nothing was changed"
    assert str(TilesNotFound("c", [str(n) for n in range(12)])).endswith("8, 9 ...")
