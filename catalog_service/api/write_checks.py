"""Checks of what a write sends, before anything is stored: ids, geometries, string
lengths, what STAC requires, and that a raw collection does not pose as a campaign.
Every write path (STAC transactions, bulk writes, product writes) uses these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import HTTPException, Request

from catalog_service import geojson_check
from catalog_service.api.limits import string_limit_problem
from catalog_service.database.queryables import value_problem
from catalog_service.ids import id_problem
from catalog_service.jobs.campaign import CAMPAIGN_KEY


def refuse_campaign_definition(body: Any) -> None:
    text = body if isinstance(body, str) else repr(body)
    if CAMPAIGN_KEY in text:
        raise HTTPException(
            400, f"`{CAMPAIGN_KEY}` is made by POST /campaigns, not by a collection write"
        )


def check_item(request: Request, item: Any) -> None:
    """An item (request model) as the catalogue stores it: id rule, geometry, strings."""
    check_item_shape(plain(item) if item is not None else {}, max_chars(request))


def max_chars(request: Request) -> int:
    limit: int = request.app.state.api_settings.max_string_chars
    return limit


def check_collection(request: Request, collection: Any) -> None:
    body = plain(collection)
    problem = id_problem(body.get("id"), "collection id") or string_limit_problem(
        body, max_chars(request), "collection"
    )
    if problem:
        raise HTTPException(400, problem)


def plain(value: Any) -> Any:
    """A request model as plain JSON values."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


COLLECTION_REQUIRED = ("type", "stac_version", "id", "description", "links", "license", "extent")
ITEM_REQUIRED = ("type", "stac_version", "id", "properties", "links", "assets")


def keeps_required(patch: Any, required: tuple[str, ...]) -> None:
    """A patch may not remove (or null) what STAC requires: the stored object would be
    invalid and every later read of it would fail its schema."""
    if isinstance(patch, dict):
        gone = [key for key in required if key in patch and patch[key] is None]
    else:
        gone = [
            op.get("path", "").strip("/")
            for op in patch
            if isinstance(op, dict)
            and op.get("path", "").strip("/") in required
            and (op.get("op") in ("remove", "move") or op.get("value", ...) is None)
        ]
    if gone:
        raise HTTPException(400, f"a patch may not remove required fields: {', '.join(gone)}")


def patched_geometry_is_storable(patch: Any) -> None:
    """A patch sets an item's geometry whole, to a geometry that can be stored."""
    if isinstance(patch, dict):
        if "geometry" in patch:
            reason = geojson_check.problem(patch["geometry"])
            if reason:
                raise HTTPException(400, f"geometry: {reason}")
        return
    for op in patch:
        if not isinstance(op, dict):
            continue
        path = str(op.get("path", ""))
        if path == "/geometry" and op.get("op") in ("add", "replace"):
            reason = geojson_check.problem(op.get("value"))
            if reason:
                raise HTTPException(400, f"geometry: {reason}")
        elif path.startswith("/geometry") or str(op.get("from", "")).startswith("/geometry"):
            raise HTTPException(
                400,
                "a patch replaces the geometry whole "
                '({"op": "replace", "path": "/geometry", "value": {...}})',
            )


def same_id(request: Request, body_id: Any) -> None:
    path_id = request.path_params.get("collection_id")
    if body_id is not None and path_id is not None and body_id != path_id:
        raise HTTPException(400, f"the body's id {body_id!r} differs from the path's {path_id!r}")


def check_item_shape(item: Any, limit: int) -> None:
    """What pgstac needs of a raw item, checked before anything is written."""
    if not isinstance(item, dict):
        raise HTTPException(400, "an item must be a JSON object")
    bad = id_problem(item.get("id"), "item id") or string_limit_problem(
        item, limit, f"item {item.get('id')}"
    )
    if bad:
        raise HTTPException(400, bad)
    if item.get("type") != "Feature":
        raise HTTPException(400, "`type` must be 'Feature'")
    geometry = item.get("geometry")
    if geometry is not None:
        reason = geojson_check.problem(geometry)
        if reason:
            raise HTTPException(400, f"item {item['id']}: {reason}")
    props = item.get("properties")
    if not isinstance(props, dict):
        raise HTTPException(400, "`properties` must be an object")
    if typed := value_problem(props, f"item {item['id']}"):
        raise HTTPException(400, typed)
    stamps = (
        [props.get("datetime")]
        if props.get("datetime")
        else [props.get("start_datetime"), props.get("end_datetime")]
    )
    if not all(stamps):
        raise HTTPException(
            400, "`properties.datetime` (or both start_datetime and end_datetime) is required"
        )
    for stamp in stamps:
        try:
            datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            raise HTTPException(400, f"{stamp!r} is not an RFC 3339 datetime") from None


_IDENTITY = ("id", "collection")


def keeps_identity(patch: Any) -> None:
    """A JSON Patch may not touch what names the record (``/id``, ``/collection``):
    upstream writes the patched document under its new id, over whatever holds it."""
    if not isinstance(patch, list):
        return
    for op in patch:
        if not isinstance(op, dict) or op.get("op") == "test":
            continue
        for key in ("path", "from"):
            if key not in op:
                continue
            target = str(op[key]).strip("/").split("/", 1)[0]
            if target in _IDENTITY or (key == "path" and not target):
                # The root path ("") would replace the whole document, id included.
                raise HTTPException(400, f"a patch may not change /{target}")


def check_collection_patch(request: Request, patch: Any) -> None:
    """A collection patch (plain JSON): no campaign definition, nothing STAC requires
    removed, the id kept, no over-long string."""
    refuse_campaign_definition(patch)
    keeps_identity(patch)
    keeps_required(patch, COLLECTION_REQUIRED)
    _short_strings(request, patch)


def check_item_patch(request: Request, patch: Any) -> None:
    """An item patch (plain JSON): nothing STAC requires removed, a geometry set whole
    and storable, no over-long string."""
    keeps_required(patch, ITEM_REQUIRED)
    keeps_identity(patch)
    patched_geometry_is_storable(patch)
    _short_strings(request, patch)
    if typed := value_problem(_patched_properties(patch), "patch"):
        raise HTTPException(400, typed)


def _patched_properties(patch: Any) -> dict[str, Any]:
    """The properties a merge patch or a JSON Patch (add/replace) sets."""
    if isinstance(patch, dict):
        props = patch.get("properties")
        return props if isinstance(props, dict) else {}
    found: dict[str, Any] = {}
    for op in patch if isinstance(patch, list) else []:
        path = op.get("path") if isinstance(op, dict) else None
        if op.get("op") in ("add", "replace") and isinstance(path, str):
            if path.startswith("/properties/") and path.count("/") == 2:
                found[path.removeprefix("/properties/").replace("~1", "/").replace("~0", "~")] = (
                    op.get("value")
                )
            elif path == "/properties" and isinstance(op.get("value"), dict):
                found.update(op["value"])
    return found


def _short_strings(request: Request, patch: Any) -> None:
    too_long = string_limit_problem(patch, max_chars(request), "patch")
    if too_long:
        raise HTTPException(400, too_long)
