"""A campaign: the definition of a tiled openEO production, stored in its STAC collection,
and the rules that turn tiles into job items."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from catalog_service import geojson_check
from catalog_service.egress import check_shape
from catalog_service.ids import ID_PATTERN
from catalog_service.jobs import status

CAMPAIGN_KEY = "tilekeeper:campaign"
ORDER_KEY = "tilekeeper:order"
REVISION_KEY = "tilekeeper:revision"
# The runner worker that holds the tile (see jobs/workers.py).
WORKER_KEY = "tilekeeper:worker"
# Properties the job store maintains; a change may not set them directly.
MANAGED_KEYS = frozenset({"status", "datetime", "start_datetime", "end_datetime", "updated"})
MANAGED_PREFIX = "tilekeeper:"
# The tile's openEO job id (MBJM's frame column ``id``). Not ``id``: that is the item's own
# id to GIS clients (OGR/QGIS showed the job id as the feature's and lost the tile) and
# stac-geoparquet dropped it. No official STAC extension names it; the openEO prefix says
# whose id it is.
JOB_ID_KEY = "openeo:job_id"
# Why a finished tile runs again: its harvest's product error and its history's reset.
RESULTS_EXPIRED = "results expired on the back-end before they were harvested"
# The extent of a campaign created without an AOI until its first tiles (STAC requires
# one): registration replaces it with the tiles' (jobs/registration.py _grow_extent).
NO_AREA_YET = (-180.0, -90.0, 180.0, 90.0)
# Names a tile's properties may not have: ``id`` would hide the tile's id (see above).
RESERVED_KEYS = frozenset({"id"})
# Credits of a tile's earlier attempts: a reset clears ``costs`` (the attempt's) and adds
# them here, so the campaign's spent figure (and its budget) keeps every attempt's.
EARLIER_COSTS_KEY = MANAGED_PREFIX + "earlier_costs"
# What a reset (retry) clears: the previous attempt's job, not the tile's history.
ATTEMPT_KEYS = (
    JOB_ID_KEY,
    "backend_name",
    "start_time",
    "running_start_time",
    "finish_time",
    "costs",
)


# Validation context of a definition read back from the catalogue: URLs stored before
# today's egress rules still load (listings must not fail on them); they are checked again
# whenever they are fetched.
STORED = {"stored": True}


def stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


class Backend(BaseModel):
    """An openEO back-end of a campaign. ``auth`` says how the runner logs in; the
    credentials themselves stay where openEO users keep them (the openEO client's
    refresh-token store and auth config, or OPENEO_AUTH_* variables), never here."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    url: str
    parallel_jobs: int = Field(default=2, ge=1, le=1000)
    auth: Literal["oidc", "basic", "none"] = "oidc"

    @field_validator("url")
    @classmethod
    def _fetchable(cls, value: str, info: ValidationInfo) -> str:
        # The rest of the egress policy: where it is stored, and again when fetched.
        return value if stored(info) else check_shape(value)


class ProcessSpec(BaseModel):
    """The process each tile job runs: a UDP (by URL namespace or user-defined process id)
    with constant parameters; per-tile parameters come from tile properties of the same
    name, or as ``parameter_map`` says (process parameter -> tile property)."""

    model_config = ConfigDict(extra="forbid")

    process_id: str
    namespace: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("namespace")
    @classmethod
    def _fetchable(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A URL namespace is fetched (the fitness check); a back-end's namespace is a name.
        if value and "://" in value and not stored(info):
            return check_shape(value)
        return value


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1)
    # Job options merged over the campaign's on a retry (e.g. more executor memory).
    escalation: dict[str, Any] = Field(default_factory=dict)


class NotifyPolicy(BaseModel):
    """Where and when the runner tells about a campaign: webhooks (JSON POSTs) on the
    campaign finished, a failure rate over ``failure_rate`` among the tiles over in the
    last ``failure_window_s`` (at least ``min_failures``), the budget reached, a back-end
    unreachable for longer than ``unreachable_s``."""

    model_config = ConfigDict(extra="forbid")

    webhooks: list[str] = Field(default_factory=list, max_length=10)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    failure_window_s: float = Field(default=3600, gt=0)
    min_failures: int = Field(default=3, ge=1)
    unreachable_s: float = Field(default=900, gt=0)

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return value if stored(info) else [check_shape(url) for url in value]


