"""Where a request's database work goes when reads have a replica of their own.

- Writes, and every read of a request that writes (POST, PUT, PATCH, DELETE; a POSTed
  search only reads), go to the primary: a campaign looked up to apply changes to it
  must be the one just written.
- Reads a caller acts on ask for the primary too (``"w"``): API keys (a revoked key
  stops at once, not after the replica's lag), who may see what, the runner's job lists.
- Other reads go to the replica while it answers. When it does not (stopped, lost, not
  reachable at start), reads go to the primary for ``REPLICA_RETRY_S`` and the replica is
  tried again after; the failed read is retried by the error middleware (errors.py),
  which now finds the primary. Nothing read from a replica is written back by the API.
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
REPLICA_RETRY_S = 15.0


class ReadRouting:
    """The pools of one API worker and whether its replica is answering."""

    def __init__(self, writepool: asyncpg.Pool, readpool: asyncpg.Pool | None, replica: bool):
        self.writepool = writepool
        self.readpool = readpool  # None while a replica could not be reached
        self.replica = replica  # the read pool is a server of its own
        self._down_until = 0.0

    def pool_for(self, request: Request, readwrite: Literal["r", "w"]) -> asyncpg.Pool:
        if readwrite == "w" or self.readpool is None or writes(request.method, request.url.path):
            return self.writepool
        if self.replica and time.monotonic() < self._down_until:
            return self.writepool
        return self.readpool

    def replica_failed(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            logger.warning(
                "read replica not answering (%s): reads go to the primary for %.0f s",
                type(exc).__name__,
                REPLICA_RETRY_S,
            )
        self._down_until = time.monotonic() + REPLICA_RETRY_S

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
            if self.replica and pool is self.readpool and found and found[0] is Failure.UNAVAILABLE:
                self.replica_failed(exc)
            raise
