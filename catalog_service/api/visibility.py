"""Who may see and who may change a collection, as one rule applied to every route.

- A private campaign and its product collection (``X-products``) exist only for the
  campaign's owners and admin identities. To everybody else they do not exist: the very
  answer a missing one gets on every path that names them (status, body, headers), and
  absent from every listing, search, count and aggregation (excluded inside the query).
- A campaign's owners (or an admin) alone change it: its definition, tiles, jobs,
  workers, harvest state and products. Its product collection ``X-products`` is its own:
  nobody else may create, change or fill it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from stac_fastapi.api.routes import add_route_dependencies
from stac_fastapi.types.errors import NotFoundError

from catalog_service.api.auth import current_identity, writes
from catalog_service.api.raster_limits import RasterRoute
from catalog_service.auth.keys import Identity
from catalog_service.database.jsonb import decoded
from catalog_service.ids import PRODUCTS_SUFFIX
from catalog_service.jobs.campaign import CAMPAIGN_KEY

# A collection id no collection can have (pgstac refuses ':' in ids): what a search
# restricted to nothing visible asks for, since an empty list means "all".
NO_COLLECTION = "tilekeeper:none"

_PRIVATE = f"""
SELECT id, content->'{CAMPAIGN_KEY}'->'owners' AS owners FROM pgstac.collections
WHERE content->'{CAMPAIGN_KEY}'->>'visibility' = 'private'
"""
# A collection and, for a product collection, the campaign it belongs to.
_NAMED = f"""
SELECT c.id, c.content->'{CAMPAIGN_KEY}' AS campaign, p.content->'{CAMPAIGN_KEY}' AS owner
FROM (SELECT $1::text AS id) AS asked
LEFT JOIN pgstac.collections c ON c.id = asked.id
LEFT JOIN pgstac.collections p ON p.id = $2 AND p.content ? '{CAMPAIGN_KEY}'
"""


def may_see(identity: Identity | None, owners: list[str] | None) -> bool:
    if identity is None:
        return False
    return "admin" in identity.scopes or identity.name in (owners or [])


def is_owner(identity: Identity | None, campaign: dict[str, Any] | None) -> bool:
    if identity is None or campaign is None:
        return False
    return "admin" in identity.scopes or identity.name in (campaign.get("owners") or [])


def owning_campaign_id(collection_id: str) -> str | None:
    """The campaign whose product collection ``collection_id`` would be."""
    if collection_id.endswith(PRODUCTS_SUFFIX) and len(collection_id) > len(PRODUCTS_SUFFIX):
        return collection_id[: -len(PRODUCTS_SUFFIX)]
    return None


def missing_collection(collection_id: str) -> NotFoundError:
    return NotFoundError(f"Collection {collection_id} does not exist.")


def missing_campaign(campaign_id: str) -> NotFoundError:
    return NotFoundError(f"Campaign {campaign_id} does not exist.")


@dataclass(frozen=True)
class Named:
    """One collection a request names, with the campaign that governs it (itself for a
    campaign, the campaign ``X`` for ``X-products``; None for a plain collection)."""

    id: str
    exists: bool
    is_campaign: bool
    governing: dict[str, Any] | None

    def visible_to(self, identity: Identity | None) -> bool:
        governing = self.governing
        if governing is None or governing.get("visibility") != "private":
            return True
        return may_see(identity, governing.get("owners"))


async def named_collection(request: Request, collection_id: str) -> Named:
    owner_id = owning_campaign_id(collection_id)
    # Who may see what is read from the primary (not a lagging replica), as keys are.
    async with request.app.state.get_connection(request, "w") as conn:
        row = await conn.fetchrow(_NAMED, collection_id, owner_id)
    campaign = decoded(row["campaign"])
    governing = campaign if campaign is not None else decoded(row["owner"])
    return Named(collection_id, row["id"] is not None, campaign is not None, governing)


async def hidden_collections(request: Request) -> frozenset[str]:
    """The collections the caller may not see (once per request)."""
    known: frozenset[str] | None = getattr(request.state, "hidden", None)
    if known is not None:
        return known
    identity = await current_identity(request)
    async with request.app.state.get_connection(request, "w") as conn:  # the primary's word
        rows = await conn.fetch(_PRIVATE)
    hidden: set[str] = set()
    for row in rows:
        if not may_see(identity, decoded(row["owners"])):
            hidden.update((row["id"], f"{row['id']}{PRODUCTS_SUFFIX}"))
    result = frozenset(hidden)
    request.state.hidden = result
    return result


async def visible_collections(request: Request, asked: list[str] | None) -> list[str] | None:
    """The ``collections`` a search or aggregation may use: what was asked for with each
    hidden one in the place a missing one would be (all visible ones when nothing was
    asked and something is hidden)."""
    hidden = await hidden_collections(request)
    if not hidden:
        return asked
    if asked:
        # Put in the place of, not dropped: a hidden and a missing collection beside a
        # campaign must take the same path to the same answer (dropped, the hidden one
        # left a one-campaign search, answered exactly, where a missing one went to
        # pgstac's estimate: an outside tester told them apart by the counts).
        return [NO_COLLECTION if c in hidden else c for c in asked]
    else:
        async with request.app.state.get_connection(request, "r") as conn:
            kept = [r["id"] for r in await conn.fetch("SELECT id FROM pgstac.collections")]
        kept = [c for c in kept if c not in hidden]
    return kept or [NO_COLLECTION]


def excluding(filter_json: dict[str, Any] | None, hidden: frozenset[str]) -> dict[str, Any]:
    """A CQL2-JSON filter that also excludes the ``hidden`` collection ids."""
    exclusion = {"op": "not", "args": [{"op": "in", "args": [{"property": "id"}, sorted(hidden)]}]}
    return exclusion if filter_json is None else {"op": "and", "args": [filter_json, exclusion]}


def shown_campaign(campaign: dict[str, Any], identity: Identity | None) -> dict[str, Any]:
    """A campaign definition as ``identity`` may read it: webhook URLs carry their
    receivers' secrets, so others see only their scheme and host."""
    notify = campaign.get("notify")
    if is_owner(identity, campaign) or not isinstance(notify, dict):
        return campaign
    hooks = [_redacted(url) for url in notify.get("webhooks") or [] if isinstance(url, str)]
    return {**campaign, "notify": {**notify, "webhooks": hooks}}


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/(hidden)"


