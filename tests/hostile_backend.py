"""A hostile openEO 1.2 back-end on loopback, for tests/test_hostile.py (issue 22).

One ThreadingHTTPServer on 127.0.0.1 holds every back-end, each under its own path:
``http://127.0.0.1:PORT/<scenario>/``. ``good`` is a healthy back-end whose results are
small real COGs covering each job's tile; every other scenario misbehaves in one way
(see SCENARIOS). A second listener on 127.0.0.2 is a foreign host (another origin, as a
result storage would be): some scenarios put their result file there.

It speaks what the openEO Python client and the runner ask: capabilities, version
discovery, basic login, collections, the jobs endpoints, results documents, logs and
the result files. A job is queued at its start, running at the next describe and over
(finished or error) at the one after.

What it records for the tests: every request (host, method, path, Authorization
header), requests that escaped the back-ends' roots, and how many bytes each streamed
answer got out before the client stopped reading.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds

HOST = "127.0.0.1"
FOREIGN_HOST = "127.0.0.2"  # another origin on this machine, reached through the same server
# In every body that is not an openEO answer (a gateway's page, a file endpoint's error):
# a tile's error text that holds it has published a response body. An openEO error
# document's message may be quoted, short and inert.
SENTINEL = "HOSTILE-BODY-5d41402a"
# A word without a break, in every error body: rich's log highlighter is quadratic on
# these (~25 s for this one), so remote text that reaches a log untruncated stalls a run.
LONG_WORD = "W" * (64 << 10)
UDP_ID = "tile_udp"
COLLECTION = "S2"
ASSET = "openEO.tif"
TIFF = "image/tiff; application=geotiff"
# What a stream sends at most before giving up: far beyond any harvest limit, small
# enough that a runner without one cannot fill the disk.
ENDLESS_CAP = 512 << 20
SLOW_RATE = 1024  # bytes per second
# What the slow file claims to be: within any size cap, so only its pace is at fault.
SLOW_LENGTH = 1 << 20
HANG_MAX_S = 120.0  # a hanging answer is released by `release()` at the latest
GOOD_SIZE = 64
FLAKY_FAILS = 2  # answers 503 to a flaky file's first downloads, per job


@dataclass(frozen=True)
class Scenario:
    """How one back-end misbehaves; every field not set behaves as ``good`` does."""

    create: str = "ok"  # ok | traversal (a job id with ../)
    start: str = "ok"  # ok | 500
    describe: str = "ok"  # ok | not-json | 503 | 500 | list | hang
    fields: dict[str, Any] = field(default_factory=dict)  # put into every describe
    ends: str = "finished"  # finished | error
    log_bytes: int = 0  # the error log's message: one word of this many bytes
    results: str = "ok"  # ok | 500 | expired (404 JobNotFound for a finished job)
    asset: str = "cog"  # see _asset_href and _file
    # How the result file answers its downloads: ok | flaky (503 for the first
    # FLAKY_FAILS of each job) | truncated (the first of each job: half the file, its
    # size stated in the results document) | expire-first (410 for the first job of each
    # tile, the file for later jobs)
    file: str = "ok"


SCENARIOS: dict[str, Scenario] = {
    "good": Scenario(),
    # Tracking: the job is created and started; what describe says is hostile.
    "describe-not-json": Scenario(describe="not-json"),
    "describe-503": Scenario(describe="503"),
    "describe-500": Scenario(describe="500"),
    "describe-list": Scenario(describe="list"),
    "describe-hangs": Scenario(describe="hang"),
    "usage-list": Scenario(fields={"usage": [{"cpu": 1}, "lots"]}),
    "status-unknown": Scenario(fields={"status": "exploded"}),
    "costs-huge": Scenario(fields={"costs": 10**400}),  # json.dumps writes every digit
    "costs-string": Scenario(fields={"costs": "12.50 EUR"}),
    "costs-negative": Scenario(fields={"costs": -4000.0}),
    # Creating and starting.
    "start-500": Scenario(start="500"),
    "job-id-traversal": Scenario(create="traversal"),
    # Ending in error, with a log message of one unbroken word.
    "error-log-64k": Scenario(ends="error", log_bytes=64 << 10),
    "error-log-20m": Scenario(ends="error", log_bytes=20 << 20),
    # Results.
    "results-500": Scenario(results="500"),
    "file-flaky": Scenario(file="flaky"),
    "file-truncated": Scenario(file="truncated"),
    "results-expire-first": Scenario(file="expire-first"),
    "results-expired": Scenario(results="expired"),
    "stream-endless": Scenario(asset="endless"),
    "stream-slow": Scenario(asset="slow"),
    "href-metadata": Scenario(asset="metadata"),
    "href-api": Scenario(asset="api"),
    "href-foreign": Scenario(asset="foreign"),
    "redirect-foreign": Scenario(asset="redirect"),
    # Rasters.
    "bands-10000": Scenario(asset="bands"),
    "sparse-huge": Scenario(asset="sparse"),
    "forged-cog-huge": Scenario(asset="forged-huge"),
    "forged-cog": Scenario(asset="forged"),
    "footprint-far": Scenario(asset="far"),
    "crs-other": Scenario(asset="crs"),
}


@dataclass(frozen=True)
class Seen:
    host: str
    method: str
    path: str
    authorization: str | None


@dataclass
class Job:
    scenario: str
    id: str
    title: str
    process: dict[str, Any]
    created: str
    status: str = "created"
    polls: int = 0  # describes since the start

    @property
    def extent(self) -> dict[str, Any]:
        """The tile's spatial_extent, from the job's process graph."""
        for node in (self.process.get("process_graph") or {}).values():
            extent = (node.get("arguments") or {}).get("spatial_extent")
            if isinstance(extent, dict) and {"west", "south", "east", "north"} <= set(extent):
                return extent
        raise ValueError(f"job {self.id} has no spatial_extent")


def udp_document() -> dict[str, Any]:
    """The campaign's process: loads S2 over the tile for the campaign's period."""
    return {
        "id": UDP_ID,
        "parameters": [
            {"name": "spatial_extent", "description": "tile", "schema": {"type": "object"}},
            {"name": "temporal_extent", "description": "period", "schema": {"type": "array"}},
        ],
        "process_graph": {
            "load": {
                "process_id": "load_collection",
                "arguments": {
                    "id": COLLECTION,
                    "spatial_extent": {"from_parameter": "spatial_extent"},
                    "temporal_extent": {"from_parameter": "temporal_extent"},
                },
                "result": True,
            }
        },
    }


# -- rasters ----------------------------------------------------------------------------


def _crs_of(extent: dict[str, Any]) -> str:
    crs = extent.get("crs", 4326)
    return f"EPSG:{crs}" if isinstance(crs, int) or str(crs).isdigit() else str(crs)


def tiff_bytes(
    bounds: tuple[float, float, float, float],
    crs: str,
    *,
    width: int = GOOD_SIZE,
    height: int = GOOD_SIZE,
    count: int = 1,
    dtype: str = "uint8",
    cog: bool = True,
    sparse: bool = False,
    **options: Any,
) -> bytes:
    """A deflate GeoTIFF over ``bounds``: a gradient, written as a COG, or (``sparse``)
    without a single block, however large it claims to be."""
    west, south, east, north = bounds
    transform = Affine((east - west) / width, 0.0, west, 0.0, -(north - south) / height, north)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
        **options,
    }
    with MemoryFile() as source:
        if sparse:
            profile |= {"sparse_ok": True, "bigtiff": "NO"}
        with source.open(**profile) as dst:
            if not sparse:
                ramp = np.add.outer(np.arange(height), np.arange(width)) % 251 + 1
                dst.write(np.broadcast_to(ramp.astype(dtype), (count, height, width)))
        if not cog:
            return bytes(source.read())
        with source.open() as src, MemoryFile() as out:
            rasterio.shutil.copy(src, out.name, driver="COG", compress="deflate")
            return bytes(out.read())


# GDAL's "ghost" header of a COG (right after the TIFF header): what GDAL reports as
# LAYOUT=COG, whatever the file really is.
_GHOST_BODY = (
    "LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
    "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n "
)
GHOST = f"GDAL_STRUCTURAL_METADATA_SIZE={len(_GHOST_BODY):06d} bytes\n{_GHOST_BODY}".encode()
_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_BLOCK_OFFSETS = {273, 324}  # StripOffsets, TileOffsets


def forge_cog_header(data: bytes) -> bytes:
    """A classic little-endian TIFF with GDAL's COG header put in front of its first
    IFD: every offset in the file moves by the header's length."""
    if data[:4] != b"II*\x00":
        raise ValueError("not a classic little-endian TIFF")
    shift = len(GHOST)
    out = bytearray(data[:8] + GHOST + data[8:])

    def moved(new_at: int) -> None:
        value = struct.unpack_from("<I", out, new_at)[0]
        if value >= 8:  # 0: no such block (a sparse file), or no next IFD
            struct.pack_into("<I", out, new_at, value + shift)

    ifd = struct.unpack_from("<I", data, 4)[0]
    moved(4)
    while ifd:
        entries = struct.unpack_from("<H", data, ifd)[0]
        for n in range(entries):
            at = ifd + 2 + 12 * n
            tag, kind, count = struct.unpack_from("<HHI", data, at)
            outside = _TYPE_BYTES[kind] * count > 4
            if outside:
                moved(at + 8 + shift)
            if tag in _BLOCK_OFFSETS:
                if kind != 4:
                    raise ValueError("block offsets that are not LONG")
                first = struct.unpack_from("<I", data, at + 8)[0] if outside else at + 8
                for k in range(count):
                    moved(first + shift + 4 * k)
        next_at = ifd + 2 + 12 * entries
        ifd = struct.unpack_from("<I", data, next_at)[0]
        moved(next_at + shift)
    return bytes(out)