class CampaignDefinition(BaseModel):
    """Everything needed to (re)run a campaign, stored in its collection."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    title: str | None = None
    description: str | None = None
    grid: str | None = None
    aoi: dict[str, Any] | None = None
    temporal_extent: tuple[date, date] | None = None
    process: ProcessSpec | None = None
    backends: list[Backend] = Field(default_factory=list)
    job_options: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    order_by: str | None = None
    budget: float | None = Field(
        default=None,
        gt=0,
        description="Credits the campaign may spend: the runner starts no job that would "
        "take the credits spent plus the projected cost of the active jobs over it",
    )
    notify: NotifyPolicy = Field(default_factory=NotifyPolicy)
    pilot_tiles: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="The tiles of the pilot run (`tilekeeper campaign pilot`), whose "
        "runtimes and costs `tilekeeper campaign plan` projects from",
    )
    visibility: Literal["public", "private"] = Field(
        default="public",
        description="private: the campaign and its products exist only for its owners and "
        "admin keys (404 to everybody else, on every read path)",
    )
    owners: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Identities (`key:NAME`, `oidc:SUBJECT`) that see a private campaign; "
        "its creator is added.",
    )
    created: datetime = Field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @field_validator("backends")
    @classmethod
    def _unique_backends(cls, value: list[Backend]) -> list[Backend]:
        names = [b.name for b in value]
        if len(set(names)) != len(names):
            raise ValueError("back-end names must be unique")
        return value

    @field_validator("aoi")
    @classmethod
    def _storable_aoi(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            reason = geojson_check.problem(value)
            if reason:
                raise ValueError(
                    f"{reason} (the CLI repairs areas it reads from files with make_valid)"
                )
        return value

    @model_validator(mode="after")
    def _ordered_extent(self) -> CampaignDefinition:
        if self.temporal_extent and self.temporal_extent[0] > self.temporal_extent[1]:
            raise ValueError("temporal_extent must be [start, end] with start <= end")
        return self

    def fetched_urls(self) -> list[tuple[str, str]]:
        """(what, URL) of everything the runner fetches, for the egress policy."""
        urls = [(f"back-end {b.name}", b.url) for b in self.backends]
        urls += [(f"webhook {n}", url) for n, url in enumerate(self.notify.webhooks, 1)]
        if self.process and self.process.namespace and "://" in self.process.namespace:
            urls.append(("process namespace", self.process.namespace))
        return urls

    @property
    def job_datetime(self) -> str:
        """The one datetime every job item of the campaign carries.

        Fixed per campaign so later writes never widen pgstac's partition constraint
        (whose rebuild under concurrent writes deadlocks or fails, pgstac#211/#285)."""
        if self.temporal_extent:
            return f"{self.temporal_extent[0].isoformat()}T00:00:00Z"
        return self.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def job_interval(self) -> tuple[str, str]:
        if self.temporal_extent:
            return self.job_datetime, f"{self.temporal_extent[1].isoformat()}T23:59:59Z"
        return self.job_datetime, self.job_datetime

    def to_collection(self, bbox: list[float] | None = None) -> dict[str, Any]:
        start, end = self.job_interval()
        return {
            "type": "Collection",
            "stac_version": "1.1.0",
            "id": self.id,
            "title": self.title or f"Campaign {self.id}",
            "description": self.description
            or f"Tile jobs of the openEO production campaign {self.id}, tracked by tilekeeper.",
            "license": "other",
            "keywords": ["openEO", "campaign", "tilekeeper"],
            "extent": {
                "spatial": {"bbox": [bbox or list(NO_AREA_YET)]},
                "temporal": {"interval": [[start, end]]},
            },
            "summaries": {"status": sorted(status.ALL)},
            "links": [],
            CAMPAIGN_KEY: self.model_dump(mode="json", exclude_none=True),
        }

    @classmethod
    def from_collection(cls, collection: dict[str, Any]) -> CampaignDefinition | None:
        raw = collection.get(CAMPAIGN_KEY)
        return cls.model_validate(raw) if isinstance(raw, dict) else None


def reserved_message(tile_id: str, names: AbstractSet[str]) -> str:
    return (
        f"tile {tile_id}: a tile's property may not be named {', '.join(sorted(names))} "
        f"(the item's id is the tile's; the openEO job id is {JOB_ID_KEY})"
    )


def job_properties(
    definition: CampaignDefinition, tile_id: str, properties: dict[str, Any], order: int
) -> dict[str, Any]:
    """A new tile job's properties: status not_started (or the one given), the
    campaign's fixed datetime and a processing order number (the stable integer index
    the job database pages and addresses by)."""
    start, end = definition.job_interval()
    given = properties.get("status") or status.NOT_STARTED
    if given not in status.ALL:
        raise ValueError(f"tile {tile_id}: unknown status {given!r}")
    if reserved := RESERVED_KEYS.intersection(properties):
        raise ValueError(reserved_message(tile_id, reserved))
    props = {
        k: v
        for k, v in properties.items()
        if v is not None and k not in MANAGED_KEYS and not k.startswith(MANAGED_PREFIX)
    }
    props.update(
        {
            "datetime": start,
            "start_datetime": start,
            "end_datetime": end,
            "status": given,
            "attempts": int(props.get("attempts") or 0),
            ORDER_KEY: order,
            REVISION_KEY: 0,
        }
    )
    return props


# The STAC extensions whose fields job items carry (the grids' tile properties), by field
# prefix, at the versions whose schemas ship in ingest/schemas (offline validation):
# proj:code is projection v2; grid:code's pattern is grid v1.1.
EXTENSIONS_BY_PREFIX: dict[str, str] = {
    "proj:": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "grid:": "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "mgrs:": "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
}


@lru_cache(maxsize=1024)
def _extensions_of(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        url
        for prefix, url in EXTENSIONS_BY_PREFIX.items()
        if any(key.startswith(prefix) for key in keys)
    )


def job_extensions(properties: dict[str, Any], declared: list[str] | None = None) -> list[str]:
    """``declared`` (kept, in order) plus the extensions whose fields ``properties`` use.
    (Cached by the properties' names: a campaign's tiles share a handful of key sets.)"""
    used = _extensions_of(tuple(properties))
    if not declared:
        return list(used)
    return [*declared, *(url for url in used if url not in declared)]


# The parts of a job item that are the same for every tile.
JOB_ITEM_TEMPLATE: dict[str, Any] = {
    "type": "Feature",
    "stac_version": "1.1.0",
    "stac_extensions": [],
    "links": [],
    "assets": {},
}


def job_item(
    definition: CampaignDefinition,
    tile_id: str,
    geometry: dict[str, Any],
    bbox: list[float],
    properties: dict[str, Any],
    order: int,
) -> dict[str, Any]:
    """A new tile job as a STAC item, declaring the extensions its fields belong to."""
    props = job_properties(definition, tile_id, properties, order)
    return {
        **JOB_ITEM_TEMPLATE,
        "stac_extensions": job_extensions(props),
        "id": tile_id,
        "collection": definition.id,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
    }
