"""A small, deterministic sample collection: 25 tile jobs in a 5x5 block near Brussels,
with a status and back-end mix, so a fresh API has something to browse and count."""

from __future__ import annotations

from typing import Any

SAMPLE_COLLECTION_ID = "sample-tiles"
_STATUSES = ("finished", "finished", "running", "queued", "error", "not_started")
_BACKENDS = ("backend-a", "backend-b")
_DATETIME = "2025-01-01T00:00:00Z"


def sample_collection() -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": SAMPLE_COLLECTION_ID,
        "title": "Sample tile jobs",
        "description": "25 sample tile jobs near Brussels, loaded by `tilekeeper demo`.",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[4.0, 50.5, 5.0, 51.0]]},
            "temporal": {"interval": [[_DATETIME, "2025-12-31T23:59:59Z"]]},
        },
        "links": [],
    }


def sample_items() -> list[dict[str, Any]]:
    items = []
    for i in range(5):
        for j in range(5):
            n = i * 5 + j
            west, south = 4.0 + 0.2 * i, 50.5 + 0.1 * j
            east, north = west + 0.2, south + 0.1
            status = _STATUSES[n % len(_STATUSES)]
            props: dict[str, Any] = {
                "datetime": _DATETIME,
                "status": status,
                "grid:code": f"SAMPLE-{i}_{j}",
            }
            if status != "not_started":
                props["backend_name"] = _BACKENDS[n % 2]
                props["id"] = f"j-sample-{n:03d}"
            items.append(
                {
                    "type": "Feature",
                    "stac_version": "1.1.0",
                    "id": f"tile_{i}_{j}",
                    "collection": SAMPLE_COLLECTION_ID,
                    "bbox": [west, south, east, north],
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [
                            [
                                [west, south],
                                [east, south],
                                [east, north],
                                [west, north],
                                [west, south],
                            ]
                        ],
                    },
                    "properties": props,
                    "links": [],
                    "assets": {},
                }
            )
    return items
