"""The runner and the harvest against hostile openEO back-ends (issue 22).

Each scenario of tests/hostile_backend.py is one campaign of four tiles on two back-ends:
two tiles pinned to ``good``, two to the hostile one. The run must return (never raise
or hang because of a back-end's answer), the good tiles must finish and be harvested,
and the hostile tiles must end as the issue's "Build" says: their job or their harvest
failed with a short, clear reason, or the hostility absorbed. Whatever the outcome, no
error text holds a response body, no temporary file stays behind, disk, memory and
streamed bytes stay within the limits set here, and no credential reaches another host.

The limits are made small through the runner's and the harvest's settings, so that
every scenario takes seconds; the run's wall time is bounded only as a hang guard.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import rasterio
from hostile_backend import (
    FLAKY_FAILS,
    SCENARIOS,
    SENTINEL,
    HostileBackend,
    describe_tiff,
    raster_for,
)
from openeo.rest.auth.config import AuthConfig
from rich.console import Console
from rich.logging import RichHandler
from rio_cogeo.cogeo import cog_validate
from support.database import auth_headers

import catalog_service.campaign_run as manager_module
from catalog_service.campaign_run import run_campaign
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.ids import campaign_products_id
from catalog_service.jobs import status
from catalog_service.settings import ProductSettings

MIB = 1 << 20
AOI = "4.0,50.5,4.3,50.7"  # four utm-20km tiles in Belgium
# The limits of a run (the runner's and the harvest's settings).
LIMITS = {
    "TILEKEEPER_RUNNER_CONNECT_TIMEOUT_S": "1",
    "TILEKEEPER_RUNNER_REQUEST_TIMEOUT_S": "2",
    "TILEKEEPER_RUNNER_MAX_ANSWER_BYTES": str(1 * MIB),
    "TILEKEEPER_RUNNER_UNHEALTHY_AFTER": "2",
    "TILEKEEPER_RUNNER_BACKOFF_MAX_S": "2",
    "TILEKEEPER_RUNNER_SILENT_JOB_TIMEOUT_S": "6",
    "TILEKEEPER_HARVEST_WORKERS": "2",
    "TILEKEEPER_HARVEST_MAX_FILE_BYTES": str(4 * MIB),
    "TILEKEEPER_HARVEST_MAX_RASTER_BYTES": str(16 * MIB),
    "TILEKEEPER_HARVEST_DEADLINE_S": "10",
    "TILEKEEPER_HARVEST_MIN_RATE_BYTES_S": str(64 * 1024),
    "TILEKEEPER_HARVEST_RATE_WINDOW_S": "3",
    # Two tries within the run (and two more when it ends), moments apart.
    "TILEKEEPER_HARVEST_RETRY_TRIES": "2",
    "TILEKEEPER_HARVEST_RETRY_FIRST_S": "0.05",
    "TILEKEEPER_HARVEST_RETRY_MAX_S": "0.2",
}
# What a run may add under those limits: a few files at the size cap, the good products.
DISK_BOUND = 3 * 4 * MIB + 8 * MIB  # what the run's temporary and store folders gain
MEMORY_BOUND = 512 * MIB  # resident memory gained, at peak
# Bytes of a stream that got out of the server (whose send buffer is small), beyond the
# client's limit: what the client's receive buffer took before it stopped reading
# (Linux grows it while a client reads fast; under 1 MiB seen).
STREAM_SLACK = 12 * MIB
STREAM_BOUNDS = {"endless": 4 * MIB + STREAM_SLACK, "logs": 1 * MIB + STREAM_SLACK}
MAX_ERROR_CHARS = 2000  # what the API stores of an error text
HANG_GUARD_S = 90.0  # a hang guard only: a scenario takes seconds
# Where the campaign's products may lie (the tiles, with room).
AREA = (3.0, 49.5, 5.5, 51.5)


@dataclass(frozen=True)
class Expect:
    """How the hostile back-end's tiles end. ``ends``: "failed" (the tile's job failed)
    or "harvest failed" (the job finished, its harvest failed); ``reason``: what the
    error says (a regular expression, case-insensitive); ``absorbed``: finishing with
    an ingested product is right too."""

    ends: str
    reason: str
    absorbed: bool = False


ANSWER = r"no progress|invalid|not an object"
EXPECTED: dict[str, Expect] = {
    "describe-not-json": Expect("failed", ANSWER),
    "describe-503": Expect("failed", ANSWER + r"|503|unavailable"),
    "describe-500": Expect("failed", ANSWER + r"|500|server error"),
    "describe-list": Expect("failed", ANSWER + r"|object|list"),
    "describe-hangs": Expect("failed", ANSWER),
    "usage-list": Expect("failed", r"usage", absorbed=True),
    "status-unknown": Expect("failed", r"status|exploded"),
    "costs-huge": Expect("failed", r"costs: a number of \d+ digits"),
    "costs-string": Expect("failed", r"cost"),
    "costs-negative": Expect("failed", r"cost"),
    "start-500": Expect("failed", r"start|500|server error"),
    "job-id-traversal": Expect("failed", r"\bid\b|identifier"),
    # The job's own error message, truncated.
    "error-log-64k": Expect("failed", r"E{16}"),
    "error-log-20m": Expect("failed", r"E{16}|log|error"),
    "results-500": Expect("harvest failed", r"500|results|server error|unavailable"),
    # Tried again within the run: a product in the end.
    "file-flaky": Expect("harvest failed", r"503", absorbed=True),
    "file-truncated": Expect("harvest failed", r"truncated", absorbed=True),
    # With a single attempt allowed, the tile cannot run again.
    "results-expire-first": Expect("harvest failed", r"expired"),
    "results-expired": Expect("harvest failed", r"expired"),
    "stream-endless": Expect("harvest failed", r"limit|large|size|bytes|exceed"),
    "stream-slow": Expect("harvest failed", r"slow|rate|deadline|time"),
    "href-metadata": Expect("harvest failed", r"refus|not allowed|forbidden|link-local|metadata"),
    "href-api": Expect("harvest failed", r"."),
    "href-foreign": Expect("harvest failed", r"refus|origin|host", absorbed=True),
    "redirect-foreign": Expect("harvest failed", r"refus|origin|host|redirect", absorbed=True),
    "bands-10000": Expect("harvest failed", r"band|limit|large|size|pixel|bytes"),
    "sparse-huge": Expect("harvest failed", r"limit|large|size|pixel|bytes"),
    "forged-cog-huge": Expect("harvest failed", r"limit|large|size|pixel|bytes|overview|cog"),
    "forged-cog": Expect("harvest failed", r"cog|overview|valid", absorbed=True),
    "footprint-far": Expect("harvest failed", r"footprint|outside|beyond|extent"),
    "crs-other": Expect("harvest failed", r"crs|epsg|projection"),
}


def test_every_scenario_has_an_expectation() -> None:
    assert set(EXPECTED) == set(SCENARIOS) - {"good"}


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(api: str) -> Iterator[HostileBackend]:
    backend = HostileBackend(api)
    with backend.running():
        config = AuthConfig()  # the tests' own (conftest's OPENEO_CONFIG_HOME)
        for name in SCENARIOS:
            config.set_basic_auth(backend.url(name), *backend.credentials(name))
        yield backend


@pytest.fixture()
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LIMITS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture()
def rich_logs() -> Iterator[None]:
    """The runner's log as `tilekeeper campaign run` writes it: through rich, whose
    highlighter is what remote text can freeze."""
    handler = RichHandler(
        console=Console(file=io.StringIO(), width=120), show_path=False, rich_tracebacks=False
    )
    root = logging.getLogger()
    quiet = [logging.getLogger(n) for n in ("urllib3", "openeo")]
    saved = root.level, [q.level for q in quiet]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    yield
    root.removeHandler(handler)
    root.setLevel(saved[0])
    for logger, level in zip(quiet, saved[1], strict=True):
        logger.setLevel(level)


# -- a run ----------------------------------------------------------------------------


def _disk_usage(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # removed while counted
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Peaks of what a run adds: the bytes in its folders (not the file system's free
    space: other processes on the machine write too) and the process's resident memory."""

    def __init__(self, folders: list[Path]) -> None:
        super().__init__(name="hostile-sampler", daemon=True)
        self.folders = folders
        self.stop = threading.Event()
        self.base_disk = self._disk()
        self.base_rss = _rss()
        self.disk = self.memory = 0

    def _disk(self) -> int:
        return sum(_disk_usage(f) for f in self.folders)

    def sample(self) -> None:
        self.disk = max(self.disk, self._disk() - self.base_disk)
        self.memory = max(self.memory, _rss() - self.base_rss)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.sample()

    def finish(self) -> None:
        self.stop.set()
        self.join(5)
        self.sample()


