"""A campaign's pages of tiles, read through its indexes (database/campaign_search.py)
and linked here, for the searches its users make most: its tiles by status, a page of
its items, one tile.

Upstream builds each item's links with a dozen ``urljoin`` calls and attrs objects: half
of the API's time on a page of 100 items (profiled under load). This module makes the
same links, in the same order, with string joins where a path needs no resolving
(``urljoin`` otherwise), and the page's paging links with upstream's own ``PagingLinks``.
Every other search (None from here) goes to pgstac through upstream unchanged."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

from fastapi import Request
from stac_fastapi.pgstac.models.links import INFERRED_LINK_RELS, PagingLinks
from stac_fastapi.types.requests import get_base_url

_PAGE_SQL = "SELECT tilekeeper_search.campaign_page($1::text::jsonb)"
# A path whose segments a base URL ending in "/" takes as they are.
_PLAIN_PATH = re.compile(r"(?:[A-Za-z0-9_~-][A-Za-z0-9_.~-]*/)*[A-Za-z0-9_~-][A-Za-z0-9_.~-]*")


def resolved(base_url: str, path: str) -> str:
    """``urljoin(base_url, path)``, without its cost where the answer is a plain join."""
    if base_url.endswith("/") and _PLAIN_PATH.fullmatch(path) and "/../" not in f"/{path}/":
        return base_url + path
    return urljoin(base_url, path)


def item_links(
    base_url: str, collection_id: Any, item_id: Any, extra: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The links upstream's ItemLinks gives an item: collection, parent, root, self, then
    the item's own (their hrefs resolved) except those the server infers."""
    collection_href = resolved(base_url, f"collections/{collection_id}")
    links = [
        {"rel": "collection", "type": "application/json", "href": collection_href},
        {"rel": "parent", "type": "application/json", "href": collection_href},
        {"rel": "root", "type": "application/json", "href": base_url},
        {
            "rel": "self",
            "type": "application/geo+json",
            "href": resolved(base_url, f"collections/{collection_id}/items/{item_id}"),
        },
    ]
    links += [
        {**link, "href": urljoin(base_url, str(link["href"]))}
        for link in extra or []
        if link["rel"] not in INFERRED_LINK_RELS
    ]
    return links


def _token(page: dict[str, Any], rel: str) -> str | None:
    for link in page.get("links", []):
        if link.get("rel") == rel:
            return str(link["href"]).split(f"token={rel}:")[1]
    return None


async def campaign_page(request: Request, search: Any) -> dict[str, Any] | None:
    """The page of a search the campaign's indexes answer, as upstream would answer it;
    None for any other search."""
    if request.app.state.settings.use_api_hydrate or len(search.collections or []) != 1:
        return None
    search.conf = {**(search.conf or {}), "nohydrate": False}
    body = search.model_dump_json(exclude_none=True, by_alias=True)
    async with request.app.state.get_connection(request, "r") as conn:
        page: dict[str, Any] | None = await conn.fetchval(_PAGE_SQL, body)
    if page is None:
        return None
    fields = getattr(search, "fields", None)
    exclude = fields.exclude if fields and fields.exclude else set()
    base_url = get_base_url(request)
    for item in page["features"]:
        collection_id, item_id = item.get("collection"), item.get("id")
        # Upstream's condition, as written there.
        if not exclude or ("links" not in exclude and collection_id and item_id):
            item["links"] = item_links(base_url, collection_id, item_id, item.get("links"))
    page["links"] = await PagingLinks(
        request=request, next=_token(page, "next"), prev=_token(page, "prev")
    ).get_links()
    return page
