"""Who calls, and write access: a FastAPI dependency per scope. A credential comes as
``Authorization: Bearer <token>`` (an API key ``tk_...``, an OIDC JWT, or an openEO
bearer ``oidc/<provider>/<jwt>``) or ``X-API-Key: tk_...``; one that is presented is
always checked (401 when not valid; 403 without the route's scope). Whether a request
without one may write is the ``TILEKEEPER_API_REQUIRE_KEYS`` setting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute, iter_route_contexts
from stac_fastapi.api.app import StacApi

from catalog_service.auth import keys
from catalog_service.auth.oidc import (
    OidcVerifier,
    TokenRefused,
    looks_like_jwt,
    unwrap_openeo_bearer,
)
from catalog_service.ids import PRODUCTS_SUFFIX
from catalog_service.settings import AuthSettings

COLLECTION_CREATE = {"path": "/collections", "method": "POST"}
STAC_WRITES = [
    COLLECTION_CREATE,
    {"path": "/collections/{collection_id}", "method": "PUT"},
    {"path": "/collections/{collection_id}", "method": "PATCH"},
    {"path": "/collections/{collection_id}", "method": "DELETE"},
    {"path": "/collections/{collection_id}/items", "method": "POST"},
    {"path": "/collections/{collection_id}/items/{item_id}", "method": "PUT"},
    {"path": "/collections/{collection_id}/items/{item_id}", "method": "PATCH"},
    {"path": "/collections/{collection_id}/items/{item_id}", "method": "DELETE"},
    {"path": "/collections/{collection_id}/bulk_items", "method": "POST"},
]


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header:
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise _unauthorized("the Authorization header must be `Bearer <API key>`")
        return value.strip()
    return request.headers.get("x-api-key") or None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


_UNRESOLVED = object()


async def current_identity(request: Request) -> keys.Identity | None:
    """Who sent the request: None without a credential; 401 for one that is presented
    but not valid (also on reads: a caller who meant to be someone is told)."""
    known = getattr(request.state, "identity", _UNRESOLVED)
    if known is not _UNRESOLVED:
        return cast(keys.Identity | None, known)
    token = _token(request)
    identity = None if token is None else await _identify(request, token)
    request.state.identity = identity
    return identity


async def _identify(request: Request, token: str) -> keys.Identity:
    verifier: OidcVerifier | None = request.app.state.oidc
    if token.startswith(keys.PREFIX):
        # From the primary: a key revoked there stops now, not after a replica's lag.
        async with request.app.state.get_connection(request, "w") as conn:
            identity = await keys.identify(conn, token)
        if identity is None:
            raise _unauthorized("unknown, expired or revoked API key")
        return identity
    if verifier is not None and looks_like_jwt(unwrap_openeo_bearer(token)):
        try:
            return await verifier.identify(token)
        except TokenRefused as exc:
            raise _unauthorized(str(exc)) from None
    accepted = "an API key (tk_...) or an OIDC token" if verifier else "an API key (tk_...)"
    raise _unauthorized(f"the credential is not {accepted}")


def require(scope: str) -> Callable[[Request], Awaitable[keys.Identity | None]]:
    """The dependency of a write route needing ``scope``: the caller's identity (None
    for an anonymous write where keys are not required)."""

    async def check(request: Request) -> keys.Identity | None:
        identity = await current_identity(request)
        if identity is None:
            if request.app.state.require_keys:
                raise _unauthorized(
                    f"this write needs a credential (API key or token) with the scope {scope}"
                )
            return None
        if not identity.may(scope):
            raise HTTPException(403, f"{identity.name} lacks the scope {scope}")
        return identity

    return check


def protect_routes(
    app: FastAPI, api: StacApi, require_keys: bool, auth: AuthSettings | None = None
) -> None:
    """Every write route gets its scope: STAC transactions and bulk writes need
    ``stac:write``; our routers declare theirs on each route."""
    app.state.require_keys = require_keys
    auth = auth or AuthSettings()
    app.state.oidc = OidcVerifier(auth) if auth.oidc_issuer else None
    others = [route for route in STAC_WRITES if route != COLLECTION_CREATE]
    api.add_route_dependencies(others, [Depends(require("stac:write"))])  # type: ignore[arg-type]
    api.add_route_dependencies([COLLECTION_CREATE], [Depends(require_collection_create)])  # type: ignore[list-item]


async def require_collection_create(request: Request) -> keys.Identity | None:
    """POST /collections needs ``stac:write``, except for a campaign's own product
    collection (``X-products``), which its runner creates on the first harvest with
    ``products:write`` (that it is an owner of X is checked on creation, clients.py)."""
    identity = await current_identity(request)
    if identity is not None and identity.may("products:write"):
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and str(body.get("id", "")).endswith(PRODUCTS_SUFFIX):
            return identity
    return await require("stac:write")(request)


# POST routes that only read: a search or an aggregation in the body.
READ_POST_SUFFIXES = ("/search", "/aggregate", "/aggregations")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# The raster service's POSTs carry a feature to read under (api/raster.py).
READ_POST_PREFIX = "/raster/"


def writes(method: str, path: str) -> bool:
    """Whether a route (its method and path template) writes."""
    return (
        method not in READ_METHODS
        and not path.endswith(READ_POST_SUFFIXES)
        and not path.startswith(READ_POST_PREFIX)
    )


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every API route, for tests and docs (included routers
    are nested in FastAPI's route list: walked through their contexts)."""
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.path:
            found.update((method, context.path) for method in context.methods or ())
    return sorted(found, key=lambda route: (route[1], route[0]))


def write_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route that writes."""
    return sorted((method, path) for method, path in api_routes(app) if writes(method, path))


def actor_of(request: Request, claimed: str) -> str:
    """Who the history records: the key's identity; a name the client merely claims is
    marked unverified (an anonymous write where keys are not required)."""
    identity = getattr(request.state, "identity", None)
    return identity.name if isinstance(identity, keys.Identity) else f"unverified:{claimed}"