@dataclass
class Run:
    campaign: str
    good: list[str]
    bad: list[str]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    raised: BaseException | None = None
    hung: bool = False
    seconds: float = 0.0
    disk: int = 0
    memory: int = 0
    left_in_tmp: list[str] = field(default_factory=list)
    left_in_staging: list[str] = field(default_factory=list)


def store_dir() -> Path:
    local = ProductSettings().local_dir()
    assert local is not None, "the tests' product store is a local folder"
    return local


def create_campaign(
    api: str, hostile: HostileBackend, scenario: str | None, max_attempts: int = 1
) -> Run:
    """Four tiles: on ``good`` only, or two pinned to ``good`` and two to ``scenario``."""
    campaign = f"hostile-{uuid.uuid4().hex[:8]}"
    names = ["good"] + ([scenario] if scenario else [])
    backends = [
        {"name": "good" if n == "good" else "bad", "url": hostile.url(n), "parallel_jobs": 2,
         "auth": "basic"}
        for n in names
    ]  # fmt: skip
    campaigns = Campaigns(HttpSession(api))
    campaigns.create(
        {
            "id": campaign,
            "grid": "utm-20km",
            "temporal_extent": ["2024-03-01", "2024-09-30"],
            "process": {"process_id": "tile_udp", "namespace": hostile.udp_url},
            "backends": backends,
            "retry": {"max_attempts": max_attempts},
        }
    )
    records = list(tile_records(tiles_for("utm-20km", load_aoi(AOI))))
    assert len(records) == 4
    for n, record in enumerate(records):
        record["properties"]["only_backends"] = ["good"] if n < 2 or not scenario else ["bad"]
    campaigns.register(campaign, records)
    ids = [r["id"] for r in records]
    return Run(campaign, ids[:2] if scenario else ids, ids[2:] if scenario else [])


