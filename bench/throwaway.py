"""A benchmark's own stack: an embedded cluster and the API as a process of its own (as
deployed: in the bench's process it would share the GIL with what is measured), serving
a product store of its own, all in a temporary folder removed afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from catalog_service.api.server import ServerProcess, free_port
from catalog_service.client.http import HttpSession
from catalog_service.database import EmbeddedCluster, UpReport, bring_up
from catalog_service.settings import ApiSettings, DatabaseSettings


@dataclass(frozen=True)
class Stack:
    base: Path  # the temporary folder (the cluster in db/, products in products/)
    url: str  # the API
    report: UpReport  # the database's logins

    @property
    def products(self) -> Path:
        return self.base / "products"


@contextmanager
def throwaway_stack(shared_buffers: str = "256MB") -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="tilekeeper-bench-", dir="/tmp"))
    base.chmod(0o755)  # the server runs as another OS user when this runs as root
    settings = DatabaseSettings(
        data_dir=base / "db", port=free_port(), dsn=None, shared_buffers=shared_buffers
    )
    try:
        report = bring_up(settings)
        os.environ["TILEKEEPER_PRODUCTS_STORE"] = str(base / "products")
        assert report.admin_key is not None
        # The bench's clients write with the stack's admin key.
        os.environ["TILEKEEPER_API_KEY"] = report.admin_key.read_text().strip()
        server = ServerProcess(ApiSettings(port=free_port()), settings).start()
        try:
            HttpSession(server.url).wait_ready()
            yield Stack(base, server.url, report)
        finally:
            server.stop()
    finally:
        EmbeddedCluster(settings).destroy()
        shutil.rmtree(base, ignore_errors=True)
