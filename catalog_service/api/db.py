"""Connection pools for the API: created in the background so the service starts (and
answers 503) while the database is still coming up, and recovers when it returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from stac_fastapi.pgstac.db import con_init

from catalog_service.api.errors import unavailable_connection
from catalog_service.api.raster import close_raster_pool, keep_overviews
from catalog_service.api.read_routing import ReadRouting
from catalog_service.database import ConnectionInfo, DatabaseLogins
from catalog_service.settings import ApiSettings

logger = logging.getLogger(__name__)

# How long a starting worker waits for its pools before it takes requests, so that one
# replacing a dead worker answers at once instead of 503 until it has connected; with
# the database away it starts anyway after this (and answers 503 until it is back).
FIRST_CONNECT_WAIT_S = 5.0


def _server_settings(settings: ApiSettings, replica: bool = False) -> dict[str, str]:
    server = {
        "search_path": "pgstac,public",
        "application_name": "tilekeeper",
        "statement_timeout": str(settings.statement_timeout_ms),
        "lock_timeout": str(settings.lock_timeout_ms),
        "jit": "off",
    }
    if replica:
        # pgstac's search() records searches and counts unless told it is read-only,
        # and a hot standby refuses every write: without this each search fails there.
        server["pgstac.readonly"] = "true"
    return server


async def create_pool(
    info: ConnectionInfo, settings: ApiSettings, replica: bool = False
) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        info.dsn,
        min_size=1,
        max_size=settings.pool_size,
        max_inactive_connection_lifetime=300,
        init=con_init,
        server_settings=_server_settings(settings, replica),
        timeout=10,
    )


async def _replica_pool(
    app: FastAPI, routing: ReadRouting, info: ConnectionInfo, settings: ApiSettings
) -> None:
    """Connect the replica's pool, again and again until it answers: meanwhile reads go
    to the primary (read_routing.py)."""
    attempt = 0
    while routing.readpool is None:
        attempt += 1
        try:
            routing.readpool = await create_pool(info, settings, replica=True)
            app.state.readpool = routing.readpool
            logger.info("reads from the replica %s", info.redacted())
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if attempt == 1 or attempt % 30 == 0:
                logger.warning(
                    "read replica %s not reachable (%s): reads go to the primary meanwhile",
                    info.redacted(),
                    exc,
                )
            await asyncio.sleep(max(settings.connect_retry_s, 1.0))


async def _connect_until_ready(app: FastAPI, logins: DatabaseLogins, settings: ApiSettings) -> None:
    """The primary's pools first (the service needs them); a replica's read pool after,
    without holding the service up (read_routing.py)."""
    replica = not logins.reader.same_server(logins.writer)
    attempt = 0
    while True:
        attempt += 1
        try:
            writepool = await create_pool(logins.writer, settings)
            try:
                readpool = None if replica else await create_pool(logins.reader, settings)
            except BaseException:
                await writepool.close()
                raise
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if attempt == 1 or attempt % 30 == 0:
                logger.warning(
                    "database %s not reachable yet (%s); retrying every %.1fs",
                    logins.writer.redacted(),
                    exc,
                    settings.connect_retry_s,
                )
            await asyncio.sleep(settings.connect_retry_s)
            continue
        routing = ReadRouting(writepool, readpool, replica)
        app.state.routing = routing
        app.state.readpool = readpool
        app.state.writepool = writepool
        app.state.get_connection = routing.connection
        logger.info("connected to %s", logins.writer.redacted())
        if replica:
            app.state.replica_task = asyncio.create_task(
                _replica_pool(app, routing, logins.reader, settings)
            )
        return


def database_lifespan(logins: DatabaseLogins, settings: ApiSettings):  # type: ignore[no-untyped-def]
    """A FastAPI lifespan that connects in the background (serving once connected, or after
    FIRST_CONNECT_WAIT_S without the database) and closes the pools at the end."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.get_connection = unavailable_connection
        task = asyncio.create_task(_connect_until_ready(app, logins, settings))
        app.state.connect_task = task
        keeper = asyncio.create_task(keep_overviews(app))
        try:
            await asyncio.wait({task}, timeout=FIRST_CONNECT_WAIT_S)
            yield
        finally:
            keeper.cancel()
            task.cancel()
            replica_task = getattr(app.state, "replica_task", None)
            if replica_task is not None:
                replica_task.cancel()
            close_raster_pool(app)
            for name in ("readpool", "writepool"):
                pool = getattr(app.state, name, None)
                if pool is not None:
                    await pool.close()

    return lifespan
