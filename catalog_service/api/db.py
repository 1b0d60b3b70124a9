"""Connection pools for the API: created in the background so the service starts (and
answers 503) while the database is still coming up, and recovers when it returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from stac_fastapi.pgstac.db import con_init, get_connection

from catalog_service.api.errors import unavailable_connection
from catalog_service.database import ConnectionInfo, DatabaseLogins
from catalog_service.settings import ApiSettings

logger = logging.getLogger(__name__)

# How long a starting worker waits for its pools before it takes requests, so that one
# replacing a dead worker answers at once instead of 503 until it has connected; with
# the database away it starts anyway after this (and answers 503 until it is back).
FIRST_CONNECT_WAIT_S = 5.0


def _server_settings(settings: ApiSettings) -> dict[str, str]:
    return {
        "search_path": "pgstac,public",
        "application_name": "tilekeeper",
        "statement_timeout": str(settings.statement_timeout_ms),
        "lock_timeout": str(settings.lock_timeout_ms),
        "jit": "off",
    }


async def create_pool(info: ConnectionInfo, settings: ApiSettings) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        info.dsn,
        min_size=1,
        max_size=settings.pool_size,
        max_inactive_connection_lifetime=300,
        init=con_init,
        server_settings=_server_settings(settings),
        timeout=10,
    )


async def _connect_until_ready(app: FastAPI, logins: DatabaseLogins, settings: ApiSettings) -> None:
    attempt = 0
    while True:
        attempt += 1
        try:
            readpool = await create_pool(logins.reader, settings)
            try:
                writepool = await create_pool(logins.writer, settings)
            except BaseException:
                await readpool.close()
                raise
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if attempt == 1 or attempt % 30 == 0:
                logger.warning(
                    "database %s not reachable yet (%s); retrying every %.1fs",
                    logins.reader.redacted(),
                    exc,
                    settings.connect_retry_s,
                )
            await asyncio.sleep(settings.connect_retry_s)
            continue
        app.state.readpool = readpool
        app.state.writepool = writepool
        app.state.get_connection = get_connection
        logger.info("connected to %s", logins.reader.redacted())
        return


def database_lifespan(logins: DatabaseLogins, settings: ApiSettings):  # type: ignore[no-untyped-def]
    """A FastAPI lifespan that connects in the background (serving once connected, or after
    FIRST_CONNECT_WAIT_S without the database) and closes the pools at the end."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.get_connection = unavailable_connection
        task = asyncio.create_task(_connect_until_ready(app, logins, settings))
        app.state.connect_task = task
        try:
            await asyncio.wait({task}, timeout=FIRST_CONNECT_WAIT_S)
            yield
        finally:
            task.cancel()
            for name in ("readpool", "writepool"):
                pool = getattr(app.state, name, None)
                if pool is not None:
                    await pool.close()

    return lifespan
