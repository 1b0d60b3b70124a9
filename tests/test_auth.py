"""API keys against the real API: every write route refuses missing, malformed, unknown,
expired, revoked and wrong-scope keys (401/403) and stores nothing; a valid key writes
and the history records the key, not a name the client claims."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from support.auth import write_requests
from support.database import Database
from typer.testing import CliRunner

from catalog_service.api.app import create_app
from catalog_service.api.auth import write_routes
from catalog_service.auth import keys
from catalog_service.cli.main import app as cli
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import ApiError, HttpSession
from catalog_service.database import bring_up

runner = CliRunner()


@pytest.fixture(scope="module")
def locked(api: str) -> str:
    """The test API: keys are required by default."""
    return api


def test_db_up_keeps_an_admin_key_only_its_owner_reads(database: Database) -> None:
    path = database.report.admin_key
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    again = bring_up(database.settings)
    assert not again.admin_key_created and path.read_text().strip() == token
    # A revoked admin key is replaced by the next `db up`.
    with psycopg.connect(database.report.logins.admin.dsn, autocommit=True) as conn:
        assert keys.revoke_key(conn, token.removeprefix("tk_").split(".")[0])
    try:
        renewed = bring_up(database.settings)
        assert renewed.admin_key_created
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.environ["TILEKEEPER_API_KEY"] = path.read_text().strip()
    assert path.read_text().strip() != token


def test_without_a_key_clients_say_what_to_do(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TILEKEEPER_API_KEY")
    monkeypatch.setenv("TILEKEEPER_API_KEY_FILE", "/nonexistent")
    with pytest.raises(ApiError) as refused:
        Campaigns(HttpSession(api)).create({"id": "anonymous-try"})
    assert refused.value.status == 401
    assert "needs a credential" in str(refused.value)


def _key(database: Database, scopes: list[str], expires: datetime | None = None) -> str:
    with psycopg.connect(database.report.logins.admin.dsn, autocommit=True) as conn:
        return keys.create_key(conn, f"test-{uuid.uuid4().hex[:6]}", scopes, expires)[1]


def _campaign(url: str, token: str) -> str:
    campaign = f"auth-{uuid.uuid4().hex[:6]}"
    body = {"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-03-01", "2024-09-30"]}
    created = httpx.post(f"{url}/campaigns", json=body, headers={"X-API-Key": token}, timeout=30)
    assert created.status_code == 201, created.text
    tiles = {"tiles": [{"id": "T1", "geometry": {"type": "Polygon", "coordinates": [[[4, 50], [4.1, 50], [4.1, 50.1], [4, 50.1], [4, 50]]]}}]}  # fmt: skip
    registered = httpx.post(
        f"{url}/campaigns/{campaign}/tiles", json=tiles, headers={"X-API-Key": token}, timeout=30
    )
    assert registered.status_code == 200, registered.text
    return campaign


def test_every_write_route_is_covered(database: Database) -> None:
    """The list above is every write route the app has: a new one must be added there."""

    def shape(path: str) -> str:
        path = re.sub(r"\{[^}]+\}", "{}", path)
        return "/".join("{}" if part in ("i1", "w1", "T1") else part for part in path.split("/"))

    app = create_app(logins=database.report.logins)
    listed = {(m, shape(p)) for _s, m, p, _b in write_requests("{c}", "{c}")}
    routes = {(m, shape(p)) for m, p in write_routes(app)}
    assert routes <= listed, routes - listed


@pytest.mark.parametrize(
    "credentials, status",
    [
        ({}, 401),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"X-API-Key": "not-a-key"}, 401),
        ({"X-API-Key": "tk_00000000.unknown"}, 401),
    ],
)
def test_writes_without_a_valid_key_are_refused_and_store_nothing(
    locked: str, database: Database, credentials: dict[str, str], status: int
) -> None:
    admin = _key(database, ["admin"])
    campaign = _campaign(locked, admin)
    collection = f"auth-c-{uuid.uuid4().hex[:6]}"
    for _scope, method, path, body in write_requests(campaign, collection):
        answer = httpx.request(
            method, f"{locked}{path}", json=body, headers=credentials, timeout=30
        )
        assert answer.status_code == status, (method, path, answer.text)
        if status == 401:
            assert answer.headers.get("www-authenticate") == "Bearer"
    assert httpx.get(f"{locked}/collections/{collection}", timeout=30).status_code == 404
    # The refused job change, lease, claim and reset left the tile as registered.
    history = httpx.get(f"{locked}/campaigns/{campaign}/jobs/T1/history", timeout=30).json()
    assert history["history"] == []
    tile = httpx.get(f"{locked}/collections/{campaign}/items/T1", timeout=30).json()
    assert tile["properties"]["status"] == "not_started"
    assert httpx.get(f"{locked}/collections/{campaign}-x", timeout=30).status_code == 404


def test_expired_revoked_and_wrong_scope_keys_are_refused(locked: str, database: Database) -> None:
    admin = _key(database, ["admin"])
    campaign = _campaign(locked, admin)
    expired = _key(database, ["admin"], datetime.now(UTC) - timedelta(seconds=1))
    products_only = _key(database, ["products:write"])
    revoked = _key(database, ["admin"])
    with psycopg.connect(database.report.logins.admin.dsn, autocommit=True) as conn:
        assert keys.revoke_key(conn, revoked.removeprefix("tk_").split(".")[0])
    collection = f"auth-c-{uuid.uuid4().hex[:6]}"
    for scope, method, path, body in write_requests(campaign, collection):
        for token, expected in ((expired, 401), (revoked, 401)):
            answer = httpx.request(method, f"{locked}{path}", json=body, headers={"X-API-Key": token}, timeout=30)  # fmt: skip
            assert answer.status_code == expected, (method, path, answer.text)
        if scope != "products:write":
            answer = httpx.request(method, f"{locked}{path}", json=body, headers={"Authorization": f"Bearer {products_only}"}, timeout=30)  # fmt: skip
            assert answer.status_code == 403, (method, path, answer.text)
    assert httpx.get(f"{locked}/collections/{collection}", timeout=30).status_code == 404


def test_a_valid_key_writes_and_the_history_names_it(locked: str, database: Database) -> None:
    token = _key(database, ["campaigns:write"])
    campaign = _campaign(locked, token)
    changed = httpx.post(
        f"{locked}/campaigns/{campaign}/jobs/changes",
        json={"actor": "someone-else", "changes": [{"tile": "T1", "status": "queued_for_start"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert changed.status_code == 200, changed.text
    history = httpx.get(f"{locked}/campaigns/{campaign}/jobs/T1/history", timeout=30).json()
    actor = history["history"][-1]["by"]
    assert actor.startswith("key:test-") and "someone-else" not in actor
    # Reads stay open.
    assert httpx.get(f"{locked}/collections/{campaign}", timeout=30).status_code == 200


def test_keys_are_made_listed_and_revoked_with_the_cli(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEKEEPER_DB_DSN", database.report.logins.admin.dsn)
    made = runner.invoke(cli, ["auth", "key", "create", "ci", "--scope", "stac:write", "--json"])
    assert made.exit_code == 0, made.output
    import json

    key = json.loads(made.output)
    assert key["token"].startswith("tk_") and key["scopes"] == ["stac:write"]
    listed = runner.invoke(cli, ["auth", "key", "list", "--json"])
    assert key["id"] in listed.output and key["token"] not in listed.output
    assert runner.invoke(cli, ["auth", "key", "revoke", key["id"]]).exit_code == 0
    again = runner.invoke(cli, ["auth", "key", "revoke", key["id"]])
    assert again.exit_code == 1 and "no key" in again.output
    bad = runner.invoke(cli, ["auth", "key", "create", "x", "--scope", "everything"])
    assert bad.exit_code != 0 and "scopes must be among" in bad.output
    # The database keeps only the digest.
    with psycopg.connect(database.report.logins.admin.dsn) as conn:
        stored = conn.execute("SELECT secret_sha256 FROM tilekeeper.api_keys WHERE id = %s", [key["id"]]).fetchone()  # fmt: skip
    assert stored is not None and stored[0] == keys.digest(key["token"])
