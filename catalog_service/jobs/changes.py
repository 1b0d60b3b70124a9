"""Status changes of tile jobs and the rules they obey, without a database.

A ``Change`` is one tile's requested change, validated when it is made (the API reads
its request bodies into it); ``plan`` works out what a batch of changes does to the
tiles' current properties: the transition table (``jobs/status.py``), stale news,
compare-and-set, resets, the tiles live workers hold. The job store locks the rows,
runs the plan and writes it (``jobs/store.py``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from catalog_service.database.queryables import value_problem
from catalog_service.jobs import status
from catalog_service.jobs.campaign import (
    ATTEMPT_KEYS,
    EARLIER_COSTS_KEY,
    JOB_ID_KEY,
    MANAGED_KEYS,
    MANAGED_PREFIX,
    RESERVED_KEYS,
    REVISION_KEY,
    WORKER_KEY,
    reserved_message,
)

# Credits of one job: the budget and the summaries add them up, so each is a finite,
# non-negative number (a string, -4000 or 1.7e308 would break both).
MAX_COSTS = 1e12


def _is_costs(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_COSTS
    )


class Change(BaseModel):
    """One tile's requested change.

    ``set`` merges properties (None removes one); ``expect_status``/``expect_revision``
    make it a compare-and-set; ``reset`` moves a job that is over back to not_started.
    A change repeated after it was applied (its answer lost) is reported as applied.
    """

    model_config = ConfigDict(extra="forbid")

    tile: str
    status: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    expect_status: str | None = None
    expect_revision: int | None = None
    reset: bool = False
    links: list[dict[str, Any]] = Field(default_factory=list)
    details: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _obeys_rules(self) -> Change:
        if problem := self.problem():
            # A custom error keeps the message as it is (no "Value error, " prefix).
            raise PydanticCustomError("invalid_change", "{problem}", {"problem": problem})
        return self

    def problem(self) -> str | None:
        """Why this change can never be applied, whatever the tile's state; or None."""
        if reserved := RESERVED_KEYS.intersection(self.set):
            return reserved_message(self.tile, reserved)
        bad = [k for k in self.set if k in MANAGED_KEYS or k.startswith(MANAGED_PREFIX)]
        if bad:
            return (
                f"tile {self.tile}: {', '.join(sorted(bad))} cannot be set directly"
                " (status is the `status` field of a change; the rest is kept by tilekeeper)"
            )
        if self.status is not None and self.status not in status.ALL:
            return (
                f"tile {self.tile}: unknown status {self.status!r}; "
                f"known: {', '.join(sorted(status.ALL))}"
            )
        if self.reset and self.status not in (None, status.NOT_STARTED):
            return f"tile {self.tile}: a reset goes to not_started"
        for link in self.links:
            if not isinstance(link.get("href"), str) or not isinstance(link.get("rel"), str):
                return f"tile {self.tile}: a link needs string `rel` and `href`"
        costs = self.set.get("costs")
        if costs is not None and not _is_costs(costs):
            return (
                f"tile {self.tile}: costs must be a number of credits from 0 to "
                f"{MAX_COSTS:g}, not {costs!r:.60}"
            )
        return value_problem(self.set, f"tile {self.tile}")

    def history_details(self) -> dict[str, Any]:
        """What the tile's history records about this change besides the move."""
        details: dict[str, Any] = dict(self.details or {})
        if self.reset:
            details["reset"] = True
        if self.set:
            details["set"] = self.set
        return details


def retry_changes(
    jobs: Sequence[Mapping[str, Any]],
    statuses: Collection[str],
    set_properties: Mapping[str, Any] | None = None,
    below_attempts: int | None = None,
    reason: str | None = None,
) -> list[Change]:
    """Resets (a retry) of the ``jobs`` (``{"tile", "properties"}``) in ``statuses``
    with fewer than ``below_attempts`` attempts, each a compare-and-set on the status
    it was read in; the previous error and the ``reason`` go to the history."""
    changes = []
    for job in jobs:
        props = job["properties"]
        if props.get("status") not in statuses:
            continue
        if below_attempts is not None and int(props.get("attempts") or 0) >= below_attempts:
            continue
        details = {"previous_error": props["last_error"]} if props.get("last_error") else {}
        if reason:
            details["reason"] = reason
        changes.append(
            Change(
                tile=job["tile"],
                reset=True,
                expect_status=props["status"],
                set={"last_error": None, **(set_properties or {})},
                details=details or None,
            )
        )
    return changes


@dataclass
class Conflict:
    """A change that broke a rule: the tile, its status, the one asked for and why."""

    tile: str
    current: str
    requested: str
    reason: str


# A tile's current properties and links, as the plan reads them.
Links = list[dict[str, Any]]
TileState = tuple[dict[str, Any], Links]


class Planned(NamedTuple):
    tile: str
    props: dict[str, Any]
    links: Links | None  # None: the links stay as they are
    from_status: str
    to_status: str
    change: Change