def run_guarded(
    api: str,
    hostile: HostileBackend,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    """``run_campaign`` in a thread, measured; past the hang guard the manager is told
    to stop and the server ends its hanging answers."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # where the run's temporary files go
    staging = store_dir() / ".staging"
    staged_before = set(os.listdir(staging)) if staging.is_dir() else set()
    managers: list[Any] = []
    build = manager_module.build_manager

    def capture(*args: Any, **kwargs: Any) -> Any:
        manager = build(*args, **kwargs)
        managers.append(manager)
        return manager

    monkeypatch.setattr(manager_module, "build_manager", capture)
    # The store's folders this run may write to: its staging folder and its products'.
    products = store_dir() / campaign_products_id(run.campaign)
    sampler = Sampler([tmp, staging, products])
    sampler.start()

    def work() -> None:
        try:
            run_campaign(api, run.campaign, poll_sleep=0.2, harvest=True)
        except BaseException as exc:  # reported by the test
            run.raised = exc

    started = time.monotonic()
    thread = threading.Thread(target=work, name="hostile-run", daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    if thread.is_alive():
        run.hung = True
        for manager in managers:
            manager.stop()
        hostile.release()
        thread.join(30)
    run.seconds = time.monotonic() - started
    sampler.finish()
    run.disk, run.memory = sampler.disk, sampler.memory
    run.left_in_tmp = left_behind(tmp)
    staged_after = set(os.listdir(staging)) if staging.is_dir() else set()
    run.left_in_staging = sorted(staged_after - staged_before)
    run.jobs = {tile: job_properties(api, run.campaign, tile) for tile in run.good + run.bad}
    return run


def left_behind(tmp: Path) -> list[str]:
    """Files, and folders within folders, under ``tmp``: a first-level folder that is
    empty may be a shared parent (one per user), not a run's leftover."""
    left = []
    for path in sorted(tmp.rglob("*")):
        depth = len(path.relative_to(tmp).parts)
        if not path.is_dir() or depth > 1 or any(path.iterdir()):
            left.append(str(path.relative_to(tmp)))
    return left


def job_properties(api: str, campaign: str, tile: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{api}/collections/{campaign}/items/{tile}", headers=auth_headers(), timeout=30
    )
    assert answer.status_code == 200, answer.text
    properties: dict[str, Any] = answer.json()["properties"]
    return properties


def product(properties: dict[str, Any]) -> dict[str, Any]:
    value = properties.get("tilekeeper:product")
    return value if isinstance(value, dict) else {}


def error_texts(properties: dict[str, Any]) -> list[str]:
    texts = [properties.get("last_error"), product(properties).get("error")]
    for entry in properties.get("errors") or []:
        if isinstance(entry, dict):
            texts.append(entry.get("message"))
    return [str(t) for t in texts if t]


def tile_error(properties: dict[str, Any]) -> str:
    """The tile's own error (its job's, else its harvest's)."""
    errors = [e for e in properties.get("errors") or [] if isinstance(e, dict)]
    return str(
        properties.get("last_error")
        or (errors[-1].get("message") if errors else "")
        or product(properties).get("error")
        or ""
    )


def stored_path(href: str) -> Path:
    return store_dir() / unquote(href.split("/products/files/", 1)[1])


def _show(text: str) -> str:
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} chars)"


