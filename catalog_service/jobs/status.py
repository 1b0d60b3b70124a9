"""Job statuses and the transitions between them: the rules every status change obeys.

A tile job's status mixes openEO's batch-job statuses with the job manager's own
(upstream keeps them in one column, openeo-python-client#840); the table below is the
single place that says which move is legal. Anything else is refused, so a stale or
misdirected write (like upstream defect N1) fails loudly instead of overwriting a
finished tile.
"""

from __future__ import annotations

from typing import Final

# openEO batch-job statuses.
CREATED: Final = "created"
QUEUED: Final = "queued"
RUNNING: Final = "running"
FINISHED: Final = "finished"
ERROR: Final = "error"
CANCELED: Final = "canceled"
# The job manager's own.
NOT_STARTED: Final = "not_started"
# tilekeeper's runner: the intent to create a job is recorded before the job is created
# (as the openEO aggregator records a sub-job as `inserted`), so a crash between the two
# leaves a tile that says where to look for its job instead of an untracked orphan.
CREATING: Final = "creating"
QUEUED_FOR_START: Final = "queued_for_start"
START_FAILED: Final = "start_failed"
QUEUED_FOR_START_FAILED: Final = "queued_for_start_failed"
SKIPPED: Final = "skipped"
THREAD_FAILED: Final = "threaded task failed"

# A job that exists, or may exist, on a back-end: the runner tracks these.
ACTIVE: Final = frozenset({CREATING, CREATED, QUEUED_FOR_START, QUEUED, RUNNING})
# The active statuses MultiBackendJobManager itself knows (it never sees `creating`).
TRACKED: Final = frozenset({CREATED, QUEUED_FOR_START, QUEUED, RUNNING})
# Statuses the manager never leaves by itself; only an explicit reset (a retry) does.
TERMINAL: Final = frozenset(
    {FINISHED, ERROR, CANCELED, START_FAILED, QUEUED_FOR_START_FAILED, SKIPPED, THREAD_FAILED}
)
ALL: Final = frozenset({NOT_STARTED}) | ACTIVE | TERMINAL
# A failure of the job itself or of starting it: what `retry` picks up by default.
FAILED: Final = frozenset({ERROR, START_FAILED, QUEUED_FOR_START_FAILED, THREAD_FAILED})

_AFTER_START = {CREATED, QUEUED_FOR_START, QUEUED, RUNNING, FINISHED, ERROR, CANCELED}
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    # A launch: the manager persists the job's status right after creating it.
    NOT_STARTED: frozenset(
        {CREATING, CREATED, QUEUED_FOR_START, QUEUED, RUNNING, ERROR, START_FAILED, SKIPPED}
        | {CANCELED}
    ),
    # Back to not_started: the job never reached a back-end (the runner checked), or the
    # back-end asked to wait (429); the attempt is given back.
    CREATING: frozenset(_AFTER_START | {NOT_STARTED, START_FAILED}),
    CREATED: frozenset(_AFTER_START | {START_FAILED, QUEUED_FOR_START_FAILED, THREAD_FAILED}),
    QUEUED_FOR_START: frozenset(_AFTER_START | {START_FAILED, THREAD_FAILED}),
    QUEUED: frozenset({RUNNING, FINISHED, ERROR, CANCELED, THREAD_FAILED}),
    RUNNING: frozenset({FINISHED, ERROR, CANCELED, THREAD_FAILED}),
    # Once a job is over, only a reset moves it (see `check`); a late start-thread result
    # arriving after the job already finished is harmless and ignored upstream too.
    FINISHED: frozenset(),
    ERROR: frozenset(),
    CANCELED: frozenset(),
    START_FAILED: frozenset(),
    QUEUED_FOR_START_FAILED: frozenset(),
    SKIPPED: frozenset(),
    THREAD_FAILED: frozenset(),
}


def steps_from_not_started(target: str) -> list[str]:
    """The shortest legal path from not_started to ``target`` (without it: []), for
    importing a job database whose jobs already moved on."""
    paths: dict[str, list[str]] = {NOT_STARTED: []}
    queue = [NOT_STARTED]
    while queue:
        current = queue.pop(0)
        if current == target:
            return paths[current]
        for nxt in sorted(TRANSITIONS.get(current, frozenset())):
            if nxt not in paths:
                paths[nxt] = [*paths[current], nxt]
                queue.append(nxt)
    raise IllegalTransition(f"no legal path from {NOT_STARTED} to {target!r}")


class IllegalTransition(ValueError):
    """The requested status change is not allowed from the tile's current status."""


def check(current: str, new: str, *, reset: bool = False) -> None:
    """Raise IllegalTransition unless ``current -> new`` is allowed.

    Staying in the same status is always allowed (it updates properties only). A reset
    moves a job that is not active back to not_started, for a retry.
    """
    if new not in ALL:
        raise IllegalTransition(f"unknown status {new!r}; known: {', '.join(sorted(ALL))}")
    if reset:
        if new != NOT_STARTED:
            raise IllegalTransition("a reset always goes to not_started")
        if current in ACTIVE:
            raise IllegalTransition(
                f"cannot reset a {current} job: it may still run on its back-end; cancel it first"
            )
        return
    if current == new:
        return
    if new not in TRANSITIONS.get(current, frozenset()):
        hint = " (use a reset to retry it)" if current in TERMINAL and new == NOT_STARTED else ""
        raise IllegalTransition(f"{current} -> {new} is not a legal transition{hint}")


# How far along its life a job is; a report about the same job that goes backwards is
# stale (e.g. the start thread's "queued" arriving after a poll already saw "running").
_RANK: Final = {
    NOT_STARTED: 0,
    CREATING: 1,
    CREATED: 2,
    QUEUED_FOR_START: 2,
    QUEUED: 3,
    RUNNING: 4,
}


def is_stale(current: str, new: str) -> bool:
    """True when ``new``, reported for the job that is already ``current``, is older news."""
    if current == new or new == NOT_STARTED:
        return False
    if current in TERMINAL:
        return True
    return _RANK.get(new, 5) < _RANK.get(current, 5)