def raster_for(kind: str, extent: dict[str, Any]) -> bytes:
    """The result file of an asset ``kind`` for a tile's spatial extent."""
    bounds = (
        float(extent["west"]),
        float(extent["south"]),
        float(extent["east"]),
        float(extent["north"]),
    )
    crs = _crs_of(extent)
    if kind in ("cog", "foreign", "redirect"):
        return tiff_bytes(bounds, crs)
    if kind == "far":
        # The same CRS and size, 2,000 km further south (North Africa for a Belgian tile).
        west, south, east, north = bounds
        return tiff_bytes((west, south - 2_000_000, east, north - 2_000_000), crs)
    if kind == "crs":
        return tiff_bytes(transform_bounds(crs, "EPSG:3857", *bounds), "EPSG:3857")
    if kind == "bands":
        # 10,000 bands of 128 x 128 float32: 655 MB of pixels in ~140 kB.
        return tiff_bytes(
            bounds, crs, width=128, height=128, count=10_000, dtype="float32", cog=False,
            sparse=True, tiled=True, blockxsize=128, blockysize=128, interleave="band",
        )  # fmt: skip
    if kind in ("sparse", "forged-huge"):
        huge = tiff_bytes(
            bounds, crs, width=200_000, height=200_000, cog=False, sparse=True,
            tiled=True, blockxsize=1024, blockysize=1024,
        )  # fmt: skip
        return forge_cog_header(huge) if kind == "forged-huge" else huge
    if kind == "forged":
        # Stripped, no overviews: no COG at all, but for its header.
        stripped = tiff_bytes(
            bounds, crs, width=2048, height=2048, cog=False, blockysize=16, bigtiff="NO"
        )
        return forge_cog_header(stripped)
    raise ValueError(f"no raster for asset kind {kind!r}")


