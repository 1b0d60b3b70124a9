"""Where a request's database work goes when reads have a replica of their own.

- Writes, and every read of a request that writes (POST, PUT, PATCH, DELETE; a POSTed
  search only reads), go to the primary: a campaign looked up to apply changes to it
  must be the one just written.
- Reads a caller acts on ask for the primary too (``"w"``): API keys (a revoked key
  stops at once, not after the replica's lag), who may see what, the runner's job lists.
  While the primary does not answer, a read request's reads go to the replica instead:
  nothing can be revoked or hidden on a primary that is down, so the replica's word is
  the latest there is, and reads go on through a primary's restart.
- Other reads go to the replica while it answers. When it does not (stopped, lost, not
  reachable at start), reads go to the primary for ``RETRY_S`` and the replica is
  tried again after; the failed read is retried by the error middleware (errors.py),
  which now finds the other server. Nothing read from a replica is written back by the API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import asyncpg
from fastapi import Request
from stac_fastapi.pgstac.db import translate_pgstac_errors

from catalog_service.api.auth import writes
from catalog_service.api.errors import Failure, classify

logger = logging.getLogger(__name__)
RETRY_S = 15.0  # how long a server that failed is passed over


class ReadRouting:
    """The pools of one API worker and whether its replica is answering."""

    def __init__(self, writepool: asyncpg.Pool, readpool: asyncpg.Pool | None, replica: bool):
        self.writepool = writepool
        self.readpool = readpool  # None while a replica could not be reached
        self.replica = replica  # the read pool is a server of its own
        self._down_until: dict[str, float] = {"primary": 0.0, "replica": 0.0}

    def _down(self, server: str) -> bool:
        return time.monotonic() < self._down_until[server]

    def pool_for(self, request: Request, readwrite: Literal["r", "w"]) -> asyncpg.Pool:
        if self.readpool is None or writes(request.method, request.url.path):
            return self.writepool
        if not self.replica:
            return self.writepool if readwrite == "w" else self.readpool
        if readwrite == "w":
            return self.readpool if self._down("primary") else self.writepool
        return self.writepool if self._down("replica") else self.readpool

    def failed(self, server: str, exc: BaseException) -> None:
        if not self._down(server):
            logger.warning(
                "%s database not answering (%s): its reads go to the other for %.0f s",
                server,
                type(exc).__name__,
                RETRY_S,
            )
        self._down_until[server] = time.monotonic() + RETRY_S

    @asynccontextmanager
    async def connection(
        self, request: Request, readwrite: Literal["r", "w"] = "r"
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection for ``readwrite`` work (stac-fastapi-pgstac's getter's signature)."""
        pool = self.pool_for(request, readwrite)
        try:
            with translate_pgstac_errors():
                async with pool.acquire() as conn:
                    yield conn
        except Exception as exc:
            found = classify(exc)
            if self.replica and found and found[0] is Failure.UNAVAILABLE:
                self.failed("replica" if pool is self.readpool else "primary", exc)
            raise