def shown_collection(collection: Any, identity: Identity | None) -> Any:
    """A collection as ``identity`` may read it (a campaign's definition redacted)."""
    if isinstance(collection, dict) and isinstance(collection.get(CAMPAIGN_KEY), dict):
        return {**collection, CAMPAIGN_KEY: shown_campaign(collection[CAMPAIGN_KEY], identity)}
    return collection


async def _guard(request: Request) -> None:
    """Every route naming a collection or campaign: 404 alike for a missing and a hidden
    one; a write to a campaign (or its products) by someone who is not an owner: 403."""
    route = request.scope.get("route")
    template = getattr(route, "path", "")
    identity = await current_identity(request)
    # The raster service's POSTs carry a feature to read under: reads.
    writing = writes(request.method, template) and not isinstance(route, RasterRoute)
    campaign_id = request.path_params.get("campaign_id")
    collection_id = request.path_params.get("collection_id")
    if isinstance(campaign_id, str):
        named = await named_collection(request, campaign_id)
        if not named.is_campaign or not named.visible_to(identity):
            raise missing_campaign(campaign_id)
        if writing:
            require_owner(request, identity, named.governing, campaign_id)
    if isinstance(collection_id, str):
        named = await named_collection(request, collection_id)
        if not named.visible_to(identity):
            raise missing_collection(collection_id)
        if not named.exists:
            raise missing_collection(collection_id)
        if writing and named.governing is not None:
            require_owner(
                request,
                identity,
                named.governing,
                owning_campaign_id(collection_id) or collection_id,
            )


def may_change(
    request: Request, identity: Identity | None, campaign: dict[str, Any] | None
) -> bool:
    if identity is None and not request.app.state.require_keys:
        return True  # a throw-away service where anonymous writes are allowed
    return is_owner(identity, campaign)


def require_owner(
    request: Request, identity: Identity | None, campaign: dict[str, Any] | None, name: str
) -> None:
    """403 unless the caller may change campaign ``name``."""
    if not may_change(request, identity, campaign):
        who = identity.name if identity else "an anonymous caller"
        raise HTTPException(
            403,
            f"{who} is not an owner of campaign {name}: only its owners (or an admin) may "
            "change it, its jobs or its products",
        )


def guard_named_collections(app: FastAPI) -> None:
    """Apply the rule to every route. Call once all routes are added."""
    add_route_dependencies(
        app.router.routes,
        [{"path": "*", "method": "*"}],
        [Depends(_guard)],
    )
