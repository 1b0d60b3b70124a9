"""Harvesting a campaign: each finished tile's openEO results (read with the back-end's
login, assets downloaded through their signed URLs) become products, on a worker pool
so the manager's polling loop never waits for a download.

Everything a back-end says is untrusted: its job id is checked before it goes into a
URL, its results document is parsed strictly (ingest/results.py), each file is
downloaded through the egress policy under a size cap derived from the tile, a deadline
and a minimum rate (ingest/download.py), and the back-end's credentials go only to its
own origin. A failure is stored on the tile as a short, inert reason, never an answer's
body. Temporary folders carry the owning process's id; a Harvester removes those of
processes no longer alive.

Each job item carries its harvest state in ``tilekeeper:product`` (pending, ingested,
failed with the error); tiles never harvested, pending or failed are picked up again by
the next run (``catch_up``) and by ``tilekeeper ingest --campaign``.

A failure that may pass is tried again within the run, after a growing wait kept off the
worker threads (ingest/harvest_retry.py); results the back-end no longer has fail the
tile's harvest with RESULTS_EXPIRED and are handed to the runner (``take_expired``), which
may run the tile again."""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from openeo.rest import OpenEoApiError, OpenEoApiPlainError
from openeo.rest.connection import Connection

from catalog_service.client.http import ApiError, BrokenAnswer, HttpSession, ServiceUnreachable
from catalog_service.egress import egress_session
from catalog_service.errors import TilekeeperError
from catalog_service.ids import campaign_products_id, job_id_problem
from catalog_service.jobs.campaign import JOB_ID_KEY, RESULTS_EXPIRED
from catalog_service.remote_text import inert
from catalog_service.settings import HarvestSettings
from ingest.download import DownloadLimits, download
from ingest.engine import Ingester, Outcome
from ingest.errors import IngestError, Mismatch, Unavailable
from ingest.harvest_retry import (
    EXPIRED,
    TRANSIENT,
    Later,
    api_error_kind,
    delay_s,
    verdict,
)
from ingest.results import Asset, parse_document, raster_key
from ingest.reuse import StoredResults
from ingest.sources import Raster, date_of, dated_id, group_by_date, is_raster, provenance_of
from ingest.store import ProductStore

logger = logging.getLogger(__name__)
# What a tile's product error may hold: the API refuses more than 2,000 characters (the
# tile would stay pending), and anyone who may read a public campaign reads it.
MAX_PRODUCT_ERROR = 500
# Temporary folders of harvests: <tmp>/tilekeeper-harvest-<uid>/<pid>-<tile>-<random>.
# One tile's results: at most a daily time series of rasters, and at most this many
# files' worth of bytes in all (so disk and time are bounded per tile, not per file).
MAX_RASTERS_PER_TILE = 366
TILE_FILES_OVER_FILE = 8
HARVEST_DIR = "tilekeeper-harvest"
_OWNED_BY = re.compile(r"^(\d+)-")
T = TypeVar("T")


def harvest_root() -> Path:
    """The parent of every temporary harvest folder of this user."""
    return Path(tempfile.gettempdir()) / f"{HARVEST_DIR}-{os.getuid()}"


def _own_folder(root: Path) -> Path:
    """``root``, made when missing; refused when it is not this user's own folder (a
    link or a folder somebody else made in a shared temporary directory)."""
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(root)
    except OSError as exc:
        raise IngestError(f"cannot make the harvest folder {root} ({exc.strerror})") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise IngestError(
            f"{root} is not a folder of this user: remove it, or set TMPDIR to another folder"
        )
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: alive
        return True
    return True


def remove_stale_folders(root: Path | None = None) -> int:
    """Remove the temporary harvest folders of processes no longer alive (a run killed
    with -9 leaves its folder behind); returns how many were removed."""
    root = root or harvest_root()
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.iterdir():
        owner = _OWNED_BY.match(folder.name)
        if owner is None or not folder.is_dir() or _alive(int(owner[1])):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += not folder.exists()
    return removed


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``url``, or None when it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