# -- the server -------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend: HostileBackend


class HostileBackend:
    """The back-ends of SCENARIOS (and a foreign host), with what they saw."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.seen: list[Seen] = []
        self.escaped: list[Seen] = []  # requests outside every back-end's root
        # Bytes that got out of a streamed answer (what it was, job): a client that stops
        # reading at its limit leaves only what the socket buffers took.
        self.streamed: dict[tuple[str, str], int] = {}
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, str] = {}  # access token -> scenario
        self.files: dict[tuple[str, str], bytes] = {}
        self.downloads: dict[str, int] = {}  # result file GETs per job id
        self.passwords = {name: secrets.token_hex(8) for name in SCENARIOS}
        self._counter = 0
        self.port = 0
        self.foreign_port = 0

    # -- lifecycle --------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[HostileBackend]:
        servers = []
        try:
            for host in (HOST, FOREIGN_HOST):
                server = _Server((host, 0), _Handler)
                server.backend = self
                threading.Thread(target=server.serve_forever, daemon=True).start()
                servers.append(server)
            self.port = servers[0].server_port
            self.foreign_port = servers[1].server_port
            yield self
        finally:
            self.release()
            for server in servers:
                server.shutdown()
                server.server_close()

    def reset(self) -> None:
        """Forget what was seen (a new test); hanging answers hang again."""
        with self.lock:
            self.seen.clear()
            self.escaped.clear()
            self.streamed.clear()
        self.released.clear()

    def release(self) -> None:
        """End every hanging answer and stream now."""
        self.released.set()

    # -- addresses --------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def foreign_origin(self) -> str:
        return f"http://{FOREIGN_HOST}:{self.foreign_port}"

    def url(self, scenario: str) -> str:
        return f"{self.origin}/{scenario}/"

    @property
    def udp_url(self) -> str:
        return f"{self.origin}/udp/{UDP_ID}.json"

    def api_href(self, job_id: str) -> str:
        """Where the ``href-api`` scenario's asset points: tilekeeper's own API."""
        return f"{self.api_url}/collections/hostile-missing/items/{job_id}"

    def credentials(self, scenario: str) -> tuple[str, str]:
        return scenario, self.passwords[scenario]

    # -- what was seen ----------------------------------------------------------------

    def requests_to(self, scenario: str, method: str, rest: str) -> list[Seen]:
        """Requests to ``/<scenario><rest>`` (rest: a path prefix such as ``/jobs``)."""
        prefix = f"/{scenario}{rest}"
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path.startswith(prefix)]

    def leaked_credentials(self) -> list[Seen]:
        """Requests that carried credentials somewhere else than the back-end that
        issued them: to the foreign host, or a token of one back-end to another."""
        leaks = []
        with self.lock:
            for seen in self.seen:
                if seen.authorization is None:
                    continue
                if seen.host != HOST:
                    leaks.append(seen)
                    continue
                token = seen.authorization.rsplit("/", 1)[-1]
                owner = self.tokens.get(token)
                if owner is not None and not seen.path.startswith(f"/{owner}/"):
                    leaks.append(seen)
        return leaks

    def _note(self, seen: Seen, escaped: bool) -> None:
        with self.lock:
            self.seen.append(seen)
            if escaped:
                self.escaped.append(seen)

    def _count(self, what: str, job_id: str, sent: int) -> None:
        with self.lock:
            key = (what, job_id)
            self.streamed[key] = self.streamed.get(key, 0) + sent

    # -- jobs -------------------------------------------------------------------------

    def create_job(self, scenario: str, body: dict[str, Any]) -> Job:
        with self.lock:
            self._counter += 1
            job_id = f"j-{self._counter:05d}"
        job = Job(
            scenario,
            job_id,
            str(body.get("title") or ""),
            body.get("process") or {},
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        with self.lock:
            self.jobs[job_id] = job
        return job

    def job(self, scenario: str, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
        return job if job is not None and job.scenario == scenario else None

    def count_download(self, job: Job) -> int:
        """Counts a GET of ``job``'s result file; returns how many there were."""
        with self.lock:
            self.downloads[job.id] = self.downloads.get(job.id, 0) + 1
            return self.downloads[job.id]

    def first_of_its_tile(self, job: Job) -> bool:
        """True for the first job of its scenario with its title (its tile)."""
        with self.lock:
            same = [
                j.id
                for j in self.jobs.values()
                if (j.scenario, j.title) == (job.scenario, job.title)
            ]
        return min(same) == job.id

    def file(self, job: Job, kind: str) -> bytes:
        key = (job.id, kind)
        with self.lock:
            cached = self.files.get(key)
        if cached is None:
            cached = raster_for(kind, job.extent)
            with self.lock:
                self.files[key] = cached
        return cached


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _error_body(code: str) -> bytes:
    return _json({"code": code, "message": f"the back-end says {LONG_WORD}"})


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read what was seen, not stderr

    @property
    def backend(self) -> HostileBackend:
        return self.server.backend

    # -- answers ----------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, value: Any, status: int = 200) -> None:
        self._send(status, _json(value))

    def _stream(
        self, what: str, job: Job, chunks: Callable[[], Iterator[bytes]], length: int | None
    ) -> None:
        """Send ``chunks`` until they end, the client goes or the server is released;
        counts what got out (by what it was and job)."""
        # A small send buffer: what got out is close to what the client took.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        self.send_response(200)
        self.send_header("Content-Type", TIFF if what != "logs" else "application/json")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        sent = 0
        try:
            for chunk in chunks():
                if self.backend.released.is_set():
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the client stopped reading: what it got is counted
        finally:
            self.backend._count(what, job.id, sent)
            self.close_connection = True

    # -- dispatch ---------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        host = self.server.server_address[0]
        first, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        known = host == FOREIGN_HOST or first in SCENARIOS or first == "udp"
        self.backend._note(
            Seen(str(host), method, path, self.headers.get("Authorization")), not known
        )
        if host == FOREIGN_HOST:
            self._foreign(method, path)
        elif first == "udp":
            self._send_json(udp_document())
        elif first in SCENARIOS:
            self._backend(first, SCENARIOS[first], method, rest.rstrip("/") or "/")
        else:
            self._send_json({"code": "NotFound", "message": "no such back-end"}, 404)

    def _foreign(self, method: str, path: str) -> None:
        # Another host holding result files, as a result storage does: /files/{job}/{name}
        parts = path.strip("/").split("/")
        with self.backend.lock:
            job = (
                self.backend.jobs.get(parts[1]) if len(parts) == 3 and parts[0] == "files" else None
            )
        if job is None:
            self._send(404, f"<html>{SENTINEL}: no such file</html>".encode(), "text/html")
            return
        self._send(200, self.backend.file(job, "cog"), TIFF, head=method == "HEAD")

    # -- one back-end -----------------------------------------------------------------

    def _backend(self, name: str, scenario: Scenario, method: str, rest: str) -> None:
        root = self.backend.url(name)
        if rest == "/" and method == "GET":
            self._send_json(_capabilities(name, root))
        elif rest == "/.well-known/openeo":
            versions = [{"url": root, "api_version": "1.2.0", "production": False}]
            self._send_json({"versions": versions})
        elif rest == "/credentials/basic":
            self._login(name)
        elif rest == "/collections":
            collection = {"id": COLLECTION, "stac_version": "1.0.0", "description": "S2",
                          "license": "proprietary", "links": []}  # fmt: skip
            self._send_json({"collections": [collection], "links": []})
        elif rest == "/processes":
            self._send_json({"processes": [], "links": []})
        elif rest.startswith("/files/") or rest.startswith("/redirect/"):
            self._result_file(name, scenario, method, rest)
        elif rest == "/jobs" or rest.startswith("/jobs/"):
            if not self._authorized(name):
                self._send_json({"code": "AuthenticationRequired", "message": "log in first"}, 401)
                return
            self._jobs(name, scenario, method, rest)
        else:
            self._send_json({"code": "NotFound", "message": f"no {rest}"}, 404)

    def _login(self, name: str) -> None:
        expected = (
            "Basic " + base64.b64encode(":".join(self.backend.credentials(name)).encode()).decode()
        )
        if self.headers.get("Authorization") != expected:
            self._send_json({"code": "CredentialsInvalid", "message": "wrong password"}, 403)
            return
        token = f"{name}-{secrets.token_hex(8)}"
        with self.backend.lock:
            self.backend.tokens[token] = name
        self._send_json({"access_token": token})

    def _authorized(self, name: str) -> bool:
        token = (self.headers.get("Authorization") or "").rsplit("/", 1)[-1]
        with self.backend.lock:
            return self.backend.tokens.get(token) == name

    def _jobs(self, name: str, scenario: Scenario, method: str, rest: str) -> None:
        parts = rest.strip("/").split("/")
        if parts == ["jobs"]:
            if method == "POST":
                self._create(name, scenario)
            else:
                with self.backend.lock:
                    jobs = [j for j in self.backend.jobs.values() if j.scenario == name]
                listing = [{"id": j.id, "title": j.title, "status": j.status,
                            "created": j.created} for j in jobs]  # fmt: skip
                self._send_json({"jobs": listing, "links": []})
            return
        job = self.backend.job(name, parts[1])
        if job is None:
            self._send_json({"code": "JobNotFound", "message": "no such job"}, 404)
            return
        tail = parts[2:]
        if tail == [] and method == "GET":
            self._describe(scenario, job)
        elif tail == [] and method == "DELETE":
            self._send(204)
        elif tail == ["results"] and method == "POST":
            if scenario.start == "500":
                self._send(500, _error_body("Internal"))
                return
            with self.backend.lock:
                if job.status == "created":
                    job.status = "queued"
            self._send(202)
        elif tail == ["results"] and method == "GET":
            if scenario.results == "500":
                self._send(500, _error_body("Internal"))
                return
            if scenario.results == "expired":  # finished, its results since removed
                self._send_json({"code": "JobNotFound", "message": "no such job"}, 404)
                return
            self._send_json(self._results(name, scenario, job))
        elif tail == ["results"] and method == "DELETE":
            self._send(204)
        elif tail == ["logs"] and method == "GET":
            self._logs(scenario, job)
        else:
            self._send_json({"code": "NotFound", "message": "no such endpoint"}, 404)

    def _create(self, name: str, scenario: Scenario) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        job = self.backend.create_job(name, body)
        job_id = f"../../trap/{job.id}" if scenario.create == "traversal" else job.id
        location = f"{self.backend.url(name)}jobs/{job_id}"
        self._send(201, headers={"OpenEO-Identifier": job_id, "Location": location})

    def _describe(self, scenario: Scenario, job: Job) -> None:
        if scenario.describe == "hang":
            self.backend.released.wait(HANG_MAX_S)
        elif scenario.describe == "not-json":
            page = f"<html><body><h1>Gateway</h1><p>{SENTINEL} {LONG_WORD}</p></body></html>"
            self._send(200, page.encode())
            return
        elif scenario.describe in ("503", "500"):
            code = "ServiceUnavailable" if scenario.describe == "503" else "Internal"
            self._send(int(scenario.describe), _error_body(code))
            return
        with self.backend.lock:  # describes of one job may come at once (a retry)
            if job.status in ("queued", "running"):
                job.polls += 1
                job.status = {1: "queued", 2: "running"}.get(job.polls, scenario.ends)
        answer = {
            "id": job.id,
            "title": job.title,
            "process": job.process,
            "status": job.status,
            "created": job.created,
            "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "progress": 100 if job.status in ("finished", "error") else 50,
            "costs": 0.01,
            "usage": {
                "cpu": {"value": 12, "unit": "cpu-seconds"},
                "memory": {"value": 2048, "unit": "mb-seconds"},
            },
            **scenario.fields,
        }
        if scenario.describe == "list":
            self._send_json([answer])
            return
        self._send_json(answer)

    def _results(self, name: str, scenario: Scenario, job: Job) -> dict[str, Any]:
        asset: dict[str, Any] = {"href": self._asset_href(name, scenario, job), "type": TIFF,
                                 "roles": ["data"], "title": "result"}  # fmt: skip
        if scenario.file == "truncated":
            asset["file:size"] = len(self.backend.file(job, scenario.asset))
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": job.id,
            "geometry": None,
            "properties": {"datetime": "2024-06-01T00:00:00Z"},
            "assets": {ASSET: asset},
            "links": [{"rel": "self", "href": f"{self.backend.url(name)}jobs/{job.id}/results"}],
        }

    def _asset_href(self, name: str, scenario: Scenario, job: Job) -> str:
        own = f"{self.backend.url(name)}files/{job.id}/{ASSET}"
        if scenario.asset == "metadata":
            return "http://169.254.169.254/latest/meta-data/"
        if scenario.asset == "api":
            return self.backend.api_href(job.id)
        if scenario.asset == "foreign":
            return f"{self.backend.foreign_origin}/files/{job.id}/{ASSET}"
        if scenario.asset == "redirect":
            return f"{self.backend.url(name)}redirect/{job.id}/{ASSET}"
        return own

    def _result_file(self, name: str, scenario: Scenario, method: str, rest: str) -> None:
        parts = rest.strip("/").split("/")
        job = self.backend.job(name, parts[1]) if len(parts) == 3 else None
        if job is None:
            self._send(404, f"<html>{SENTINEL}: no such file</html>".encode(), "text/html")
            return
        head = method == "HEAD"
        if parts[0] == "redirect":
            target = f"{self.backend.foreign_origin}/files/{job.id}/{ASSET}"
            self._send(302, headers={"Location": target}, head=head)
        elif scenario.asset == "endless":
            if head:
                self._send(200, content_type=TIFF, head=True)
                return
            self._stream("endless", job, _endless, None)
        elif scenario.asset == "slow":
            if head:
                self._send(200, content_type=TIFF, head=True)
                return
            self._stream("slow", job, lambda: _slow(self.backend.released), SLOW_LENGTH)
        elif scenario.file != "ok" and not head:
            self._result_file_of(scenario, job)
        else:
            self._send(200, self.backend.file(job, scenario.asset), TIFF, head=head)

    def _result_file_of(self, scenario: Scenario, job: Job) -> None:
        """The result file of a scenario whose downloads fail (see Scenario.file)."""
        data = self.backend.file(job, scenario.asset)
        nth = self.backend.count_download(job)
        gone = f"<html>{SENTINEL}: gone</html>".encode()
        if scenario.file == "flaky" and nth <= FLAKY_FAILS:
            self._send(503, f"<html>{SENTINEL}: busy</html>".encode(), "text/html")
        elif scenario.file == "truncated" and nth == 1:
            self._send(200, data[: len(data) // 2], TIFF)
        elif scenario.file == "expire-first" and self.backend.first_of_its_tile(job):
            self._send(410, gone, "text/html")
        else:
            self._send(200, data, TIFF)

    def _logs(self, scenario: Scenario, job: Job) -> None:
        if job.status != "error" or not scenario.log_bytes:
            self._send_json({"logs": [], "links": []})
            return
        head = b'{"logs": [{"id": "1", "level": "error", "message": "'
        tail = b'"}], "links": []}'
        size = scenario.log_bytes

        def chunks() -> Iterator[bytes]:
            yield head
            block = b"E" * (1 << 20)
            left = size
            while left > 0:
                yield block[: min(left, len(block))]
                left -= len(block)
            yield tail

        self._stream("logs", job, chunks, len(head) + size + len(tail))


def _capabilities(name: str, root: str) -> dict[str, Any]:
    endpoints = [
        ("/", ["GET"]),
        ("/credentials/basic", ["GET"]),
        ("/collections", ["GET"]),
        ("/processes", ["GET"]),
        ("/jobs", ["GET", "POST"]),
        ("/jobs/{job_id}", ["GET", "DELETE"]),
        ("/jobs/{job_id}/results", ["GET", "POST", "DELETE"]),
        ("/jobs/{job_id}/logs", ["GET"]),
    ]
    return {
        "api_version": "1.2.0",
        "backend_version": "0.1.0",
        "stac_version": "1.0.0",
        "type": "Catalog",
        "id": f"hostile-{name}",
        "title": f"{name} back-end",
        "description": "A loopback openEO back-end for tests",
        "production": False,
        "endpoints": [{"path": p, "methods": m} for p, m in endpoints],
        "billing": {"currency": "credits"},
        "links": [{"rel": "self", "href": root}],
    }


def _endless() -> Iterator[bytes]:
    # A TIFF header, then zeros: looks like a raster until it never ends.
    yield b"II*\x00" + bytes((1 << 20) - 4)
    block = bytes(1 << 20)
    for _ in range(ENDLESS_CAP // len(block) - 1):
        yield block


def _slow(released: threading.Event) -> Iterator[bytes]:
    block = b"II*\x00" + bytes(SLOW_RATE - 4)
    for _ in range(SLOW_LENGTH // SLOW_RATE):
        yield block
        if released.wait(1.0):
            return
        block = bytes(SLOW_RATE)


def describe_tiff(data: bytes) -> dict[str, Any]:
    """What GDAL reads of a file (for the server's own tests)."""
    with MemoryFile(io.BytesIO(data)) as memory, memory.open() as src:
        return {
            "shape": (src.count, src.height, src.width),
            "crs": str(src.crs),
            "bounds": tuple(src.bounds),
            "layout": src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"),
            "overviews": src.overviews(1),
        }
