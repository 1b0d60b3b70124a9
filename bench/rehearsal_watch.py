"""What watches a campaign while it runs (bench/rehearsal.py's observers).

Each observer is cheap (a request a second at most, one browser page) and robust: no
exception leaves its thread, errors are counted, and it goes on through a restart of the
API or of PostgreSQL. Each has ``start()`` / ``stop()`` (and works as a context manager)
and ``summary()``, a plain dict of figures that ``json.dumps`` takes.

- :class:`WebhookReceiver`: an HTTP server on 127.0.0.1 that records the runner's event
  POSTs (catalog_service/runner/notify.py; the runner delivers to this machine only with
  ``TILEKEEPER_EGRESS_ALLOW_LOOPBACK=1``) and answers 204;
- :class:`ApiProber`: what people and dashboards ask during a run, one request per
  interval in turn (aggregate counts, a page of items, the summary of ``tilekeeper
  campaign status``, a cell tile of the map, a status search): latency per route, failures;
- :class:`MosaicPoller`: the product collection's mosaic (TileJSON and XYZ tiles over
  Europe at z3..z6) through the raster service, from when it has products;
- :class:`MapWatcher`: the campaign map in headless Chromium (Debian's, driven by
  playwright as tests/support/browser.py does): the first paint of a fresh page, and a
  page kept open for the run (never reloaded) with its errors and live refreshes.

Try them on a running service (e.g. ``bash scripts/demo.sh --small``)::

    .venv/bin/python bench/rehearsal_watch.py --api http://127.0.0.1:8080 \\
        --campaign demo-ndvi-2024-small --seconds 30
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests
import requests.auth
from playwright.sync_api import ViewportSize, sync_playwright

from catalog_service.client.credentials import BearerToken
from catalog_service.ids import campaign_products_id

TIMEOUT_S = 10.0
KEPT_ERRORS = 50  # the first errors are kept as examples; all are counted
# The middle of the EU27 (and of the rehearsal's area), for map and mosaic tiles.
EUROPE = (10.0, 50.0)
HEADERS = {"Accept-Encoding": "gzip", "Accept": "application/json"}


def tile_xyz(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    """The WebMercatorQuad tile holding (lon, lat) at zoom z (as bench/locustfile.py's
    ``_tile_xyz``, which is not imported: importing the locustfile patches with gevent)."""
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, interpolated."""
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def figures(latencies_ms: list[float]) -> dict[str, Any]:
    """count, p50, p95, max (ms, rounded; None without samples)."""
    ordered = sorted(latencies_ms)

    def ms(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 1)

    return {
        "count": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p95_ms": ms(percentile(ordered, 95)),
        "max_ms": ms(ordered[-1]) if ordered else None,
    }


def _auth(auth: requests.auth.AuthBase | str | None) -> requests.auth.AuthBase | None:
    """An API key (str) is sent as a bearer token, as the Python client does."""
    return BearerToken(auth) if isinstance(auth, str) else auth


def _session(auth: requests.auth.AuthBase | str | None = None) -> requests.Session:
    """A session without retries: a failure is what we want to see, not hide."""
    session = requests.Session()
    session.headers.update(HEADERS)
    session.auth = _auth(auth)
    return session


class Observer:
    """A background thread run by ``_run`` until ``stop()``; its errors are counted."""

    name = "observer"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started_mono = 0.0
        self._started_wall = 0.0
        self._stopped_mono: float | None = None
        self.internal_errors = 0  # exceptions of the observer itself (not of the service)
        self.last_internal_error: str | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._started_mono = time.monotonic()
        self._started_wall = time.time()
        self._thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._stopped_mono is None:
            self._stopped_mono = time.monotonic()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def elapsed_s(self) -> float:
        """Seconds since start()."""
        return time.monotonic() - self._started_mono

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # nothing may escape the thread
            self._internal(exc)

    def _internal(self, exc: BaseException) -> None:
        with self._lock:
            self.internal_errors += 1
            self.last_internal_error = f"{type(exc).__name__}: {exc}"[:300]

    def _run(self) -> None:
        raise NotImplementedError

    def _ticks(self, interval_s: float) -> Iterator[None]:
        """Yield once per interval (a fixed cadence; late ticks are skipped) until stop()."""
        next_at = time.monotonic()
        while not self._stop.is_set():
            yield
            next_at += interval_s
            now = time.monotonic()
            if next_at < now:  # a slow answer: the missed ticks are not made up
                next_at = now + interval_s - (now - next_at) % interval_s
            if self._stop.wait(next_at - now):
                return

    def _running_s(self) -> float:
        end = self._stopped_mono if self._stopped_mono is not None else time.monotonic()
        return round(end - self._started_mono, 1) if self._started_mono else 0.0


