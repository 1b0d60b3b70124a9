"""Product files the catalogue does not know: files in a campaign's product folder of the
store that no product item (latest or older version) points to. A catalogue restored
from an older backup leaves them (products harvested after the backup), and so does a
harvest killed between its file writes and its catalogue write. ``tilekeeper campaign
recover`` lists them and registers those of finished tiles again (ingest/reuse.py);
nothing here deletes a file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from catalog_service.client.http import ApiError, HttpSession
from ingest.export import iter_items
from ingest.store import LOCAL_FILES_PATH, ProductStore

# Files of one collection looked at at most (a 100,000-tile campaign's COGs and thumbnails).
MAX_FILES = 1_000_000
# A product of several dates is ``{tile}_{YYYYMMDD}`` (ingest/sources.dated_id).
_DATED = re.compile(r"^(?P<tile>.+)_\d{8}$")


@dataclass(frozen=True)
class Orphan:
    key: str
    product: str
    tile: str


def _normal(href: str) -> str:
    """An asset href as a key's href compares with it: the local store's are served
    absolute (resolved against the request) but stored relative to the API's root."""
    at = href.find(LOCAL_FILES_PATH + "/")
    return unquote(href[at:] if at >= 0 else href)


def referenced(http: HttpSession, collection: str) -> set[str]:
    """Every asset href of the collection's items, older versions included."""
    hrefs: set[str] = set()
    try:
        for item in iter_items(http, collection):
            assets: dict[str, Any] = item.get("assets") or {}
            hrefs.update(_normal(str(a.get("href", ""))) for a in assets.values())
    except ApiError as exc:
        if exc.status != 404:  # no collection yet: nothing is referenced
            raise
    return hrefs


def tile_of(product: str, tiles: set[str]) -> str:
    """The campaign tile a product id belongs to."""
    if product in tiles:
        return product
    dated = _DATED.match(product)
    return dated["tile"] if dated and dated["tile"] in tiles else product


def orphans(
    http: HttpSession, store: ProductStore, collection: str, tiles: set[str]
) -> list[Orphan]:
    """The collection's stored files no item points to (thumbnails included)."""
    known = referenced(http, collection)
    found = []
    for key in store.keys(collection, MAX_FILES):
        if _normal(store.href(key)) in known:
            continue
        parts = key.split("/")
        product = parts[1] if len(parts) > 2 else ""
        found.append(Orphan(key, product, tile_of(product, tiles)))
    return found