# -- what every run must hold ---------------------------------------------------------


def check_run(api: str, hostile: HostileBackend, run: Run) -> list[str]:
    """What holds whatever the hostile back-end did; the list of what did not."""
    problems: list[str] = []
    if run.hung:
        problems.append(f"the run did not end within the hang guard ({HANG_GUARD_S:.0f} s)")
    if run.raised is not None:
        problems.append(f"the run raised {type(run.raised).__name__}: {_show(str(run.raised))}")
    for tile in run.good:
        props = run.jobs[tile]
        state = product(props).get("state")
        if props.get("status") != status.FINISHED or state != "ingested":
            problems.append(
                f"good tile {tile}: {props.get('status')}, product {state} "
                f"({_show(tile_error(props))})"
            )
    for tile, props in run.jobs.items():
        for text in error_texts(props):
            if len(text) > MAX_ERROR_CHARS:
                problems.append(f"tile {tile}: an error text of {len(text)} chars")
            if SENTINEL in text:
                problems.append(f"tile {tile}: an error text holds a response body")
        costs = props.get("costs")
        if costs is not None and not (
            isinstance(costs, int | float) and math.isfinite(costs) and costs >= 0
        ):
            problems.append(f"tile {tile}: costs {_show(repr(costs))} stored")
    if run.left_in_tmp:
        problems.append(f"temporary files left behind: {run.left_in_tmp[:5]}")
    if run.left_in_staging:
        problems.append(f"staging files left behind: {run.left_in_staging[:5]}")
    if run.disk > DISK_BOUND:
        problems.append(f"the run's folders grew by {run.disk / MIB:.0f} MiB")
    if run.memory > MEMORY_BOUND:
        problems.append(f"resident memory grew by {run.memory / MIB:.0f} MiB")
    for (what, job), sent in hostile.streamed.items():
        if what in STREAM_BOUNDS and sent > STREAM_BOUNDS[what]:
            problems.append(f"{sent / MIB:.0f} MiB of job {job}'s {what} stream were read")
    for leak in hostile.leaked_credentials():
        problems.append(f"credentials sent to {leak.host} {leak.method} {leak.path}")
    for escaped in hostile.escaped:
        problems.append(f"a request escaped the back-ends' roots: {escaped.method} {escaped.path}")
    problems += check_catalogue(api, run)
    return problems