@dataclass
class Plan:
    planned: list[Planned] = field(default_factory=list)
    # Older news about a job the tile already tracks: ignored, not refused.
    stale: list[str] = field(default_factory=list)
    # Changes already applied (repeated after their answer was lost): tile -> properties.
    repeated: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)

    def final(self) -> dict[str, tuple[dict[str, Any], Links | None]]:
        """The last planned state per tile (properties, links or None when they stay):
        what is written."""
        final: dict[str, tuple[dict[str, Any], Links | None]] = {}
        for p in self.planned:
            links = p.links if p.links is not None else final.get(p.tile, (None, None))[1]
            final[p.tile] = (p.props, links)
        return final


def _merge_links(existing: Links, new: Links) -> Links:
    keys = {(link["rel"], link["href"]) for link in new}
    return [link for link in existing if (link.get("rel"), link.get("href")) not in keys] + new


def next_properties(
    props: dict[str, Any], change: Change, new_status: str, when: str, worker: str | None = None
) -> dict[str, Any]:
    """The tile's properties once ``change`` moved it to ``new_status`` at ``when``."""
    current = props.get("status", status.NOT_STARTED)
    out = dict(props)
    if change.reset or (current == status.CREATING and new_status == status.NOT_STARTED):
        if _is_costs(props.get("costs")):
            given: Any = props.get(EARLIER_COSTS_KEY)
            earlier = float(given) if _is_costs(given) else 0.0
            out[EARLIER_COSTS_KEY] = round(earlier + float(props["costs"]), 6)
        for key in ATTEMPT_KEYS:
            out.pop(key, None)
    for key, value in change.set.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    out["status"] = new_status
    if current == status.NOT_STARTED and new_status in status.ACTIVE:
        out["attempts"] = int(out.get("attempts") or 0) + 1
    elif current == status.CREATING and new_status == status.NOT_STARTED:
        # The job never reached a back-end: that was no attempt.
        out["attempts"] = max(0, int(out.get("attempts") or 0) - 1)
    if new_status in status.TERMINAL and current not in status.TERMINAL:
        out.setdefault("finish_time", when)
    if worker is not None:
        out[WORKER_KEY] = worker
    out[REVISION_KEY] = int(out.get(REVISION_KEY) or 0) + 1
    out["updated"] = when
    return out


def _already_applied(change: Change, props: dict[str, Any], links: Links) -> bool:
    """True when the tile already is what ``change`` asks for: a change repeated after
    its answer was lost (a timeout, an outage), which must not count as a conflict."""
    if change.reset or change.status is None or change.status != props.get("status"):
        return False
    if any(props.get(key) != value for key, value in change.set.items()):
        return False
    present = {(link.get("rel"), link.get("href")) for link in links}
    return all((link["rel"], link["href"]) in present for link in change.links)


def plan(
    changes: Sequence[Change],
    tiles: Mapping[str, TileState],
    when: str,
    *,
    worker: str | None = None,
    live_workers: frozenset[str] = frozenset(),
) -> Plan:
    """What ``changes`` do to ``tiles`` (every changed tile's current state), at ``when``.

    ``worker`` is the runner worker making the changes: a tile another of the
    ``live_workers`` holds is refused, the others become the worker's."""
    result = Plan()
    # Several changes of one tile in one request apply in order.
    state = dict(tiles)
    for change in changes:
        props, links = state[change.tile]
        current = str(props.get("status", status.NOT_STARTED))
        new = status.NOT_STARTED if change.reset else (change.status or current)
        owner = props.get(WORKER_KEY)
        if (
            worker is not None
            and owner not in (None, worker)
            and owner in live_workers
            and current in status.ACTIVE | {status.NOT_STARTED}
        ):
            result.conflicts.append(
                Conflict(change.tile, current, new, f"the tile is worked on by {owner}")
            )
            continue
        if change.expect_status is not None and change.expect_status != current:
            if _already_applied(change, props, links):
                result.repeated[change.tile] = props
                continue
            result.conflicts.append(
                Conflict(
                    change.tile, current, new, f"expected {change.expect_status}, is {current}"
                )
            )
            continue
        revision = int(props.get(REVISION_KEY) or 0)
        if change.expect_revision is not None and change.expect_revision != revision:
            result.conflicts.append(
                Conflict(
                    change.tile,
                    current,
                    new,
                    f"expected revision {change.expect_revision}, is {revision}",
                )
            )
            continue
        job = props.get(JOB_ID_KEY)
        same_job = change.set.get(JOB_ID_KEY, job) == job
        if not change.reset and same_job and job and status.is_stale(current, new):
            # Older news about the job the tile already tracks: newer facts win.
            result.stale.append(change.tile)
            continue
        try:
            status.check(current, new, reset=change.reset)
        except status.IllegalTransition as exc:
            result.conflicts.append(Conflict(change.tile, current, new, str(exc)))
            continue
        new_props = next_properties(props, change, new, when, worker)
        new_links = _merge_links(links, change.links) if change.links else None
        state[change.tile] = (new_props, new_links if new_links is not None else links)
        result.planned.append(Planned(change.tile, new_props, new_links, current, new, change))
    return result
