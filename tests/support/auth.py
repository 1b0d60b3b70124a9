"""What the API's write routes take, for the tests of who may call them."""

from __future__ import annotations

from typing import Any


def write_requests(campaign: str, collection: str) -> list[tuple[str, str, str, Any]]:
    """(scope, method, path, body) for every write route."""
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "i1", "collection": collection,
            "geometry": {"type": "Point", "coordinates": [4, 50]}, "bbox": [4, 50, 4, 50],
            "properties": {"datetime": "2024-06-01T00:00:00Z"}, "links": [], "assets": {}}  # fmt: skip
    coll = {"type": "Collection", "id": collection, "stac_version": "1.1.0", "description": "d",
            "license": "other", "links": [], "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [[None, None]]}}}  # fmt: skip
    c, k = f"/collections/{collection}", f"/campaigns/{campaign}"
    return [
        ("stac:write", "POST", "/collections", coll),
        ("stac:write", "PUT", c, coll),
        ("stac:write", "PATCH", c, {"description": "e"}),
        ("stac:write", "POST", f"{c}/items", item),
        ("stac:write", "PUT", f"{c}/items/i1", item),
        ("stac:write", "PATCH", f"{c}/items/i1", {"properties": {"x": 1}}),
        ("stac:write", "DELETE", f"{c}/items/i1", None),
        ("stac:write", "POST", f"{c}/bulk_items", {"items": {"i2": {**item, "id": "i2"}}}),
        ("stac:write", "DELETE", c, None),
        (
            "campaigns:write",
            "POST",
            "/campaigns",
            {
                "id": f"{campaign}-x",
                "grid": "utm-20km",
                "temporal_extent": ["2024-03-01", "2024-09-30"],
            },
        ),
        ("campaigns:write", "POST", f"{k}/tiles", {"tiles": []}),
        (
            "campaigns:write",
            "POST",
            f"{k}/jobs/changes",
            {"changes": [{"tile": "T1", "status": "queued_for_start"}]},
        ),
        ("campaigns:write", "PUT", f"{k}/workers/w1", {"lease_s": 30}),
        (
            "campaigns:write",
            "POST",
            f"{k}/workers/w1/claim",
            {"statuses": ["not_started"], "limit": 1, "lease_s": 30},
        ),
        ("campaigns:write", "DELETE", f"{k}/workers/w1", None),
        ("campaigns:write", "POST", f"{k}/reset", {}),
        (
            "products:write",
            "POST",
            f"/collections/{collection}/products",
            {"writes": [{"items": [item]}]},
        ),
        ("products:write", "PUT", f"{k}/jobs/T1/product", {"state": "pending"}),
        ("campaigns:write", "PATCH", k, {"description": "changed"}),
        ("campaigns:write", "DELETE", k, None),
    ]
