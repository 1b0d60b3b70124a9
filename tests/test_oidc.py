"""OIDC bearer tokens against the real API: a locally generated key pair whose JWKS (and
discovery document) an issuer on loopback serves. Every write route refuses expired,
wrongly issued, wrongly addressed, forged and scope-less tokens and stores nothing; a
valid token (also as an openEO bearer) writes and is recorded by its subject."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from support.auth import write_requests
from support.database import Database, admin_token, start_api, wait_ready
from support.servers import loopback_server, send_json

from catalog_service.api.server import free_port
from catalog_service.settings import AuthSettings

AUDIENCE = "tilekeeper"


@dataclass
class Issuer:
    url: str
    key: RSAKey
    requests: list[str]

    def token(self, key: RSAKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        body.update(claims)
        signer = key or self.key
        return jwt.encode({"alg": "RS256", "kid": signer.kid}, body, signer)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    key = RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig", "alg": "RS256"})
    port = free_port()
    url = f"http://127.0.0.1:{port}/realms/test"
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.path.endswith("/.well-known/openid-configuration"):
                body: dict[str, Any] = {"issuer": url, "jwks_uri": f"{url}/certs"}
            elif self.path.endswith("/certs"):
                body = {"keys": [key.as_dict(private=False)]}
            elif self.path.rstrip("/") == "/openeo":  # capabilities, for the openEO client
                body = {"api_version": "1.2.0", "backend_version": "test", "stac_version": "1.0.0", "id": "test", "title": "test", "description": "test", "endpoints": [], "links": []}  # fmt: skip
            else:
                self.send_error(404)
                return
            send_json(self, json.dumps(body).encode())

        def log_message(self, *args: Any) -> None:
            pass

    with loopback_server(Handler, port):
        yield Issuer(url, key, seen)


@pytest.fixture(scope="module")
def oidc_api(database: Database, issuer: Issuer) -> Iterator[str]:
    auth = AuthSettings(oidc_issuer=issuer.url, oidc_audiences=[AUDIENCE, "account"])
    server = start_api(database, auth=auth)
    wait_ready(server.url)
    yield server.url
    server.stop()


def _campaign(url: str, database: Database, owners: tuple[str, ...] = ()) -> str:
    campaign = f"oidc-{uuid.uuid4().hex[:6]}"
    admin = {"Authorization": f"Bearer {admin_token(database)}"}
    body = {"id": campaign, "grid": "utm-20km", "owners": list(owners)}
    assert httpx.post(f"{url}/campaigns", json=body, headers=admin, timeout=30).status_code == 201
    tiles = {"tiles": [{"id": "T1", "geometry": {"type": "Polygon", "coordinates": [[[4, 50], [4.1, 50], [4.1, 50.1], [4, 50.1], [4, 50]]]}}]}  # fmt: skip
    registered = httpx.post(f"{url}/campaigns/{campaign}/tiles", json=tiles, headers=admin, timeout=30)  # fmt: skip
    assert registered.status_code == 200
    return campaign


def test_bad_tokens_are_refused_on_every_write_route_and_store_nothing(
    oidc_api: str, database: Database, issuer: Issuer
) -> None:
    campaign = _campaign(oidc_api, database)
    collection = f"oidc-c-{uuid.uuid4().hex[:6]}"
    stranger = RSAKey.generate_key(2048, parameters={"kid": "test-1"})  # same kid, other key
    admin_scope: dict[str, Any] = {"scope": "openid tilekeeper:admin"}
    refused = {
        "expired": issuer.token(exp=int(time.time()) - 120, **admin_scope),
        "wrong issuer": issuer.token(iss="https://elsewhere.test/realm", **admin_scope),
        "wrong audience": issuer.token(aud="another-client", **admin_scope),
        "forged": issuer.token(key=stranger, **admin_scope),
        "not yet valid": issuer.token(nbf=int(time.time()) + 600, **admin_scope),
        "garbage": "a.b.c",
    }
    scopeless = issuer.token(scope="openid profile")
    for _scope, method, path, body in write_requests(campaign, collection):
        for why, token in refused.items():
            answer = httpx.request(method, f"{oidc_api}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
            assert answer.status_code == 401, (why, method, path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
        answer = httpx.request(method, f"{oidc_api}{path}", json=body, headers={"Authorization": f"Bearer {scopeless}"}, timeout=30)  # fmt: skip
        assert answer.status_code == 403, (method, path, answer.text)
    assert httpx.get(f"{oidc_api}/collections/{collection}", timeout=30).status_code == 404
    history = httpx.get(f"{oidc_api}/campaigns/{campaign}/jobs/T1/history", timeout=30).json()
    assert history["history"] == []
    # The key set was fetched through discovery, not per request.
    assert issuer.requests.count("/realms/test/.well-known/openid-configuration") <= 3


def test_valid_tokens_write_as_their_subject_also_as_an_openeo_bearer(
    oidc_api: str, database: Database, issuer: Issuer
) -> None:
    campaign = _campaign(oidc_api, database, owners=("oidc:alice", "oidc:bob"))
    # Scopes from roles (Keycloak's realm_access.roles) as well as from `scope`.
    token = issuer.token(sub="alice", realm_access={"roles": ["tilekeeper:campaigns:write"]})
    change = {"changes": [{"tile": "T1", "status": "queued_for_start"}], "actor": "mallory"}
    done = httpx.post(f"{oidc_api}/campaigns/{campaign}/jobs/changes", json=change, headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert done.status_code == 200, done.text
    openeo_bearer = "oidc/egi/" + issuer.token(sub="bob", scope="tilekeeper:campaigns:write")
    change = {"changes": [{"tile": "T1", "status": "running"}]}
    done = httpx.post(f"{oidc_api}/campaigns/{campaign}/jobs/changes", json=change, headers={"Authorization": f"Bearer {openeo_bearer}"}, timeout=30)  # fmt: skip
    assert done.status_code == 200, done.text
    history = httpx.get(f"{oidc_api}/campaigns/{campaign}/jobs/T1/history", timeout=30).json()
    assert [h["by"] for h in history["history"]] == ["oidc:alice", "oidc:bob"]
    # A valid token with the scope that is not an owner changes nothing.
    carol = "Bearer " + issuer.token(sub="carol", scope="tilekeeper:campaigns:write")
    change = {"changes": [{"tile": "T1", "status": "finished"}]}
    refused = httpx.post(f"{oidc_api}/campaigns/{campaign}/jobs/changes", json=change, headers={"Authorization": carol}, timeout=30)  # fmt: skip
    assert refused.status_code == 403 and "not an owner" in refused.json()["description"]


def test_a_token_subject_owns_its_private_campaign(
    oidc_api: str, database: Database, issuer: Issuer
) -> None:
    carol = {"Authorization": "Bearer " + issuer.token(sub="carol", scope="tilekeeper:campaigns:write")}  # fmt: skip
    dave = {"Authorization": "Bearer " + issuer.token(sub="dave", scope="tilekeeper:campaigns:write")}  # fmt: skip
    campaign = f"oidc-private-{uuid.uuid4().hex[:6]}"
    made = httpx.post(f"{oidc_api}/campaigns", json={"id": campaign, "visibility": "private"}, headers=carol, timeout=30)  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["owners"] == ["oidc:carol"]
    assert httpx.get(f"{oidc_api}/campaigns/{campaign}", headers=carol, timeout=30).status_code == 200  # fmt: skip
    assert httpx.get(f"{oidc_api}/campaigns/{campaign}", headers=dave, timeout=30).status_code == 404  # fmt: skip
    # A presented token that is not valid is refused on reads too, not taken for anonymous.
    expired = {"Authorization": "Bearer " + issuer.token(sub="carol", exp=int(time.time()) - 120)}
    assert httpx.get(f"{oidc_api}/collections", headers=expired, timeout=30).status_code == 401


def test_a_logged_in_openeo_session_is_the_credential_and_is_refreshed(
    oidc_api: str, database: Database, issuer: Issuer
) -> None:
    from openeo.rest.auth.auth import OidcBearerAuth
    from openeo.rest.connection import connect

    from catalog_service.client.campaigns import Campaigns
    from catalog_service.client.credentials import OpenEOSession
    from catalog_service.client.http import HttpSession

    campaign = _campaign(oidc_api, database, owners=("oidc:erin",))
    connection = connect(issuer.url.split("/realms")[0] + "/openeo")
    stale = issuer.token(sub="erin", scope="tilekeeper:campaigns:write", exp=int(time.time()) - 300)
    connection.auth = OidcBearerAuth(provider_id="egi", access_token=stale)
    refreshed = []

    def refresh(**_: Any) -> bool:
        # What the client does with its refresh token store, minus the OIDC provider.
        connection.auth = OidcBearerAuth(provider_id="egi", access_token=issuer.token(sub="erin", scope="tilekeeper:campaigns:write"))  # fmt: skip
        refreshed.append(True)
        return True

    connection.try_access_token_refresh = refresh  # type: ignore[method-assign]  # a refresh without the provider
    campaigns = Campaigns(HttpSession(oidc_api, auth=OpenEOSession(connection)))
    campaigns.change(campaign, [{"tile": "T1", "status": "queued_for_start"}])
    assert refreshed == [True]
    history = campaigns.history(campaign, "T1")
    assert [h["by"] for h in history] == ["oidc:erin"]


def test_an_issuer_without_audiences_is_a_configuration_error(database: Database) -> None:
    from catalog_service.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="AUDIENCES"):
        start_api(database, auth=AuthSettings(oidc_issuer="http://127.0.0.1:1/x"))
