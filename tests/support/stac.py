"""STAC documents for tests: items, collections, bulk writes."""

from __future__ import annotations

from typing import Any

import httpx


def make_item(
    item_id: str,
    collection: str,
    lon: float = 4.0,
    lat: float = 50.0,
    size: float = 0.1,
    **properties: Any,
) -> dict[str, Any]:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": collection,
        "bbox": [lon, lat, lon + size, lat + size],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"datetime": "2025-01-01T00:00:00Z", **properties},
        "links": [],
        "assets": {},
    }


def make_collection(collection_id: str) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": "test collection",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2025-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


def bulk(
    http: httpx.Client, collection_id: str, items: list[dict[str, Any]], method: str = "insert"
) -> httpx.Response:
    return http.post(
        f"/collections/{collection_id}/bulk_items",
        json={"method": method, "items": {item["id"]: item for item in items}},
    )