# -- webhooks -------------------------------------------------------------------------------


class WebhookReceiver(Observer):
    """Records every POST (its time, path and JSON body) and answers 204.

    The runner's events (catalog_service/runner/notify.py) carry ``type`` (e.g.
    ``campaign.failure_rate``, ``campaign.finished``), ``id``, ``key``, ``campaign``, ``at``,
    ``message`` and ``details``; a receiver may see an event twice (same ``id``)."""

    name = "webhook-receiver"

    def __init__(self, path: str = "/hook") -> None:
        super().__init__()
        self.path = path
        self.events: list[dict[str, Any]] = []  # {"t": epoch s, "path", "body"}
        self.invalid = 0  # POSTs whose body is not a JSON object
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    raw = self.rfile.read(length) if length else b""
                    receiver._record(self.path, raw)
                except Exception as exc:  # answer whatever happened
                    receiver._internal(exc)
                self.send_response(HTTPStatus.NO_CONTENT)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the campaign's own output matters

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def _record(self, path: str, raw: bytes) -> None:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            if not isinstance(body, dict):
                self.invalid += 1
            self.events.append({"t": time.time(), "path": path, "body": body})

    def _run(self) -> None:
        self._server.serve_forever(poll_interval=0.5)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()
        super().stop(timeout_s)

    def received(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The bodies received (of one event type), in order."""
        with self._lock:
            bodies = [e["body"] for e in self.events if isinstance(e["body"], dict)]
        return [b for b in bodies if kind is None or b.get("type") == kind]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            events = list(self.events)
            invalid = self.invalid
        bodies = [e["body"] for e in events if isinstance(e["body"], dict)]
        ids = Counter(str(b.get("id")) for b in bodies if b.get("id") is not None)
        by_type = Counter(str(b.get("type", "?")) for b in bodies)
        return {
            "url": self.url,
            "posts": len(events),
            "by_type": dict(sorted(by_type.items())),
            "unique_ids": len(ids),
            "duplicates": sum(n - 1 for n in ids.values()),
            "invalid": invalid,
            "first_s": round(events[0]["t"] - self._started_wall, 1) if events else None,
            "last_s": round(events[-1]["t"] - self._started_wall, 1) if events else None,
            "internal_errors": self.internal_errors,
        }


# -- the API as people and dashboards use it ----------------------------------------------------


class _Requests:
    """Latencies and failures of named requests, shared by the HTTP observers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.failures: dict[str, int] = defaultdict(int)
        self.failure_examples: list[dict[str, Any]] = []
        self.first_failure_s: float | None = None
        self.last_failure_s: float | None = None

    def get(
        self, session: requests.Session, name: str, url: str, at_s: float, **kwargs: Any
    ) -> requests.Response | None:
        """GET, timed; None on a connection error or a timeout (recorded as failures)."""
        start = time.perf_counter()
        try:
            response = session.get(url, timeout=TIMEOUT_S, **kwargs)
            _ = response.content  # the whole body, inside the timing
        except requests.RequestException as exc:
            self.record(name, (time.perf_counter() - start) * 1000, None, at_s, exc)
            return None
        self.record(name, (time.perf_counter() - start) * 1000, response.status_code, at_s)
        return response

    def record(
        self,
        name: str,
        ms: float,
        status: int | None,
        at_s: float,
        exc: BaseException | None = None,
    ) -> None:
        failed = status is None or status >= 500
        with self.lock:
            self.statuses[name][str(status) if status is not None else "error"] += 1
            if not failed:
                self.latencies[name].append(ms)
                return
            self.failures[name] += 1
            if self.first_failure_s is None:
                self.first_failure_s = round(at_s, 1)
            self.last_failure_s = round(at_s, 1)
            if len(self.failure_examples) < KEPT_ERRORS:
                what = f"{type(exc).__name__}: {exc}"[:200] if exc else f"HTTP {status}"
                self.failure_examples.append(
                    {"t": round(time.time(), 3), "at_s": round(at_s, 1), "route": name,
                     "error": what}
                )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        with self.lock:
            names = sorted(set(self.statuses))
            routes = {
                name: {
                    **figures(self.latencies[name]),
                    "failures": self.failures[name],
                    "statuses": dict(sorted(self.statuses[name].items())),
                }
                for name in names
            }
            everything = [ms for name in names for ms in self.latencies[name]]
            return {
                "overall": {
                    **figures(everything),
                    "requests": sum(sum(c.values()) for c in self.statuses.values()),
                    "failures": sum(self.failures.values()),
                    "first_failure_s": self.first_failure_s,
                    "last_failure_s": self.last_failure_s,
                },
                "routes": routes,
                "failure_examples": list(self.failure_examples),
            }


class ApiProber(Observer):
    """Every ``interval_s``, one GET of what people and dashboards ask during a run, in
    turn: ``aggregate`` (/collections/{id}/aggregate?aggregations=status_frequency),
    ``items`` (a page of 10 job items), ``summary`` (/campaigns/{id}/summary, what
    ``tilekeeper campaign status`` shows), ``cell`` (the map's cell tile at zoom 4 over
    Europe), ``search`` (a status-filtered STAC search, as STAC Browser and pystac-client
    ask). Latencies are of answers below 500; a status >= 500, a connection error or a
    timeout (10 s) is a failure, recorded with its time, and the prober goes on."""

    name = "api-prober"

    def __init__(
        self,
        api_url: str,
        campaign_id: str,
        interval_s: float = 1.0,
        auth: requests.auth.AuthBase | str | None = None,
    ) -> None:
        super().__init__()
        self.api = api_url.rstrip("/")
        self.campaign = campaign_id
        self.interval_s = interval_s
        self.auth = auth
        self.requests = _Requests()
        z, x, y = tile_xyz(*EUROPE, 4)
        c = campaign_id
        self.routes: list[tuple[str, str, dict[str, Any]]] = [
            ("aggregate", f"/collections/{c}/aggregate", {"aggregations": "status_frequency"}),
            ("items", f"/collections/{c}/items", {"limit": 10}),
            ("summary", f"/campaigns/{c}/summary", {}),
            ("cell", f"/campaigns/{c}/cells/{z}/{x}/{y}.pbf", {}),
            ("search", "/search",
             {"collections": c, "filter": "status='finished'", "limit": 10}),
        ]  # fmt: skip

    def _run(self) -> None:
        session = _session(self.auth)
        for turn, _ in enumerate(self._ticks(self.interval_s)):
            name, path, params = self.routes[turn % len(self.routes)]
            try:
                self.requests.get(session, name, self.api + path, self.elapsed_s(), params=params)
            except Exception as exc:  # the thread goes on
                self._internal(exc)

    def summary(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "running_s": self._running_s(),
            **self.requests.summary(),
            "internal_errors": self.internal_errors,
            "last_internal_error": self.last_internal_error,
        }


# -- the products' mosaic ------------------------------------------------------------------


class MosaicPoller(Observer):
    """The product collection's mosaic through the raster service, every ``interval_s``
    from when the collection exists and has products: its ``tilejson`` link (the default
    render's query), the TileJSON, and the tiles at z3..z6 holding one point (in turn the
    middle of the TileJSON's bounds, where the products are, and 10E 50N) from the
    TileJSON's tile template. 200 and 204 (an empty tile) are answers; 5xx, connection
    errors and timeouts are failures. Records latency per zoom, statuses, and when the
    first non-empty (200) tile came."""

    name = "mosaic-poller"
    ZOOMS = (3, 4, 5, 6)

    def __init__(
        self,
        api_url: str,
        products_collection_id: str,
        interval_s: float = 10.0,
        auth: requests.auth.AuthBase | str | None = None,
    ) -> None:
        super().__init__()
        self.api = api_url.rstrip("/")
        self.collection = products_collection_id
        self.interval_s = interval_s
        self.auth = auth
        self.requests = _Requests()
        self.products_seen_s: float | None = None
        self.first_tile_s: float | None = None  # since start(): the first 200 tile
        self.first_tile_at: float | None = None  # epoch seconds
        self.first_tile_url: str | None = None
        self.rounds = 0

    def _run(self) -> None:
        session = _session(self.auth)
        turn = 0
        for _ in self._ticks(self.interval_s):
            try:
                if self._poll(session, turn):
                    turn += 1
            except Exception as exc:  # the thread goes on
                self._internal(exc)

    def _tilejson_url(self, session: requests.Session) -> str | None:
        """The collection's tilejson link (with its render), on this API's address; None
        while the collection is missing or has no products."""
        at = self.elapsed_s()
        base = f"{self.api}/collections/{self.collection}"
        if self.products_seen_s is None:
            items = self.requests.get(session, "items", f"{base}/items", at, params={"limit": 1})
            if items is None or items.status_code != 200 or not items.json().get("features"):
                return None
            with self.requests.lock:
                self.products_seen_s = round(at, 1)
        answer = self.requests.get(session, "collection", base, at)
        if answer is None or answer.status_code != 200:
            return None
        links = answer.json().get("links", [])
        href = next((lk["href"] for lk in links if lk.get("rel") == "tilejson"), None)
        path = f"{self.api}/raster/collections/{self.collection}/WebMercatorQuad/tilejson.json"
        query = urlsplit(href).query if href else ""
        return f"{path}?{query}" if query else path

    def _poll(self, session: requests.Session, turn: int) -> bool:
        url = self._tilejson_url(session)
        if url is None:
            return False
        answer = self.requests.get(session, "tilejson", url, self.elapsed_s())
        if answer is None or answer.status_code != 200:
            return False
        tilejson = answer.json()
        template = urljoin(url, (tilejson.get("tiles") or [""])[0])
        if "{z}" not in template:
            return False
        bounds = tilejson.get("bounds") or []
        points = [EUROPE]
        if len(bounds) == 4:
            points.insert(0, ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2))
        lon, lat = points[turn % len(points)]
        for zoom in self.ZOOMS:
            if self._stop.is_set():
                break
            z, x, y = tile_xyz(lon, lat, zoom)
            tile_url = template.replace("{z}", str(z)).replace("{x}", str(x))
            tile_url = tile_url.replace("{y}", str(y))
            at = self.elapsed_s()
            tile = self.requests.get(session, f"z{z}", tile_url, at)
            if tile is not None and tile.status_code == 200 and tile.content:
                with self.requests.lock:
                    if self.first_tile_s is None:
                        self.first_tile_s = round(at, 1)
                        self.first_tile_at = time.time()
                        self.first_tile_url = _without_query(tile_url)
        with self.requests.lock:
            self.rounds += 1
        return True

    def summary(self) -> dict[str, Any]:
        figures_ = self.requests.summary()
        with self.requests.lock:
            return {
                "collection": self.collection,
                "interval_s": self.interval_s,
                "running_s": self._running_s(),
                "rounds": self.rounds,
                "products_seen_s": self.products_seen_s,
                "first_tile_s": self.first_tile_s,
                "first_tile_at": self.first_tile_at,
                "first_tile_url": self.first_tile_url,
                **figures_,
                "internal_errors": self.internal_errors,
                "last_internal_error": self.last_internal_error,
            }


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("rescale",)]
    return parts._replace(query=urlencode(kept)).geturl()


