"""Trying a tile's harvest again: what a failure means for it, how long to wait before
the next try, and the one thread that holds the waits.

A failure is ``transient`` (a busy or failing back-end, a broken or truncated download,
a time-out: another try may succeed), ``expired`` (the back-end no longer has the job's
results: only running the tile again brings them back) or ``permanent`` (a raster that
breaks a rule, an address the egress policy refuses: another try fails the same way).

The waits between tries are kept by one scheduler thread, not by the harvest's workers:
a back-end that fails for minutes would otherwise hold every worker asleep while tiles
of the other back-ends wait."""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from openeo.rest import OpenEoApiError, OpenEoApiPlainError

from catalog_service.settings import HarvestSettings
from ingest.download import BUSY_STATUSES, GONE_STATUSES
from ingest.engine import Outcome
from ingest.errors import Gone, IngestError, Mismatch, Unavailable

logger = logging.getLogger(__name__)

TRANSIENT: Final = "transient"
EXPIRED: Final = "expired"
PERMANENT: Final = "permanent"
# openEO error codes of a job whose results are not there, for a job seen finished.
GONE_CODES: Final = frozenset({"JobNotFound", "ResultsExpired"})
# A job seen finished whose results are "not finished": a back-end whose replicas lag
# (another try soon sees them), not results gone.
LAGGING_CODES: Final = frozenset({"JobNotFinished"})


def api_error_kind(exc: OpenEoApiPlainError) -> type[IngestError]:
    """The IngestError class an openEO API error of a finished job's results means."""
    if isinstance(exc, OpenEoApiError) and exc.code in GONE_CODES:
        return Gone
    if isinstance(exc, OpenEoApiError) and exc.code in LAGGING_CODES:
        return Unavailable
    status = exc.http_status_code or 0
    if status in GONE_STATUSES:
        return Gone
    if status in BUSY_STATUSES or status >= 500:
        return Unavailable
    return IngestError


def verdict(exc: BaseException | None, outcomes: Sequence[Outcome] = ()) -> str:
    """What a try that raised ``exc`` (or ended with ``outcomes``) means for the next."""
    if isinstance(exc, Gone):
        return EXPIRED
    if isinstance(exc, Unavailable | Mismatch):
        return TRANSIENT
    failed = [o for o in outcomes if o.failed]
    if exc is None and failed and all(o.transient for o in failed):  # else it fails again
        return TRANSIENT
    return PERMANENT


def delay_s(settings: HarvestSettings, tried: int) -> float:
    """Seconds to wait after the ``tried``-th try (1-based): exponential, capped, with
    jitter (half of it random), so tiles that failed together do not return together."""
    ceiling = min(settings.retry_max_s, settings.retry_first_s * 2.0 ** (tried - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Later:
    """Calls functions after a delay, in order of their time, on one thread of its own
    (started at the first call). ``close`` drops what is still waiting."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call(self, delay: float, fn: Callable[[], None]) -> bool:
        """Call ``fn`` in ``delay`` seconds; False when closed (it will not be called)."""
        with self._cond:
            if self._closed:
                return False
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._closed:
                    return
                fn = heapq.heappop(self._heap)[2]
            try:
                fn()
            except Exception:  # one call's fault must not end the others' waits
                logger.exception("%s: a delayed call failed", self.name)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
