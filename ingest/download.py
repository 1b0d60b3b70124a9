"""Downloads of untrusted files and documents: result files a back-end points at, and the
URLs given to `tilekeeper ingest`. Every byte comes from somebody else, so each transfer
is bounded:

- streamed to disk, never held whole in memory (documents: in memory up to a cap);
- a size cap: a Content-Length above it is refused before reading, and the transfer is
  cut as soon as more bytes than the cap arrive;
- an overall deadline, kept by a watchdog that shuts the connection down whatever the
  transfer waits for (a connection, headers dripping in, a body read);
- a minimum rate averaged over a window, so a 1 kB/s stream ends; reads return as soon
  as bytes arrive (``read1``) and each waits at most the time left, so the deadline
  and the rate are checked on a byte-per-second drip too;
- a non-2xx answer is an error with its status code and reason phrase, never its body.

What failed says whether another try may help (ingest/errors.py): a busy or failing
server, a broken connection or transfer and a deadline or rate missed are
``Unavailable``; 404 and 410 are ``Gone``; a size cap or a refused address is neither.

Every failure removes the partial file and raises IngestError naming the URL without its
user info, query or fragment (signed URLs carry their signature there), made inert, and
the setting to change when a limit was hit. The session is the caller's and must be
an egress session (catalog_service/egress.py): it checks every redirect hop, and its
connections are the ones the deadline's watchdog can find and shut.

Just over 400 lines: every bound above applies to the same read loop, and each reads
clearer beside the others.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from catalog_service.egress import EgressRefused, TransferDeadline
from catalog_service.remote_text import inert
from catalog_service.settings import HarvestSettings, RunnerSettings
from ingest.errors import Gone, IngestError, Unavailable
from ingest.limits import file_bytes_limit

CHUNK = 1 << 16
CONNECT_TIMEOUT_S = 10.0
# Bytes looked at to tell a JSON document from a file (leading blanks included).
SNIFF_BYTES = 4096
SHOWN_URL_CHARS = 200
# Answers that say "not now": another try later may succeed. 403 is among them: on a
# signed URL it most often means the signature expired, and the next try reads the
# results document again, with fresh URLs.
BUSY_STATUSES = frozenset({403, 408, 425, 429})
GONE_STATUSES = frozenset({404, 410})

MAX_FILE_SETTING = "TILEKEEPER_HARVEST_MAX_FILE_BYTES"
FILE_DEADLINE_SETTING = "TILEKEEPER_HARVEST_DEADLINE_S"
MAX_DOCUMENT_SETTING = "TILEKEEPER_RUNNER_MAX_ANSWER_BYTES"
DOCUMENT_DEADLINE_SETTING = "TILEKEEPER_RUNNER_REQUEST_TIMEOUT_S"
RATE_SETTINGS = "TILEKEEPER_HARVEST_MIN_RATE_BYTES_S, TILEKEEPER_HARVEST_RATE_WINDOW_S"


@dataclass(frozen=True)
class DownloadLimits:
    """What one transfer may take: bytes, seconds in all, and the slowest rate accepted
    (``min_rate_bytes_s`` averaged over ``rate_window_s``; 0: no minimum). The setting
    names go into the messages, so whoever hits a limit knows what to change."""

    max_bytes: int
    deadline_s: float
    min_rate_bytes_s: float
    rate_window_s: float
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    size_setting: str = MAX_FILE_SETTING
    deadline_setting: str = FILE_DEADLINE_SETTING

    @classmethod
    def for_files(
        cls, settings: HarvestSettings | None = None, tile_geometry: dict[str, Any] | None = None
    ) -> DownloadLimits:
        """Limits of a result file (of the tile ``tile_geometry``, when known)."""
        settings = settings or HarvestSettings()
        return cls(
            max_bytes=file_bytes_limit(settings, tile_geometry),
            deadline_s=settings.deadline_s,
            min_rate_bytes_s=settings.min_rate_bytes_s,
            rate_window_s=settings.rate_window_s,
        )

    @classmethod
    def for_documents(
        cls, settings: HarvestSettings | None = None, runner: RunnerSettings | None = None
    ) -> DownloadLimits:
        """Limits of a JSON document (a results document, a STAC item or collection):
        the runner's cap and deadline of an API answer, the harvest's minimum rate."""
        settings = settings or HarvestSettings()
        runner = runner or RunnerSettings()
        return cls(
            max_bytes=runner.max_answer_bytes,
            deadline_s=runner.request_timeout_s,
            min_rate_bytes_s=settings.min_rate_bytes_s,
            rate_window_s=settings.rate_window_s,
            connect_timeout_s=min(CONNECT_TIMEOUT_S, runner.connect_timeout_s),
            size_setting=MAX_DOCUMENT_SETTING,
            deadline_setting=DOCUMENT_DEADLINE_SETTING,
        )


def shown_url(url: str) -> str:
    """``url`` fit for a message, a log or the catalogue: scheme, host, port and path
    only (user info, queries and fragments hold secrets), inert and bounded."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return inert(re.split(r"[?#]", url, maxsplit=1)[0], SHOWN_URL_CHARS)
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}{f':{port}' if port else ''}" if parts.scheme else ""
    return inert(origin + parts.path, SHOWN_URL_CHARS)