def _ms(value: Any) -> float | None:
    return round(float(value), 1) if isinstance(value, int | float) else None


# -- the campaign map in a browser ----------------------------------------------------------------


# Functions, not expressions: an expression is eval'd, which the page's CSP refuses.
FIRST_PAINT = "() => window.tilekeeperMap && window.tilekeeperMap.firstPaintMs !== null"
# performance.now() (ms since navigation) as soon as a mosaic tile loaded (polled each
# frame), or -1 when the page has no mosaic to draw (no products, no raster service).
MOSAIC_DRAWN = """() => {
    const m = window.tilekeeperMap;
    if (!m) return false;
    if (m.mosaicTilesLoaded > 0) return performance.now();
    return m.mosaicState === "none" || m.mosaicState === "error" ? -1 : false;
}"""
STATE = """() => {
    const m = window.tilekeeperMap;
    if (!m) return null;
    const updated = document.getElementById("updated");
    return {
        polls: m.polls, tiles: m.seen.size, cell_tiles: m.cellTilesLoaded,
        mosaic_tiles: m.mosaicTilesLoaded, mosaic_tile_errors: m.mosaicTileErrors,
        mosaic_refreshes: m.mosaicRefreshes, mosaic_state: m.mosaicState,
        first_paint_ms: m.firstPaintMs, last_update_ms: m.lastUpdateMs,
        updated: updated ? updated.textContent : null,
    };
}"""


