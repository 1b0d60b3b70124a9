"""The service starts before its database, answers 503 while it is away and recovers
by itself when it returns (a real cluster stopped and started under a running API)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest
from support.database import (
    Database,
    admin_token,
    auth_headers,
    make_database,
    start_api,
    wait_ready,
)
from support.stac import make_collection

from catalog_service.api.server import ServerThread
from catalog_service.database import bring_up


@pytest.fixture(scope="module")
def own_database() -> Iterator[Database]:
    db = make_database("tilekeeper-restart-")
    saved = os.environ.get("TILEKEEPER_API_KEY")  # the session database's, when it is up
    os.environ["TILEKEEPER_API_KEY"] = admin_token(db)
    try:
        yield db
    finally:
        if saved is None:
            os.environ.pop("TILEKEEPER_API_KEY", None)
        else:
            os.environ["TILEKEEPER_API_KEY"] = saved
        db.destroy()


def _eventually_ok(url: str, timeout_s: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(url, timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def _assert_unavailable(server: ServerThread) -> None:
    assert httpx.get(f"{server.url}/_mgmt/ping").status_code == 200
    assert httpx.get(f"{server.url}/_mgmt/health").status_code == 503
    response = httpx.get(f"{server.url}/collections", timeout=30)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "unavailable" in response.json()["description"]
    write = httpx.post(
        f"{server.url}/collections",
        json=make_collection("while-down"),
        headers=auth_headers(),
        timeout=30,
    )
    assert write.status_code == 503


@pytest.mark.slow
def test_api_starts_before_database_and_survives_restart(own_database: Database) -> None:
    own_database.cluster.stop()
    server = start_api(own_database, connect_retry_s=0.2)
    try:
        _assert_unavailable(server)

        bring_up(own_database.settings)
        wait_ready(server.url)
        created = httpx.post(
            f"{server.url}/collections", json=make_collection("after-start"), headers=auth_headers()
        )
        assert created.status_code == 201

        # The raster service's own (psycopg) pool holds a connection now.
        mosaic = (
            f"{server.url}/raster/collections/after-start/tiles/WebMercatorQuad/3/4/2?assets=data"
        )
        first = httpx.get(mosaic, timeout=30)
        assert first.status_code < 500, first.text

        own_database.cluster.stop()
        _assert_unavailable(server)

        own_database.cluster.start()
        response = _eventually_ok(f"{server.url}/collections/after-start")
        assert response.status_code == 200, response.text
        # The write that answered 503 while the database was down stored nothing.
        assert httpx.get(f"{server.url}/collections/while-down").status_code == 404
        # Back up, the mosaic answers at once: no pooled connection the restart killed is
        # handed to a request (each used to answer one 503, minutes later on a quiet map).
        statuses = [httpx.get(mosaic, timeout=30).status_code for _ in range(6)]
        assert all(status < 500 for status in statuses), statuses
    finally:
        server.stop()