def check_catalogue(api: str, run: Run) -> list[str]:
    """The campaign's summary answers with sane costs; the products collection's extent
    stays over the tiles; every stored product is a real COG."""
    problems: list[str] = []
    headers = auth_headers()
    summary = httpx.get(f"{api}/campaigns/{run.campaign}/summary", headers=headers, timeout=30)
    if summary.status_code != 200:
        problems.append(f"the campaign's summary answers {summary.status_code}")
    else:
        committed = summary.json()["budget"].get("committed")
        mean = summary.json()["finished"].get("mean_costs")
        for name, value in (("committed", committed), ("mean costs", mean)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                problems.append(f"the campaign's summary says {name} {value}")
    products = campaign_products_id(run.campaign)
    collection = httpx.get(f"{api}/collections/{products}", headers=headers, timeout=30)
    if collection.status_code == 200:
        west, south, east, north = collection.json()["extent"]["spatial"]["bbox"][0]
        if west < AREA[0] or south < AREA[1] or east > AREA[2] or north > AREA[3]:
            problems.append(f"the products' extent grew to {[west, south, east, north]}")
    for tile in run.good + run.bad:
        answer = httpx.get(
            f"{api}/collections/{products}/items/{tile}", headers=headers, timeout=30
        )
        if answer.status_code != 200:
            continue
        for asset in answer.json()["assets"].values():
            if "cloud-optimized" not in str(asset.get("type")):
                continue
            path = stored_path(asset["href"])
            valid, errors, _warnings = cog_validate(str(path), quiet=True)
            with rasterio.open(path) as src:
                bare = max(src.width, src.height) > 512 and not src.overviews(1)
            if not valid or bare:
                problems.append(
                    f"product {tile}: {path.name} stored as a COG but is none "
                    f"({'; '.join(errors) or 'no overviews'})"
                )
    return problems


def check_hostile_tiles(api: str, run: Run, expect: Expect) -> list[str]:
    problems: list[str] = []
    products = campaign_products_id(run.campaign)
    for tile in run.bad:
        props = run.jobs[tile]
        job, harvest = props.get("status"), product(props).get("state")
        error = tile_error(props) if job != status.FINISHED else product(props).get("error")
        if expect.absorbed and job == status.FINISHED and harvest == "ingested":
            continue
        if expect.ends == "failed":
            ok = job in status.FAILED
        else:
            ok = job == status.FINISHED and harvest == "failed"
        if not ok:
            problems.append(
                f"hostile tile {tile}: {job}, product {harvest}, expected {expect.ends} "
                f"({_show(str(error or ''))})"
            )
        elif not re.search(expect.reason, str(error or ""), re.IGNORECASE):
            problems.append(
                f"hostile tile {tile}: its reason {_show(str(error or ''))!r} does not "
                f"match {expect.reason!r}"
            )
        if harvest != "ingested":
            answer = httpx.get(
                f"{api}/collections/{products}/items/{tile}", headers=auth_headers(), timeout=30
            )
            if answer.status_code == 200:
                problems.append(f"hostile tile {tile}: a product was published")
    return problems


def api_bodies_quoted(api: str, hostile: HostileBackend, run: Run) -> list[str]:
    """What tilekeeper's API answered at the hostile asset hrefs (with and without a
    bearer token) must not be in any error text."""
    problems = []
    for tile in run.bad:
        job_id = run.jobs[tile].get("id")
        if not job_id:
            continue
        href = hostile.api_href(str(job_id))
        for headers in ({}, {"Authorization": "Bearer basic//not-a-key"}):
            answer = httpx.get(href, headers=headers, timeout=30)
            assert answer.status_code >= 400, "the href should lead to an error answer"
            body = answer.json()
            quoted = [str(v) for v in body.values() if isinstance(v, str) and len(v) > 12]
            for text in error_texts(run.jobs[tile]):
                if any(q in text for q in quoted):
                    problems.append(f"tile {tile}: its error quotes the API's answer {body}")
    return problems


# Checks of one scenario, beside those of every run.
EXTRA: dict[str, Callable[[str, HostileBackend, Run], list[str]]] = {
    "href-api": api_bodies_quoted,
}


def record_figures(scenario: str, hostile: HostileBackend, run: Run, problems: list[str]) -> None:
    """With TILEKEEPER_HOSTILE_REPORT set, one JSON line per scenario appended to that
    file: the figures a closing note quotes (time, disk, memory, bytes streamed, how the
    hostile tiles ended)."""
    target = os.environ.get("TILEKEEPER_HOSTILE_REPORT")
    if not target:
        return
    figures = {
        "scenario": scenario,
        "seconds": round(run.seconds, 1),
        "disk_mib": round(run.disk / MIB, 1),
        "memory_mib": round(run.memory / MIB, 1),
        "streamed_mib": {
            f"{what} {job}": round(sent / MIB, 1) for (what, job), sent in hostile.streamed.items()
        },
        "hostile_tiles": [
            {
                "status": run.jobs[t].get("status"),
                "product": product(run.jobs[t]).get("state"),
                "error": _show(tile_error(run.jobs[t])),
            }
            for t in run.bad
        ],
        "problems": problems,
    }
    with open(target, "a") as out:
        out.write(json.dumps(figures) + "\n")


# -- the tests ------------------------------------------------------------------------


def test_the_good_backend_alone_finishes_and_harvests(
    api: str,
    hostile: HostileBackend,
    limits: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server itself: a campaign on ``good`` only ends with every tile finished and
    harvested into a COG over its tile."""
    hostile.reset()
    run = run_guarded(api, hostile, create_campaign(api, hostile, None), tmp_path, monkeypatch)
    problems = check_run(api, hostile, run)
    assert not problems, "\n".join(problems)
    assert len(run.good) == 4
    assert all(s.authorization for s in hostile.requests_to("good", "POST", "/jobs"))
    products = campaign_products_id(run.campaign)
    for tile in run.good:
        item = httpx.get(
            f"{api}/collections/{products}/items/{tile}", headers=auth_headers(), timeout=30
        ).json()
        (asset,) = [a for a in item["assets"].values() if "cloud-optimized" in str(a["type"])]
        with rasterio.open(stored_path(asset["href"])) as src:
            props = run.jobs[tile]
            assert f"EPSG:{src.crs.to_epsg()}" == props["proj:code"]
            assert list(src.bounds) == pytest.approx(props["proj:bbox"])


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_a_hostile_backend_fails_only_its_own_tiles(
    scenario: str,
    api: str,
    hostile: HostileBackend,
    limits: None,
    rich_logs: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hostile.reset()
    run = create_campaign(api, hostile, scenario)
    run = run_guarded(api, hostile, run, tmp_path, monkeypatch)
    problems = check_run(api, hostile, run)
    problems += check_hostile_tiles(api, run, EXPECTED[scenario])
    if scenario in EXTRA:
        problems += EXTRA[scenario](api, hostile, run)
    if not hostile.requests_to(scenario, "POST", "/jobs"):
        problems.append(f"the {scenario} back-end was never given a job")
    record_figures(scenario, hostile, run, problems)
    assert not problems, f"{scenario} ({run.seconds:.0f} s):\n" + "\n".join(problems)


# -- the server's files are what they claim -------------------------------------------

EXTENT = {"west": 560000.0, "south": 5580000.0, "east": 580000.0, "north": 5600000.0,
          "crs": 32631}  # fmt: skip


FILES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "cog": lambda d: d["layout"] == "COG" and d["shape"] == (1, 64, 64),
    "bands": lambda d: d["shape"] == (10_000, 128, 128),
    "sparse": lambda d: d["shape"] == (1, 200_000, 200_000) and d["layout"] is None,
    "forged-huge": lambda d: d["layout"] == "COG" and not d["overviews"],
    "forged": lambda d: d["layout"] == "COG" and d["shape"] == (1, 2048, 2048),
    "far": lambda d: d["bounds"][3] == 3_600_000 and d["crs"] == "EPSG:32631",
    "crs": lambda d: d["crs"] == "EPSG:3857",
}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_the_hostile_files_are_what_they_claim(kind: str) -> None:
    data = raster_for(kind, EXTENT)
    described = describe_tiff(data)
    assert FILES[kind](described), described
    assert len(data) < 2 * MIB  # the hostility is in what the file claims, not its size


def test_a_forged_cog_is_no_cog(tmp_path: Path) -> None:
    path = tmp_path / "forged.tif"
    path.write_bytes(raster_for("forged", EXTENT))
    valid, errors, _ = cog_validate(str(path), quiet=True)
    assert not valid and errors, errors  # its header says COG, its layout does not
    with rasterio.open(path) as src:
        assert src.read(1)[5, 7] == (5 + 7) % 251 + 1  # still a readable raster


# -- harvests tried again: within the run, and by running an expired tile again --------


@pytest.fixture()
def run_scenario(
    api: str,
    hostile: HostileBackend,
    limits: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str, int], Run]:
    """Runs a scenario's campaign with ``max_attempts``; every run's checks must hold,
    its hostile tiles are the test's to judge."""

    def run_scenario(scenario: str, max_attempts: int) -> Run:
        hostile.reset()
        run = create_campaign(api, hostile, scenario, max_attempts)
        run = run_guarded(api, hostile, run, tmp_path, monkeypatch)
        problems = check_run(api, hostile, run)
        assert not problems, f"{scenario}:\n" + "\n".join(problems)
        return run

    return run_scenario


def jobs_of(hostile: HostileBackend, run: Run) -> list[str]:
    """The ids of the run's jobs (titled after its campaign) on the hostile back-end."""
    return [
        j.id
        for j in hostile.jobs.values()
        if j.scenario != "good" and j.title.startswith(f"{run.campaign} ")
    ]


def resets(api: str, campaign: str, tile: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{api}/campaigns/{campaign}/jobs/{tile}/history", headers=auth_headers(), timeout=30
    )
    assert answer.status_code == 200, answer.text
    return [h for h in answer.json()["history"] if h["details"].get("reset")]


@pytest.mark.parametrize("scenario", ["file-flaky", "file-truncated"])
def test_a_failed_download_is_tried_again_within_the_run(
    scenario: str,
    hostile: HostileBackend,
    run_scenario: Callable[[str, int], Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """503 twice, or a truncated file once: the same job's file is downloaded again in
    the same run, and the tile gets its product without a second job."""
    monkeypatch.setenv("TILEKEEPER_HARVEST_RETRY_TRIES", "4")
    run = run_scenario(scenario, 1)
    jobs = jobs_of(hostile, run)
    assert len(jobs) == len(run.bad)  # one job per tile: no tile ran again
    failing = FLAKY_FAILS if scenario == "file-flaky" else 1
    assert [hostile.downloads[j] for j in jobs] == [failing + 1] * len(jobs)
    for tile in run.bad:
        assert run.jobs[tile]["status"] == status.FINISHED
        assert product(run.jobs[tile])["state"] == "ingested", product(run.jobs[tile])


@pytest.mark.parametrize(
    ("scenario", "max_attempts", "ends"),
    [("results-expire-first", 3, "ingested"), ("results-expired", 2, "failed")],
)
def test_expired_results_run_the_tile_again(
    scenario: str,
    max_attempts: int,
    ends: str,
    api: str,
    hostile: HostileBackend,
    run_scenario: Callable[[str, int], Run],
) -> None:
    """The first job's results are gone (410): the tile runs again, as another attempt,
    and the second job's results become its product. Results gone every time (404
    JobNotFound for a finished job): the tile runs max_attempts times, then keeps its
    harvest's failure with the reason, and the run ends. The history says why."""
    run = run_scenario(scenario, max_attempts)
    assert len(jobs_of(hostile, run)) == 2 * len(run.bad)
    for tile in run.bad:
        props = run.jobs[tile]
        assert props["status"] == status.FINISHED
        assert props["attempts"] == 2
        assert product(props)["state"] == ends, product(props)
        if ends == "failed":
            assert "expired on the back-end" in product(props)["error"]
        (reset,) = resets(api, run.campaign, tile)
        assert reset["from"] == status.FINISHED
        assert "expired" in reset["details"]["reason"]