def _reason(exc: BaseException) -> str:
    """A short reason for a failed request, without the URL's query (requests puts the
    URL in some of its messages)."""
    inner: Any = exc.args[0] if exc.args else exc
    inner = getattr(inner, "reason", inner)
    text = re.sub(r"\?[^\s'\")]*", "", str(inner)) or type(exc).__name__
    return inert(text, 200)


# -- one transfer ---------------------------------------------------------------------


def _late(shown: str, limits: DownloadLimits, received: int) -> IngestError:
    return Unavailable(
        f"{shown}: not complete after {limits.deadline_s:g} s ({received:,} bytes); given "
        f"up (raise the limit with {limits.deadline_setting})"
    )


def _slow(shown: str, limits: DownloadLimits, got: int, seconds: float) -> IngestError:
    return Unavailable(
        f"{shown}: {got:,} bytes in {seconds:.1f} s, slower than the "
        f"{limits.min_rate_bytes_s:g} bytes/s required; given up ({RATE_SETTINGS} set the "
        "slowest rate accepted)"
    )


class _Reader:
    """The body of one answer, read under the limits."""

    def __init__(
        self,
        response: requests.Response,
        limits: DownloadLimits,
        started: float,
        watch: TransferDeadline,
        shown: str,
    ) -> None:
        self.response = response
        self.limits = limits
        self.started = started
        self.deadline = started + limits.deadline_s
        self.watch = watch
        self.shown = shown
        self.received = 0
        self.max_bytes = limits.max_bytes
        self.size_setting = limits.size_setting

    def cap(self, max_bytes: int, setting: str) -> None:
        """Read at most ``max_bytes`` (``setting`` raises it), announced or received."""
        self.max_bytes, self.size_setting = max_bytes, setting
        self.check_length()
        if self.received > max_bytes:
            raise self.too_big(self.received)

    def check_length(self) -> None:
        """Refuse an announced Content-Length above the cap before reading anything."""
        length = self.response.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > self.max_bytes:
            raise self.too_big(int(length), announced=True)

    def too_big(self, size: int, announced: bool = False) -> IngestError:
        allowed = f"more than the {self.max_bytes:,} bytes allowed"
        told = (
            f"announces {size:,} bytes, {allowed}; refused"
            if announced
            else f"sent {allowed}; cut off"
        )
        return IngestError(f"{self.shown}: {told} (raise the limit with {self.size_setting})")

    def late(self) -> IngestError:
        return _late(self.shown, self.limits, self.received)

    def broken(self, exc: BaseException) -> IngestError:
        """The error for a failed read: the deadline's or the rate's when it was that."""
        now = time.monotonic()
        if self.watch.expired.is_set() or now >= self.deadline:
            return self.late()
        if isinstance(exc, ReadTimeoutError | TimeoutError) and self.limits.min_rate_bytes_s:
            return _slow(
                self.shown, self.limits, 0, min(self.limits.rate_window_s, now - self.started)
            )
        return Unavailable(
            f"{self.shown}: the transfer broke off after {self.received:,} bytes ({_reason(exc)})"
        )

    def _read_timeout(self, left: float) -> float:
        # No byte for a whole window is a rate of 0: no need to wait longer than that.
        if self.limits.min_rate_bytes_s:
            return max(0.01, min(left, self.limits.rate_window_s))
        return max(0.01, left)

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (decoded when the server compressed them)."""
        raw = self.response.raw
        window_start, window_bytes = self.started, 0
        rate, window = self.limits.min_rate_bytes_s, self.limits.rate_window_s
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0 or self.watch.expired.is_set():
                raise self.late()
            sock = getattr(raw.connection, "sock", None)
            if isinstance(sock, socket.socket):
                sock.settimeout(self._read_timeout(left))
            try:
                # read1: what has arrived, not a full chunk: a drip still comes back here.
                chunk = raw.read1(CHUNK, decode_content=True)
            except (
                Urllib3Error,
                HTTPException,
                OSError,
                ValueError,
                requests.RequestException,
            ) as exc:
                raise self.broken(exc) from None
            if not chunk:
                if self.watch.expired.is_set():  # the watchdog's shutdown reads as an end
                    raise self.late()
                return
            self.received += len(chunk)
            if self.received > self.max_bytes:
                raise self.too_big(self.received)
            window_bytes += len(chunk)
            now = time.monotonic()
            if rate and now - window_start >= window:
                if window_bytes < rate * (now - window_start):
                    raise _slow(self.shown, self.limits, window_bytes, now - window_start)
                window_start, window_bytes = now, 0
            yield chunk


@contextlib.contextmanager
def _opened(url: str, session: requests.Session, limits: DownloadLimits) -> Iterator[_Reader]:
    """GET ``url`` under ``limits``; yields the reader of a 2xx answer whose announced
    length is within the cap. Everything that goes wrong is an IngestError."""
    shown = shown_url(url)
    started = time.monotonic()
    with TransferDeadline(limits.deadline_s) as watch:
        reader: _Reader | None = None
        try:
            timeout = (
                min(limits.connect_timeout_s, limits.deadline_s),
                _first_read_timeout(limits),
            )
            with session.get(
                url,
                stream=True,
                timeout=timeout,
                # A result file is not worth compressing; a compressed one is still
                # decoded and counted as it is written.
                headers={"Accept-Encoding": "identity"},
            ) as response:
                if response.raw.connection is not None:
                    watch.conn = response.raw.connection
                reader = _Reader(response, limits, started, watch, shown)
                if not 200 <= response.status_code < 300:
                    raise _status_error(shown, response)
                reader.check_length()
                yield reader
                if watch.expired.is_set():
                    raise reader.late()
        except IngestError:
            raise
        except EgressRefused as exc:
            raise IngestError(f"{shown}: not downloaded: {inert(exc, 300)}") from None
        except requests.TooManyRedirects:
            raise IngestError(
                f"{shown}: more than {session.max_redirects} redirects; not downloaded"
            ) from None
        except (requests.RequestException, Urllib3Error, HTTPException, OSError, ValueError) as exc:
            received = reader.received if reader is not None else 0
            if watch.expired.is_set() or time.monotonic() >= started + limits.deadline_s:
                raise _late(shown, limits, received) from None
            if isinstance(exc, requests.ReadTimeout) and limits.min_rate_bytes_s:
                raise _slow(shown, limits, received, time.monotonic() - started) from None
            raise Unavailable(f"{shown}: cannot download ({_reason(exc)})") from None


def _first_read_timeout(limits: DownloadLimits) -> float:
    if limits.min_rate_bytes_s:
        return min(limits.deadline_s, limits.rate_window_s)
    return limits.deadline_s


def _status_error(shown: str, response: requests.Response) -> IngestError:
    """Status code and reason phrase (inert, bounded), never the body; of the kind the
    status says (see the module's docstring)."""
    status = response.status_code
    message = _status_message(shown, response)
    if status in GONE_STATUSES:
        return Gone(message)
    if status in BUSY_STATUSES or status >= 500:
        return Unavailable(message)
    return IngestError(message)


def _status_message(shown: str, response: requests.Response) -> str:
    """Status code and reason phrase (inert, bounded): never the body."""
    status = response.status_code
    if 400 <= status < 500:
        hint = " (a signed URL that expired, or a file no longer there?)"
    elif status >= 500:
        hint = " (the server failed; try again later)"
    else:
        hint = ""
    return f"{shown}: {status} {inert(response.reason or '', 100)}{hint}"


def _write(out: Any, chunk: bytes, target: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise IngestError(f"{target}: cannot write the download ({exc.strerror})") from None


def _open_target(target: Path) -> Any:
    try:
        return target.open("wb")
    except OSError as exc:
        raise IngestError(f"{target}: cannot write the download ({exc.strerror})") from None


# -- the public calls -----------------------------------------------------------------


def download(url: str, target: Path, session: requests.Session, limits: DownloadLimits) -> int:
    """Stream ``url`` into ``target`` under ``limits``; returns the bytes written. On any
    failure ``target`` is removed and IngestError says why."""
    try:
        with _opened(url, session, limits) as reader, _open_target(target) as out:
            for chunk in reader.chunks():
                _write(out, chunk, target)
        return reader.received
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def parse_object(body: bytes, shown: str) -> dict[str, Any]:
    """``body`` as a JSON object, or IngestError."""
    if not body.strip():
        raise IngestError(f"{shown}: an empty answer, not a JSON document")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise IngestError(f"{shown}: not a JSON document ({inert(exc, 120)})") from None
    if not isinstance(doc, dict):
        raise IngestError(
            f"{shown}: a JSON {type(doc).__name__}, not an object (a STAC item or collection)"
        )
    return doc


def read_json(
    url: str, session: requests.Session, limits: DownloadLimits | None = None
) -> dict[str, Any]:
    """The JSON object at ``url``, read in memory up to ``limits.max_bytes`` (default:
    :meth:`DownloadLimits.for_documents`); a larger one is refused before it is parsed,
    an announced one before it is read."""
    limits = limits or DownloadLimits.for_documents()
    body = bytearray()
    with _opened(url, session, limits) as reader:
        for chunk in reader.chunks():
            body += chunk
    return parse_object(bytes(body), reader.shown)


def fetch(
    url: str,
    target: Path,
    session: requests.Session,
    file_limits: DownloadLimits,
    document_limits: DownloadLimits | None = None,
) -> dict[str, Any] | None:
    """One GET of ``url``, which may be a file or a JSON document: told apart by its
    first bytes. A document (``{`` or ``[`` first) is read in memory under the
    document cap and returned; anything else is streamed into ``target`` under
    ``file_limits`` (returns None). On any failure ``target`` is removed."""
    document_limits = document_limits or DownloadLimits.for_documents()
    try:
        with _opened(url, session, file_limits) as reader:
            chunks = reader.chunks()
            head = b""
            for chunk in chunks:
                head += chunk
                if head.strip() or len(head) >= SNIFF_BYTES:
                    break
            if head.lstrip()[:1] in (b"{", b"["):
                reader.cap(document_limits.max_bytes, document_limits.size_setting)
                body = bytearray(head)
                for chunk in chunks:
                    body += chunk
                return parse_object(bytes(body), reader.shown)
            with _open_target(target) as out:
                _write(out, head, target)
                for chunk in chunks:
                    _write(out, chunk, target)
        return None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