def chromium() -> str:
    """Debian's Chromium, as the tests and bench/map.py launch it."""
    path = shutil.which("chromium")
    if not path:
        raise RuntimeError("Chromium is installed by scripts/bootstrap.sh (apt: chromium)")
    return path


class MapWatcher(Observer):
    """The campaign map (/campaigns/{id}/map) in headless Chromium.

    ``first_paint()`` opens it fresh (a new browser context: nothing cached) and measures,
    from navigation start, the time until the campaign's tiles were first drawn (map.js's
    ``firstPaintMs``: the first complete render with footprints or cells) and until the
    first mosaic tile loaded (when the campaign has products).

    ``start()`` / ``stop()`` keep one page open for the run, never reloaded, in a thread
    of its own (playwright's sync objects stay in the thread that made them), and record
    what went wrong in it (page errors, console errors, answers >= 500, requests that
    failed) and how it kept live (its polls of the changes feed, mosaic refreshes)."""

    name = "map-watcher"

    def __init__(
        self,
        api_url: str,
        campaign_id: str,
        sample_s: float = 5.0,
        viewport: tuple[int, int] = (1280, 800),
    ) -> None:
        super().__init__()
        self.api = api_url.rstrip("/")
        self.campaign = campaign_id
        self.sample_s = sample_s
        self.viewport: ViewportSize = {"width": viewport[0], "height": viewport[1]}
        self.page_errors = 0
        self.console_errors = 0
        self.server_errors = 0  # answers >= 500
        self.failed_requests = 0  # no answer (connection refused, reset, aborted)
        self.crashed = False
        self.examples: list[dict[str, Any]] = []
        self.opened_s: float | None = None
        self.first_state: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.samples = 0
        self.live_samples = 0  # samples at which the page had polled since the last one
        self.longest_stall_s = 0.0  # longest time without a successful poll
        self.first_paint_result: dict[str, Any] | None = None

    @property
    def map_url(self) -> str:
        return f"{self.api}/campaigns/{self.campaign}/map"

    # -- first paint --------------------------------------------------------------------

    def first_paint(
        self, timeout_s: float = 60.0, mosaic_timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """{"first_paint_ms", "mosaic_ms", "tiles", "cell_tiles", "mosaic_tiles", "error"}:
        ms since navigation start (None when not reached). Runs in a thread of its own
        (the caller may have an asyncio loop, or a page open in another thread)."""
        result: dict[str, Any] = {}
        thread = threading.Thread(
            target=self._first_paint, args=(result, timeout_s, mosaic_timeout_s), daemon=True
        )
        thread.start()
        thread.join(timeout_s + mosaic_timeout_s + 60)
        if not result:
            result = {"first_paint_ms": None, "mosaic_ms": None, "tiles": 0, "error": "hung"}
        self.first_paint_result = result
        return result

    def _first_paint(self, result: dict[str, Any], timeout_s: float, mosaic_s: float) -> None:
        result.update(first_paint_ms=None, mosaic_ms=None, tiles=0, cell_tiles=0,
                      mosaic_tiles=0, error=None)  # fmt: skip
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium(), args=["--no-sandbox"]
                )
                try:
                    context = browser.new_context(viewport=self.viewport)
                    page = context.new_page()
                    page.goto(self.map_url, timeout=timeout_s * 1000)
                    page.wait_for_function(FIRST_PAINT, timeout=timeout_s * 1000)
                    result["first_paint_ms"] = round(
                        float(page.evaluate("() => window.tilekeeperMap.firstPaintMs")), 1
                    )
                    try:
                        drawn = page.wait_for_function(
                            MOSAIC_DRAWN, polling="raf", timeout=mosaic_s * 1000
                        ).json_value()
                        if isinstance(drawn, int | float) and drawn >= 0:
                            result["mosaic_ms"] = round(float(drawn), 1)
                    except Exception as exc:  # no mosaic in time
                        result["error"] = f"mosaic: {type(exc).__name__}"
                    state = page.evaluate(STATE) or {}
                    result["tiles"] = state.get("tiles", 0)
                    result["cell_tiles"] = state.get("cell_tiles", 0)
                    result["mosaic_tiles"] = state.get("mosaic_tiles", 0)
                    result["mosaic_state"] = state.get("mosaic_state")
                finally:
                    browser.close()
        except Exception as exc:  # reported, not raised
            result["error"] = f"{type(exc).__name__}: {exc}"[:300]

    # -- the page kept open -------------------------------------------------------------

    def _example(self, kind: str, text: str) -> None:
        with self._lock:
            if len(self.examples) < KEPT_ERRORS:
                self.examples.append(
                    {"at_s": round(self.elapsed_s(), 1), "kind": kind, "text": text[:300]}
                )

    def _on_console(self, message: Any) -> None:
        where = (message.location or {}).get("url") or ""
        # The browser's own ask for /favicon.ico (404: the service has none) is not the map's.
        if message.type == "error" and not urlsplit(where).path.endswith("/favicon.ico"):
            with self._lock:
                self.console_errors += 1
            self._example("console", f"{message.text} {_without_query(where)}".strip())

    def _on_page_error(self, error: Any) -> None:
        with self._lock:
            self.page_errors += 1
        self._example("pageerror", str(error))

    def _on_response(self, response: Any) -> None:
        if response.status >= 500:
            with self._lock:
                self.server_errors += 1
            self._example("response", f"{response.status} {_without_query(response.url)}")

    def _on_request_failed(self, request: Any) -> None:
        with self._lock:
            self.failed_requests += 1
        self._example("requestfailed", f"{request.failure} {_without_query(request.url)}")

    def _on_crash(self, _page: Any) -> None:
        with self._lock:
            self.crashed = True
        self._example("crash", "the page crashed")

    def _run(self) -> None:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport=self.viewport)
                page.on("console", self._on_console)
                page.on("pageerror", self._on_page_error)
                page.on("response", self._on_response)
                page.on("requestfailed", self._on_request_failed)
                page.on("crash", self._on_crash)
                self._open(page)
                last_sample = time.monotonic()
                last_polls = -1
                last_live = time.monotonic()
                while not self._stop.is_set() and not self.crashed:
                    page.wait_for_timeout(500)  # lets playwright deliver the page's events
                    if time.monotonic() - last_sample < self.sample_s:
                        continue
                    last_sample = time.monotonic()
                    polls = self._sample(page)
                    if polls is not None and polls > last_polls:
                        last_live = time.monotonic()
                        if last_polls >= 0:
                            with self._lock:
                                self.live_samples += 1
                        last_polls = polls
                    with self._lock:
                        stall = time.monotonic() - last_live
                        self.longest_stall_s = max(self.longest_stall_s, round(stall, 1))
                if not self.crashed:
                    self._sample(page)
            finally:
                browser.close()

    def _open(self, page: Any) -> None:
        """Navigate once; a service that is down is waited for (the page is never
        reloaded once it loaded)."""
        while not self._stop.is_set():
            try:
                page.goto(self.map_url, timeout=TIMEOUT_S * 3 * 1000)
                with self._lock:
                    self.opened_s = round(self.elapsed_s(), 1)
                return
            except Exception as exc:  # the service is not up yet
                self._internal(exc)
                page.wait_for_timeout(5000)

    def _sample(self, page: Any) -> int | None:
        try:
            state = page.evaluate(STATE)
        except Exception as exc:  # counted; the page may come back
            self._internal(exc)
            return None
        if not isinstance(state, dict):
            return None
        with self._lock:
            self.samples += 1
            self.state = state
            if self.first_state is None:
                self.first_state = state
        polls = state.get("polls")
        return polls if isinstance(polls, int) else None

    def summary(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self.state or {})
            first = dict(self.first_state or {})
            return {
                "url": self.map_url,
                "running_s": self._running_s(),
                "opened_s": self.opened_s,
                "crashed": self.crashed,
                "page_errors": self.page_errors,
                "console_errors": self.console_errors,
                "server_errors": self.server_errors,
                "failed_requests": self.failed_requests,
                # The changes feed is asked every 2 s: polls are the page's refreshes.
                "refreshes": state.get("polls"),
                "mosaic_refreshes": state.get("mosaic_refreshes"),
                "samples": self.samples,
                "live_samples": self.live_samples,
                "longest_stall_s": self.longest_stall_s,
                "first_paint_ms": _ms(state.get("first_paint_ms")),
                "last_update_ms": _ms(state.get("last_update_ms")),
                "tiles": state.get("tiles"),
                "tiles_at_open": first.get("tiles"),
                "cell_tiles": state.get("cell_tiles"),
                "mosaic_tiles": state.get("mosaic_tiles"),
                "mosaic_tile_errors": state.get("mosaic_tile_errors"),
                "mosaic_state": state.get("mosaic_state"),
                "updated": state.get("updated"),
                "examples": list(self.examples),
                "first_paint": self.first_paint_result,
                "internal_errors": self.internal_errors,
                "last_internal_error": self.last_internal_error,
            }


