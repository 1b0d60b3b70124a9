"""OIDC bearer tokens: a JWT is accepted when its signature verifies against the
configured issuer's key set (JWKS) and its issuer, audience and times are right; its
scopes come from configurable claims. Signatures and claims are checked by joserfc."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from catalog_service.auth.keys import SCOPES, Identity
from catalog_service.errors import ConfigurationError
from catalog_service.settings import AuthSettings

# How long a fetched key set is used before it is fetched again; an unknown key id
# fetches it at once (a rotation), but not more often than this.
JWKS_TTL_S = 600.0
REFETCH_AFTER_S = 30.0
OPENEO_PREFIX = "oidc/"


class TokenRefused(Exception):
    """A token that is not valid here; the message says why."""


def unwrap_openeo_bearer(token: str) -> str:
    """The JWT inside an openEO bearer ``oidc/<provider>/<jwt>`` (else the token)."""
    if token.startswith(OPENEO_PREFIX):
        _, _, rest = token.partition("/")
        _, _, jwt_part = rest.partition("/")
        return jwt_part
    return token


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class OidcVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        if not settings.oidc_issuer:
            raise ConfigurationError("no OIDC issuer configured")
        if not settings.oidc_audiences:
            raise ConfigurationError(
                "TILEKEEPER_AUTH_OIDC_AUDIENCES is required with an OIDC issuer: "
                "tokens minted for other clients must not be accepted"
            )
        self.settings = settings
        self.issuer = settings.oidc_issuer
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def _jwks_url(self, client: httpx.AsyncClient) -> str:
        if self.settings.oidc_jwks_url:
            return self.settings.oidc_jwks_url
        found = await client.get(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
        found.raise_for_status()
        return str(found.json()["jwks_uri"])

    async def key_set(self, refresh: bool = False) -> KeySet:
        async with self._lock:
            age = time.monotonic() - self._fetched
            stale = self._keys is None or age > JWKS_TTL_S or (refresh and age > REFETCH_AFTER_S)
            if stale:
                try:
                    async with httpx.AsyncClient(timeout=10) as client:
                        response = await client.get(await self._jwks_url(client))
                        response.raise_for_status()
                        self._keys = KeySet.import_key_set(response.json())
                except (httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
                    if self._keys is None:
                        raise TokenRefused(f"the issuer's keys cannot be read now ({exc})") from exc
                self._fetched = time.monotonic()
            assert self._keys is not None
            return self._keys

    async def identify(self, token: str) -> Identity:
        """The identity of a valid token; TokenRefused says what is wrong."""
        value = unwrap_openeo_bearer(token)
        algorithms = list(self.settings.oidc_algorithms)
        try:
            decoded = jwt.decode(value, await self.key_set(), algorithms=algorithms)
        except (JoseError, ValueError):
            try:  # perhaps signed with a key the issuer rotated in since the last fetch
                decoded = jwt.decode(value, await self.key_set(refresh=True), algorithms=algorithms)
            except (JoseError, ValueError) as exc:
                raise TokenRefused(
                    f"the token is not a JWT signed by {self.issuer} ({exc})"
                ) from None
        registry = jwt.JWTClaimsRegistry(
            leeway=self.settings.oidc_leeway_s,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "values": list(self.settings.oidc_audiences)},
            exp={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise TokenRefused(f"the token is not accepted here ({exc})") from None
        name = decoded.claims.get(self.settings.oidc_name_claim)
        if not isinstance(name, str) or not name:
            raise TokenRefused(f"the token has no {self.settings.oidc_name_claim!r} claim")
        return Identity(f"oidc:{name}", "", self.scopes(decoded.claims))

    def scopes(self, claims: dict[str, Any]) -> frozenset[str]:
        values: set[str] = set()
        for path in self.settings.oidc_scope_claims:
            found = _claim(claims, path)
            if isinstance(found, str):
                values.update(found.split())
            elif isinstance(found, list):
                values.update(v for v in found if isinstance(v, str))
        prefix = self.settings.oidc_scope_prefix
        return frozenset(
            scope for scope in SCOPES if scope in values or (prefix and prefix + scope in values)
        )
