"""Exports of a collection for dissemination: a self-contained static catalog (relative
links; asset hrefs kept, or the files copied in), stac-geoparquet, or an ndjson item
collection. Items are read page by page from the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import requests

from catalog_service.client.http import HttpSession
from catalog_service.errors import TilekeeperError

PAGE = 500


def iter_items(http: HttpSession, collection: str) -> Iterator[dict[str, Any]]:
    page: dict[str, Any] = http.get(f"collections/{collection}/items", params={"limit": PAGE})
    while True:
        yield from page.get("features", [])
        nxt = next((link for link in page.get("links", []) if link.get("rel") == "next"), None)
        if not nxt:
            return
        page = http.session.get(nxt["href"], timeout=60).json()


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop the API's own links; pystac writes the static ones."""
    api_rels = {"self", "root", "parent", "collection", "items", "next", "prev", "queryables"}
    return {
        **obj,
        "links": [link for link in obj.get("links", []) if link.get("rel") not in api_rels],
    }


def export_collection(
    http: HttpSession, collection: str, dest: Path, fmt: str, with_assets: bool = False
) -> int:
    items = list(iter_items(http, collection))
    if fmt == "ndjson":
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("w") as f:
            for item in items:
                f.write(json.dumps(item) + "\n")
        return len(items)
    if fmt == "geoparquet":
        import stac_geoparquet.arrow

        if not items:
            raise TilekeeperError(f"collection {collection} has no items to export")
        table = stac_geoparquet.arrow.parse_stac_items_to_arrow(items)
        dest.parent.mkdir(parents=True, exist_ok=True)
        stac_geoparquet.arrow.to_parquet(table, dest)
        return len(items)
    if fmt != "static":
        raise TilekeeperError(f"unknown export format {fmt!r}: static, geoparquet or ndjson")
    coll = pystac.Collection.from_dict(_clean(http.get(f"collections/{collection}")), migrate=False)
    catalog = pystac.Catalog(id=f"{collection}-export", description=f"Export of {collection}")
    catalog.add_child(coll)
    for raw in items:
        coll.add_item(pystac.Item.from_dict(_clean(raw), migrate=False))
    catalog.normalize_hrefs(str(dest))
    if with_assets:
        for stac_item in coll.get_items():
            folder = Path(stac_item.get_self_href() or dest).parent
            for key, asset in stac_item.assets.items():
                name = f"{key}{Path(asset.href.split('?')[0]).suffix}"
                _download(http, asset.href, folder / name)
                asset.href = name
                asset.extra_fields["file:local_path"] = name
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return len(items)


def _download(http: HttpSession, href: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with http.session.get(href, stream=True, timeout=120) as response:
            response.raise_for_status()
            with target.open("wb") as f:
                for chunk in response.iter_content(1 << 20):  # decoded, unlike .raw
                    f.write(chunk)
    except requests.RequestException as exc:
        raise TilekeeperError(f"cannot download {href}: {exc}") from exc