# -- a try on a running service ----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--campaign", default="demo-ndvi-2024-small")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0, help="the prober's interval")
    parser.add_argument("--mosaic-interval", type=float, default=10.0)
    args = parser.parse_args()
    hooks = WebhookReceiver()
    prober = ApiProber(args.api, args.campaign, interval_s=args.interval)
    mosaic = MosaicPoller(args.api, campaign_products_id(args.campaign), args.mosaic_interval)
    watcher = MapWatcher(args.api, args.campaign)
    observers: list[Observer] = [hooks, prober, mosaic, watcher]
    for observer in observers:
        observer.start()
    # One event as the runner sends it, to see the receiver count it.
    requests.post(
        hooks.url,
        json={"id": "try", "key": "campaign.finished:try", "type": "campaign.finished",
              "campaign": args.campaign, "message": "a try", "details": {}},
        timeout=TIMEOUT_S,
    )  # fmt: skip
    first = watcher.first_paint()
    time.sleep(max(0.0, args.seconds - watcher.elapsed_s()))
    for observer in observers:
        observer.stop()
    print(
        json.dumps(
            {
                "first_paint": first,
                "webhooks": hooks.summary(),
                "api": prober.summary(),
                "mosaic": mosaic.summary(),
                "map": watcher.summary(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