def _from_backend(what: str, call: Callable[[], T]) -> T:
    """``call``'s answer; its failure as an IngestError without the answer's body."""
    try:
        return call()
    except OpenEoApiError as exc:  # an openEO error document: its code and message
        raise api_error_kind(exc)(
            f"{what}: the back-end answered {exc.http_status_code} {inert(exc.code, 60)}: "
            f"{inert(exc.message, 200)}"
        ) from None
    except OpenEoApiPlainError as exc:  # anything else: its status only
        raise api_error_kind(exc)(f"{what}: the back-end answered {exc.http_status_code}") from None
    except requests.RequestException as exc:
        raise Unavailable(f"{what}: no usable answer ({type(exc).__name__})") from None
    except ValueError as exc:  # a 200 that is not JSON
        raise IngestError(f"{what}: not a JSON document ({inert(exc, 120)})") from None


def product_error(failures: list[str]) -> str:
    """What is stored as a tile's product error (public on a public campaign)."""
    return inert("; ".join(failures), MAX_PRODUCT_ERROR)


class Harvester:
    """Turns finished tiles of one campaign into products."""

    def __init__(
        self,
        http: HttpSession,
        campaign: str,
        store: ProductStore,
        connect: Callable[[str], Connection],
        workers: int | None = None,
        settings: HarvestSettings | None = None,
    ) -> None:
        self.http = http
        self.campaign = campaign
        self.connect = connect
        self.settings = settings or HarvestSettings()
        self.ingester = Ingester(
            http, store, campaign_products_id(campaign), campaign=campaign, settings=self.settings
        )
        self.stored = StoredResults(store, campaign_products_id(campaign), self.ingester.exists)
        self.downloads = 0  # result files downloaded (not found in the store)
        self.pool = ThreadPoolExecutor(
            max(1, workers or self.settings.workers), thread_name_prefix="harvest"
        )
        self.futures: list[Future[list[Outcome] | None]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a retry queued again
        self.queued: set[str] = set()  # tiles queued, running or waiting for a retry
        self.waiting = 0  # tiles waiting for a retry
        self.later = Later("harvest-retry")
        # Tiles whose harvest ended for good in this run (a permanent failure, expired
        # results): a catch-up within the run leaves them alone.
        self.concluded: set[str] = set()
        self.expired: dict[str, str] = {}  # tile -> the job whose results expired
        self.ended: dict[str, list[Outcome]] = {}  # each tile's latest outcomes
        removed = remove_stale_folders()
        if removed:
            logger.info("removed %d temporary harvest folder(s) of runs no longer alive", removed)

    def tiles(self, states: list[str], limit: int = 10_000) -> list[dict[str, Any]]:
        answer = self.http.get(
            f"campaigns/{self.campaign}/harvest", params={"state": states, "limit": limit}
        )
        tiles: list[dict[str, Any]] = answer["tiles"]
        return tiles

    def catch_up(self) -> int:
        """Queue every finished tile not yet ingested (never tried, pending or failed),
        but those whose harvest this run already ended for good."""
        with self.lock:
            skip = self.concluded | self.queued
        tiles = [t for t in self.tiles(["missing", "pending", "failed"]) if t["tile"] not in skip]
        for tile in tiles:
            self._queue(tile["tile"], tile["properties"])
        return len(tiles)

    def submit(self, tile: str, properties: dict[str, Any]) -> None:
        with self.lock:
            self.concluded.discard(tile)  # finished again: a new job's results
        self._queue(tile, properties)

    def _queue(self, tile: str, properties: dict[str, Any]) -> None:
        with self.lock:
            if tile in self.queued:
                return
            self.queued.add(tile)
            self.futures.append(self.pool.submit(self._guarded, tile, properties, 1))

    def take_expired(self) -> dict[str, str]:
        """The tiles whose results expired on their back-end since the last call, with
        the job whose results they were."""
        with self.lock:
            expired, self.expired = self.expired, {}
        return expired

    def _guarded(self, tile: str, properties: dict[str, Any], tried: int) -> list[Outcome] | None:
        """One try of a tile's harvest; None when another try is queued."""
        error: BaseException | None = None
        try:
            self._state(tile, "pending", None)
            outcomes = self.harvest(tile, properties)
        except IngestError as exc:
            error, outcomes = exc, [Outcome(tile, tile, "failed", error=str(exc))]
        except (ServiceUnreachable, BrokenAnswer) as exc:  # the catalogue away: tried again
            error = Unavailable(f"the catalogue did not answer: {exc}")
            outcomes = [Outcome(tile, tile, "failed", error=str(error))]
        except ApiError as exc:
            text = f"the catalogue answered {exc.status}: {exc}"
            error = Unavailable(text) if exc.status >= 500 or exc.status == 429 else exc
            outcomes = [Outcome(tile, tile, "failed", error=text)]
        except Exception as exc:  # whatever it was, it stays on the tile and the run goes on
            text = f"{type(exc).__name__}: {exc}"
            error, outcomes = exc, [Outcome(tile, tile, "failed", error=text)]
        failures = [str(o.error) for o in outcomes if o.failed]
        kind = verdict(error, outcomes) if failures else None
        if kind == TRANSIENT and tried < self.settings.retry_tries:
            self._again(tile, properties, tried, product_error(failures))
            return None
        if kind == EXPIRED:
            failures = [f"{RESULTS_EXPIRED} ({failures[0]})"]
            outcomes = [Outcome(tile, tile, "expired", error=failures[0])]
        if failures:
            error_text = product_error(failures)
            logger.warning("tile %s: harvest failed: %s", tile, error_text)
            self._record(tile, "failed", error_text)
        else:
            logger.info("tile %s: harvested (%s)", tile, ", ".join(o.result for o in outcomes))
        with self.lock:
            self.queued.discard(tile)
            self.ended[tile] = outcomes
            # Failed for good: a catch-up of this run leaves it alone (out of tries on a
            # failure that may pass, it is tried again).
            if kind not in (None, TRANSIENT):
                self.concluded.add(tile)
            if kind == EXPIRED:
                self.expired[tile] = str(properties.get(JOB_ID_KEY))
        return outcomes

    def _again(self, tile: str, properties: dict[str, Any], tried: int, error: str) -> None:
        """Queue the next try after a wait, on the retry thread (no worker waits)."""
        wait_s = delay_s(self.settings, tried)
        note = f"try {tried + 1} of {self.settings.retry_tries} in {wait_s:.0f} s after: {error}"
        logger.info("tile %s: harvest failed; %s", tile, note)
        self._record(tile, "pending", product_error([note]))

        def retry() -> None:
            with self.lock:
                self.waiting -= 1
                try:
                    self.futures.append(
                        self.pool.submit(self._guarded, tile, properties, tried + 1)
                    )
                except RuntimeError:  # closed meanwhile: the next run picks it up (pending)
                    self.queued.discard(tile)
                self.changed.notify_all()

        with self.lock:
            self.waiting += 1
        if not self.later.call(wait_s, retry):
            with self.lock:
                self.waiting -= 1
                self.queued.discard(tile)
                self.changed.notify_all()

    def _record(self, tile: str, state: str, error: str | None) -> None:
        try:
            self._state(tile, state, error)
        except TilekeeperError as exc:
            logger.warning("tile %s: could not record the harvest %s: %s", tile, state, inert(exc))

    def _state(self, tile: str, state: str, error: str | None) -> None:
        self.http.put(
            f"campaigns/{self.campaign}/jobs/{tile}/product", json={"state": state, "error": error}
        )

    @contextmanager
    def _workdir(self, tile: str) -> Iterator[Path]:
        """A temporary folder named with this process's id (see remove_stale_folders)."""
        root = _own_folder(harvest_root())
        with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-{tile}-", dir=root) as tmp:
            yield Path(tmp)

    def _tile_item(self, tile: str) -> tuple[dict[str, Any] | None, str | None]:
        """The tile's footprint and, when products must be in it, its CRS."""
        item = self.http.get(f"collections/{self.campaign}/items/{tile}")
        geometry = item.get("geometry") if isinstance(item, dict) else None
        crs = None
        if self.settings.crs == "tile" and isinstance(item, dict):
            code = (item.get("properties") or {}).get("proj:code")
            crs = str(code) if code else None
        return (geometry if isinstance(geometry, dict) else None), crs

    def harvest(self, tile: str, properties: dict[str, Any]) -> list[Outcome]:
        backend, job_id = properties.get("backend_name"), properties.get(JOB_ID_KEY)
        if not backend or not job_id:
            raise IngestError(f"tile {tile} has no back-end job")
        problem = job_id_problem(job_id)
        if problem:  # it goes into URL paths on the back-end
            raise IngestError(f"tile {tile}: {problem}")
        geometry, crs = self._tile_item(tile)
        connection = self.connect(str(backend))
        job = connection.job(str(job_id))
        what = f"results of job {job_id} on {inert(backend, 100)}"
        doc = parse_document(_from_backend(what, job.get_results().get_metadata), what)
        described = _from_backend(f"job {job_id} on {inert(backend, 100)}", job.describe)
        provenance = provenance_of(doc.as_stac(), described if isinstance(described, dict) else {})
        assets = [a for a in doc.assets if is_raster(a.key, a.metadata())]
        if len(assets) > MAX_RASTERS_PER_TILE:
            raise IngestError(
                f"{what}: {len(assets):,} raster assets, more than the {MAX_RASTERS_PER_TILE} "
                "a tile may have"
            )
        limits = DownloadLimits.for_files(self.settings, geometry)
        budget = limits.max_bytes * TILE_FILES_OVER_FILE  # all of one tile's files
        dates = [date_of(asset.metadata(), asset.key) for asset in assets]
        several = len(set(dates)) > 1
        with self._workdir(tile) as tmp:
            rasters = []
            keys: dict[str, str] = {}
            for asset, date in zip(assets, dates, strict=True):
                key = raster_key(asset.key)
                if key in keys:
                    raise IngestError(
                        f"{what}: assets {inert(keys[key], 100)} and {inert(asset.key, 100)} "
                        f"both make a raster {key}"
                    )
                keys[key] = asset.key
                # A file the store kept (its item lost to a restore) is not fetched again.
                product_id = dated_id(tile, date, several)
                target = self.stored.find(tile, product_id, key, _expected(asset), tmp / key)
                if target is None:
                    target = tmp / f"{key}.tif"
                    self._download(connection, asset, target, limits)
                    with self.lock:
                        self.downloads += 1
                budget -= target.stat().st_size
                if budget < 0:
                    raise IngestError(
                        f"{what}: its files add up to more than {TILE_FILES_OVER_FILE} times "
                        "the limit of one (TILEKEEPER_HARVEST_MAX_FILE_BYTES)"
                    )
                raster = Raster(target, key, asset.title, _expected(asset))
                rasters.append((raster, date))
            products = group_by_date(
                tile,
                rasters,
                f"tile {tile} (job {job_id} on {inert(backend, 100)})",
                tile=tile,
                grid_code=properties.get("grid:code"),
                provenance=provenance,
                via=f"{connection.root_url.rstrip('/')}/jobs/{job_id}",
                job_item=f"collections/{self.campaign}/items/{tile}",
                tile_geometry=geometry,
                expected_crs=crs,
            )
            return [self.ingester.ingest(p, job=(self.campaign, tile)) for p in products]

    def _download(
        self, connection: Connection, asset: Asset, target: Path, limits: DownloadLimits
    ) -> None:
        """Download one result file. The back-end's login goes only to its own origin;
        any other host (result storage with signed URLs) gets no credentials, and
        requests drops them on a redirect to another host or port."""
        own = origin(asset.href) == origin(connection.root_url)
        # A session of its own, not the connection's: its retries and the caps meant
        # for API answers are not a download's.
        with egress_session() as session:
            if own:
                session.auth = connection.auth
            try:
                size = download(asset.href, target, session, limits)
            except IngestError as exc:  # of the same kind: it says whether to try again
                raise type(exc)(f"asset {inert(asset.key, 100)}: {exc}") from None
        stated = _expected(asset).get("file:size")
        if isinstance(stated, int) and stated != size:  # before any raster check reads it
            target.unlink(missing_ok=True)
            raise Mismatch(
                f"asset {inert(asset.key, 100)}: {size:,} bytes downloaded, but its document "
                f"says {stated:,} (a truncated download?)"
            )

    def wait(self, on_tile: Callable[[list[Outcome]], None] | None = None) -> list[Outcome]:
        """Wait for every queued harvest and its retries (``on_tile`` hears of each tile
        as it ends); returns the latest outcomes of every tile this harvester ended (a
        tile harvested again counts once)."""
        while True:
            with self.lock:
                while not self.futures and self.waiting:
                    self.changed.wait()
                pending, self.futures = self.futures, []
            if not pending:
                with self.lock:
                    return [o for outcomes in self.ended.values() for o in outcomes]
            for future in pending:
                tile_outcomes = future.result()
                if on_tile is not None and tile_outcomes is not None:
                    on_tile(tile_outcomes)

    def close(self) -> None:
        self.later.close()
        self.pool.shutdown(wait=True)


def _expected(asset: Asset) -> dict[str, Any]:
    """file:size / file:checksum the document states (checked after the download)."""
    metadata = asset.metadata()
    return {k: metadata[k] for k in ("file:size", "file:checksum") if k in metadata}
