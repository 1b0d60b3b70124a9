"""A back-end's answers about its jobs, parsed strictly at the edge.

Everything a back-end says is untrusted input: a status outside openEO's list, costs
as a string, negative or 1e308, ``usage`` as a list or a job id with ``../`` would
otherwise reach the budget guard, the catalogue and URLs. What does not parse is a
``BadAnswer``: it fails that tile with a short reason (``inert``) and never the run.
Answers that are not even JSON, 5xx and timeouts are faults of the back-end instead
(see ``fault_reason``): they count towards marking it unhealthy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import requests
from openeo.rest import OpenEoApiError, OpenEoClientException
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from catalog_service.egress import EgressRefused
from catalog_service.ids import job_id_problem
from catalog_service.remote_text import inert

# A job's credits: above this, an answer is not a price but garbage (a 20 km tile costs
# ~100 credits; the whole EU27 crop map ~1.1 million).
MAX_JOB_COSTS = 1e9
MAX_USAGE_METRICS = 50
# The usage metrics openEO defines, and those the geopyspark back-ends (CDSE, VITO) add,
# kept as the tile's properties (planning reads max_executor_memory); a back-end's other
# keys are dropped: `attempts`, `status`, `start_time` or `only_backends` would
# overwrite the tile's own properties.
USAGE_KEYS = (
    "cpu",
    "memory",
    "duration",
    "network",
    "disk",
    "storage",
    "max_executor_memory",
    "input_pixel",
    "network_received",
    "sentinelhub",
)
OPENEO_STATUSES = ("created", "queued", "running", "finished", "error", "canceled")

Number = Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]
ShortText = Annotated[str, Field(max_length=200)]


class BadAnswer(Exception):
    """A back-end's answer about a job that does not parse; the message is inert."""


class UsageMetric(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value: Annotated[Number, Field(ge=0, le=1e18)]
    unit: ShortText = ""


class JobDescription(BaseModel):
    """``GET /jobs/{id}``: the fields the runner uses, all checked."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    status: Literal["created", "queued", "running", "finished", "error", "canceled"]
    costs: Annotated[Number, Field(ge=0, le=MAX_JOB_COSTS)] | None = None
    usage: Annotated[dict[ShortText, UsageMetric], Field(max_length=MAX_USAGE_METRICS)] = {}
    progress: Annotated[Number, Field(ge=0, le=100)] | None = None

    def usage_texts(self) -> dict[str, str]:
        """openEO's usage metrics as the job item's properties keep them:
        ``"40668 cpu-seconds"``; other keys are dropped (see USAGE_KEYS)."""
        return {
            k: inert(f"{m.value:g} {m.unit}", 100) for k, m in self.usage.items() if k in USAGE_KEYS
        }


class ListedJob(BaseModel):
    """One entry of ``GET /jobs``, as reconciliation reads it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: ShortText = ""
    title: Annotated[str, Field(max_length=1000)] | None = None
    created: ShortText | None = None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "the answer"
    # Not the value: it may be another host's answer a redirect led to.
    return inert(f"{where}: {error['msg']}", 300)


def checked_job_id(value: Any) -> str:
    problem = job_id_problem(value)
    if problem:
        raise BadAnswer(inert(problem, 300))
    return str(value)


def job_description(raw: Any, job_id: str) -> JobDescription:
    """``raw`` (a parsed describe answer) as a JobDescription, or BadAnswer."""
    if not isinstance(raw, dict):
        raise BadAnswer(f"the description of job {job_id} is a {type(raw).__name__}, not an object")
    for key in ("costs", "progress"):
        value = raw.get(key)
        # JSON integers have no bound: 10**400 cannot even be compared with a float.
        if isinstance(value, int) and abs(value) > 10**18:
            raise BadAnswer(
                f"the description of job {job_id} is invalid: {key}: a number of "
                f"{len(str(abs(value)))} digits"
            )
    try:
        described = JobDescription.model_validate(raw)
    except ValidationError as exc:
        raise BadAnswer(
            f"the description of job {job_id} is invalid: {_first_error(exc)}"
        ) from None
    except (OverflowError, ValueError) as exc:  # pydantic comparing 10**400 with a bound
        raise BadAnswer(f"the description of job {job_id} is invalid: {inert(exc, 300)}") from None
    if described.id is not None and described.id != job_id:
        raise BadAnswer(inert(f"asked for job {job_id}, the back-end described {described.id}"))
    return described


def listed_jobs(raw: Any) -> list[ListedJob]:
    """A job listing's entries; entries that do not parse are left out (a listing is
    read to find one tile's job, whose id must then be valid)."""
    if not isinstance(raw, list):
        raise BadAnswer(f"the job listing is a {type(raw).__name__}, not a list")
    jobs = []
    for entry in raw:
        try:
            job = ListedJob.model_validate(entry)
        except ValidationError:
            continue
        if job_id_problem(job.id) is None:
            jobs.append(job)
    return jobs


def fault_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is the back-end's fault (unreachable, 5xx, garbage, too slow or too
    large), inert; None when it is not (a 4xx about one job, a bug of ours)."""
    if isinstance(exc, OpenEoApiError):
        if exc.http_status_code is not None and exc.http_status_code < 500:
            return None
        return inert(f"{exc.http_status_code} {exc.code}: {exc.message}", 300)
    if isinstance(exc, EgressRefused | requests.RequestException | OpenEoClientException):
        return inert(f"{type(exc).__name__}: {exc}", 300)
    if isinstance(exc, ValueError):  # an answer that is not JSON (json's own error)
        return inert(f"an answer that is not valid JSON ({exc})", 300)
    return None
