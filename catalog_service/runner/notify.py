"""Campaign events, told by a log line and by webhooks that lose nothing.

An event is written to the worker's outbox (a JSON-lines file per campaign) before any
delivery is tried; a delivery thread POSTs each event to each webhook, retrying with
exponential backoff, and records what each webhook acknowledged (2xx). A receiver that is
down loses nothing: what it has not acknowledged is sent again, also by the next run.
Events carry an id (receivers may see one twice, after a crash between the POST and the
record) and a key: an event whose key is in the outbox already is not raised again.

Webhooks go through the egress policy (catalog_service/egress.py) and follow no redirect:
a 3xx answer is a failed delivery, so a receiver cannot send the runner elsewhere. A
webhook the policy refuses is given up for the run, saying why and which setting allows
it; its events stay in the outbox.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from catalog_service.egress import EgressRefused, egress_session
from catalog_service.jobs.campaign import NotifyPolicy

logger = logging.getLogger(__name__)

OUTBOX_ENV = "TILEKEEPER_OUTBOX_DIR"
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0
POST_TIMEOUT_S = 10.0


def outbox_dir() -> Path:
    default = Path.home() / ".local" / "state" / "tilekeeper" / "outbox"
    return Path(os.environ.get(OUTBOX_ENV) or default)


class Outbox:
    """Events and acknowledgements of one campaign, appended to two files."""

    def __init__(self, folder: Path, campaign: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.events_path = folder / f"{campaign}.events.jsonl"
        self.acks_path = folder / f"{campaign}.acks.jsonl"
        self.lock = threading.Lock()

    def _read(self, path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        # A line cut by a crash mid-write is skipped, not fatal.
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def add(self, event: dict[str, Any]) -> bool:
        """Keep the event; False when one with its key is kept already."""
        with self.lock:
            if any(e.get("key") == event["key"] for e in self._read(self.events_path)):
                return False
            self._append(self.events_path, event)
            return True

    def acknowledge(self, event_id: str, url: str) -> None:
        with self.lock:
            self._append(self.acks_path, {"id": event_id, "url": url})

    def pending(self, urls: list[str]) -> list[tuple[dict[str, Any], str]]:
        """(event, webhook) pairs not acknowledged yet, oldest first."""
        with self.lock:
            acked = {(a["id"], a["url"]) for a in self._read(self.acks_path)}
            events = self._read(self.events_path)
        return [(e, u) for e in events for u in urls if (e["id"], u) not in acked]


class Notifier:
    """Raises events (log line + outbox) and delivers them on a thread of its own."""

    def __init__(self, campaign: str, policy: NotifyPolicy, folder: Path | None = None) -> None:
        self.campaign = campaign
        self.policy = policy
        # Without webhooks an event is only logged: no outbox to keep.
        self.outbox = Outbox(folder or outbox_dir(), campaign) if policy.webhooks else None
        self._logged: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = egress_session()
        self._refused: set[str] = set()  # webhooks the egress policy refuses: given up

    def event(self, kind: str, key: str, message: str, **details: Any) -> None:
        full_key = f"{kind}:{key}"
        record: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "key": full_key,
            "type": kind,
            "campaign": self.campaign,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": message,
            "details": details,
        }
        if self.outbox is None:
            if full_key in self._logged:
                return
            self._logged.add(full_key)
        elif not self.outbox.add(record):
            return
        logger.warning("event %s: %s", kind, message)
        self._wake.set()

    def start(self) -> None:
        if self.outbox is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._deliver, name="tilekeeper-notify", daemon=True)
        self._thread.start()

    def close(self, wait_s: float = 10.0) -> int:
        """Try to deliver what is pending for up to ``wait_s``; returns what is left (kept
        in the outbox for the next run)."""
        if self.outbox is None:
            return 0
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self.outbox.pending(self._webhooks()):
            self._wake.set()
            time.sleep(0.2)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(POST_TIMEOUT_S + 1)
        left = len(self.outbox.pending(self._webhooks()))
        if left:
            logger.warning(
                "%d event delivery(ies) wait for a webhook that did not answer; kept in %s "
                "and sent by the next run",
                left,
                self.outbox.events_path,
            )
        return left

    def _webhooks(self) -> list[str]:
        return [url for url in self.policy.webhooks if url not in self._refused]

    def _deliver(self) -> None:
        assert self.outbox is not None
        backoff: dict[str, float] = {}  # webhook -> seconds to wait after a failure
        next_try: dict[str, float] = {}
        while not self._stop.is_set():
            waits = []
            for event, url in self.outbox.pending(self._webhooks()):
                if time.monotonic() < next_try.get(url, 0.0):
                    waits.append(next_try[url] - time.monotonic())
                    continue
                if self._post(url, event):
                    self.outbox.acknowledge(event["id"], url)
                    backoff.pop(url, None)
                else:
                    delay = min(backoff.get(url, FIRST_RETRY_S / 2) * 2, MAX_RETRY_S)
                    backoff[url] = delay
                    next_try[url] = time.monotonic() + delay
                    waits.append(delay)
            self._wake.wait(min(waits) if waits else None)
            self._wake.clear()

    def _post(self, url: str, event: dict[str, Any]) -> bool:
        try:
            response = self._session.post(
                url, json=event, timeout=POST_TIMEOUT_S, allow_redirects=False
            )
        except EgressRefused as exc:
            self._refused.add(url)
            logger.error("webhook given up for this run, nothing is sent to it: %s", exc)
            return False
        except requests.RequestException as exc:
            logger.info("webhook %s not reached (%s); retried", url, type(exc).__name__)
            return False
        if 200 <= response.status_code < 300:
            return True
        moved = " (a redirect, not followed)" if response.is_redirect else ""
        logger.info("webhook %s answered %s%s; retried", url, response.status_code, moved)
        return False


@dataclass
class FailureWindow:
    """Tiles that ended in the last ``window_s``, to tell a failure rate over a threshold."""

    window_s: float
    threshold: float
    min_failures: int

    def __post_init__(self) -> None:
        self.ended: deque[tuple[float, bool]] = deque()

    def add(self, failed: bool, at: float | None = None) -> None:
        self.ended.append((time.monotonic() if at is None else at, failed))

    def rate(self, now: float | None = None) -> tuple[int, int]:
        """(failures, tiles over) within the window."""
        now = time.monotonic() if now is None else now
        while self.ended and self.ended[0][0] < now - self.window_s:
            self.ended.popleft()
        failures = sum(1 for _, failed in self.ended if failed)
        return failures, len(self.ended)

    def over(self, now: float | None = None) -> bool:
        failures, total = self.rate(now)
        return failures >= self.min_failures and failures / total > self.threshold
