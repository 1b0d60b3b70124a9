"""What the campaign routes read and answer. Bodies are read as strict JSON into these
models (``deps.strict_body``; tile registrations are checked by hand, fast, and
``TilesIn`` only documents them). Small answers are validated on the way out; large ones
(job lists of 100,000 tiles, campaigns, summaries) are documented, not re-validated."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from catalog_service.ids import ID_PATTERN
from catalog_service.jobs import status as job_status
from catalog_service.jobs.campaign import (
    Backend,
    CampaignDefinition,
    NotifyPolicy,
    ProcessSpec,
    RetryPolicy,
)
from catalog_service.jobs.changes import Change

MAX_TILES_PER_REQUEST = 100_000
WORKER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$"


def _known_status(status: str) -> str:
    if status not in job_status.ALL:
        raise PydanticCustomError("unknown_status", "unknown status {status}", {"status": status})
    return status


JobStatus = Annotated[
    str,
    AfterValidator(_known_status),
    Field(json_schema_extra={"enum": sorted(job_status.ALL)}),
]
"""A tile job's status (``jobs.status.ALL``)."""


class ChangesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str = Field(default="anonymous", max_length=200)
    changes: list[Change] = Field(min_length=1, max_length=100_000)
    worker: str | None = Field(
        default=None,
        pattern=WORKER_PATTERN,
        description="The runner worker making the changes: tiles another live worker "
        "holds are refused, the others become this worker's.",
    )
    partial: bool = Field(
        default=False,
        description="Apply the changes that obey the rules and report the others as "
        "conflicts (instead of refusing the whole request).",
    )


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_s: float = Field(default=300, gt=0, le=86_400)
    info: dict[str, Any] | None = None


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statuses: list[JobStatus] = Field(min_length=1)
    limit: int = Field(default=1000, ge=1, le=100_000)
    lease_s: float = Field(default=300, gt=0, le=86_400)
    tiles: list[str] | None = Field(
        default=None, max_length=100_000, description="Only these tiles (a pilot run)."
    )


class ResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statuses: list[str] = Field(default_factory=lambda: sorted(job_status.FAILED), min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    actor: str = Field(default="anonymous", max_length=200)
    tiles: list[str] | None = Field(default=None, description="Only these tiles.")
    below_attempts: int | None = Field(
        default=None, ge=1, description="Only tiles with fewer attempts than this."
    )
    reason: str | None = Field(
        default=None,
        max_length=500,
        # One printable line: it is shown in every reader's history of the tiles.
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Why, as each tile's history records it (one line, no control characters).",
    )


class TileIn(BaseModel):
    """A tile to register (documentation: registrations are checked by hand, fast)."""

    id: str = Field(pattern=ID_PATTERN)
    geometry: dict[str, Any] = Field(description="GeoJSON geometry in WGS84")
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)
    properties: dict[str, Any] = Field(default_factory=dict)


class TilesIn(BaseModel):
    tiles: list[TileIn] = Field(max_length=MAX_TILES_PER_REQUEST)


class CampaignPatch(BaseModel):
    """What may change in a campaign once it has tiles (not its id, grid, area or time
    range: its tiles were made from them)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    description: str | None = None
    visibility: Literal["public", "private"] | None = None
    owners: list[str] | None = None
    backends: list[Backend] | None = None
    process: ProcessSpec | None = None
    job_options: dict[str, Any] | None = None
    retry: RetryPolicy | None = None
    order_by: str | None = None
    budget: float | None = Field(default=None, gt=0, description="Credits the campaign may spend")
    pilot_tiles: list[str] | None = Field(default=None, max_length=10_000)
    notify: NotifyPolicy | None = None


# Answers


class Link(BaseModel):
    rel: str
    href: str
    type: str | None = None


class CampaignOut(CampaignDefinition):
    """A campaign's definition with links to its collection, jobs and summary."""

    links: list[Link]


class CampaignsOut(BaseModel):
    campaigns: list[CampaignOut]


class TilesRegistered(BaseModel):
    received: int = Field(description="Tiles in the request")
    registered: int = Field(description="Tiles new to the campaign, now not_started")
    existing: int = Field(description="Tiles the campaign had already (left unchanged)")


class Job(BaseModel):
    tile: str
    properties: dict[str, Any] = Field(description="The tile item's properties")


class JobsOut(BaseModel):
    jobs: list[Job]


class ConflictOut(BaseModel):
    tile: str
    current: str
    requested: str
    reason: str


class ChangesOut(BaseModel):
    applied: list[dict[str, Any]] = Field(description="The changes applied, with revisions")
    stale: list[str] = Field(description="Tiles whose expected revision was outdated")
    conflicts: list[ConflictOut] = Field(description="Changes refused (partial requests)")


class CountsOut(BaseModel):
    counts: dict[str, int] = Field(description="Tiles per status")


class Worker(BaseModel):
    worker: str
    info: dict[str, Any]
    started: str
    seen: str
    lease_until: str


class WorkersOut(BaseModel):
    workers: list[Worker]


class HeartbeatOut(BaseModel):
    worker: str
    lease_s: float


class LeaveOut(BaseModel):
    worker: str
    left: bool = Field(description="Whether the worker held a lease")


class Transition(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: str
    from_: str | None = Field(alias="from")
    to: str
    by: str
    details: dict[str, Any]


class HistoryOut(BaseModel):
    campaign: str
    tile: str
    history: list[Transition]


class ResetOut(BaseModel):
    reset: int = Field(description="Tiles reset")
    statuses: list[str]


class FinishedFigures(BaseModel):
    count: int
    mean_runtime_s: float | None
    mean_costs: float | None
    costs: float | None


class BudgetFigures(BaseModel):
    credits: float | None = Field(description="The campaign's budget (None: no budget)")
    spent: float = Field(description="Credits the back-ends reported for every job so far")
    active_jobs: int
    projected_active: float | None = Field(
        description="Active jobs x the mean cost of a finished tile"
    )
    committed: float = Field(description="spent + projected_active")
    reached: bool = Field(description="No new job may start: one more would exceed the budget")


class SummaryOut(BaseModel):
    """Progress and projections (more figures may be added)."""

    model_config = ConfigDict(extra="allow")

    campaign: str
    tiles: int
    by_status: dict[str, int]
    by_backend: dict[str, dict[str, int]]
    done: int
    remaining: int
    progress: float | None
    finished: FinishedFigures
    throughput_per_hour: float | None
    eta_s: float | None
    eta_by_parallelism_s: float | None
    parallel_jobs: int
    projected_costs: float | None
    first_start: str | None
    budget: BudgetFigures
    workers: list[Worker]
