"""The worker's lease on its campaign's tiles, kept alive on a thread of its own."""

from __future__ import annotations

import logging
import os
import socket
import threading

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.errors import TilekeeperError
from catalog_service.runner.faults import now
from catalog_service.runner.jobdb import WorkerJobDatabase

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Renews the worker's lease while the loop sleeps or waits on a back-end."""

    def __init__(self, job_db: WorkerJobDatabase, stop: threading.Event) -> None:
        super().__init__(name="tilekeeper-heartbeat", daemon=True)
        self.http = HttpSession(job_db.http.root_url, auth=job_db.auth)
        self.campaigns = Campaigns(self.http)
        self.job_db = job_db
        self.stop = stop
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started": now()}

    def run(self) -> None:
        interval = max(1.0, self.job_db.lease_s / 4)
        while not self.stop.is_set():
            try:
                self.campaigns.heartbeat(
                    self.job_db.collection_id, self.job_db.worker_id, self.job_db.lease_s, self.info
                )
            except TilekeeperError as exc:
                logger.warning("heartbeat failed: %s", exc)
            self.stop.wait(interval)
