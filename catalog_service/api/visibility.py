"""Private campaigns: a campaign with ``visibility: private`` and its products exist only
for its owners and admin identities. To everybody else they do not exist: 404 on every
path that names them, and absent from every listing, search and aggregation."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Depends, FastAPI, Request
from stac_fastapi.api.routes import add_route_dependencies
from stac_fastapi.types.errors import NotFoundError

from catalog_service.api.auth import current_identity
from catalog_service.auth.keys import Identity
from catalog_service.jobs.campaign import CAMPAIGN_KEY
from catalog_service.products import campaign_products_id

# A collection id no collection can have (pgstac refuses ':' in ids): what a search
# restricted to nothing visible asks for, since an empty list means "all".
NO_COLLECTION = "tilekeeper:none"
# Path parameters that name a collection (a campaign is one); product files are keyed
# by their collection.
_PATH_NAMES = ("collection_id", "campaign_id")

_PRIVATE = f"""
SELECT id, content->'{CAMPAIGN_KEY}'->'owners' AS owners FROM pgstac.collections
WHERE content->'{CAMPAIGN_KEY}'->>'visibility' = 'private'
"""


def may_see(identity: Identity | None, owners: list[str] | None) -> bool:
    if identity is None:
        return False
    return "admin" in identity.scopes or identity.name in (owners or [])


async def hidden_collections(request: Request) -> frozenset[str]:
    """The collections the caller may not see (once per request)."""
    known: frozenset[str] | None = getattr(request.state, "hidden", None)
    if known is not None:
        return known
    identity = await current_identity(request)
    async with request.app.state.get_connection(request, "r") as conn:
        rows = await conn.fetch(_PRIVATE)
    hidden: set[str] = set()
    for row in rows:
        owners = row["owners"]
        if isinstance(owners, str):  # jsonb arrives as text unless a codec is set
            owners = json.loads(owners)
        if not may_see(identity, owners):
            hidden.update((row["id"], campaign_products_id(row["id"])))
    result = frozenset(hidden)
    request.state.hidden = result
    return result


async def visible_collections(request: Request, asked: list[str] | None) -> list[str] | None:
    """The ``collections`` a search or aggregation may use: what was asked for minus
    what is hidden (all visible ones when nothing was asked and something is hidden)."""
    hidden = await hidden_collections(request)
    if not hidden:
        return asked
    if asked:
        kept = [c for c in asked if c not in hidden]
    else:
        async with request.app.state.get_connection(request, "r") as conn:
            kept = [r["id"] for r in await conn.fetch("SELECT id FROM pgstac.collections")]
        kept = [c for c in kept if c not in hidden]
    return kept or [NO_COLLECTION]


async def _named_collection_visible(request: Request) -> None:
    names = [request.path_params.get(name) for name in _PATH_NAMES]
    key = request.path_params.get("key")
    if isinstance(key, str):
        names.append(key.split("/", 1)[0])
    named = [n for n in names if isinstance(n, str)]
    if named and set(named) & await hidden_collections(request):
        raise NotFoundError(f"no collection {named[0]!r}")


def hide_private_campaigns(app: FastAPI) -> None:
    """Every route that names a collection answers 404 for a hidden one. Call once all
    routes are added."""
    add_route_dependencies(
        app.router.routes,
        [{"path": "*", "method": "*"}],
        [Depends(_named_collection_visible)],
    )


def without_hidden(collections: list[Any], hidden: frozenset[str]) -> list[Any]:
    return [c for c in collections if not (isinstance(c, dict) and c.get("id") in hidden)]
