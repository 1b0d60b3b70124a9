"""The OpenAPI document, completed: what every route may answer besides success (errors
in the STAC API's shape), the path parameters upstream routes forget to declare, and no
FastAPI 422 (validation errors answer 400 here). Clients and fuzzers read this document,
so it must say what the service does."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from starlette.responses import JSONResponse

ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["code", "description"],
    "properties": {
        "code": {"type": "string", "description": "Error class, e.g. NotFoundError"},
        "description": {"type": "string", "description": "What went wrong and what to do"},
    },
    "additionalProperties": True,
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
# What any route may answer: bad input, an unknown or hidden resource, a credential that
# is presented but not valid, a body over the size limit, the database unavailable.
_ANY = {
    "400": "Bad request: the message says what is wrong",
    "401": "A credential was presented and is not valid",
    "404": "Not found (or private and not yours)",
    "413": "Request body too large",
    "503": "Temporarily unavailable (retry after Retry-After seconds)",
}
_WRITES = {
    "401": "A credential is required",
    "403": "The credential lacks this route's scope, or the caller does not own the campaign",
    "409": "Conflicts with the stored state",
    "415": "The body is not JSON",
}
_WRITE_METHODS = {"post", "put", "patch", "delete"}
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


# With the fields extension, listed collections carry only the fields asked for.
_PARTIAL_COLLECTIONS = {
    "type": "object",
    "required": ["collections", "links"],
    "properties": {
        "collections": {"type": "array", "items": {"type": "object"}},
        "links": {"type": "array", "items": {"type": "object"}},
    },
}


_DEFS = "x-tilekeeper-defs"


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON body of a route that reads it as
    strict JSON (``deps.BodyRoute``: NaN and Infinity refused), so clients and fuzzers
    see it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": reference}}},
        _DEFS: {**schema.pop("$defs", {}), model.__name__: schema},
    }


def complete(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    listing = document.get("paths", {}).get("/collections", {}).get("get", {})
    ok = listing.get("responses", {}).get("200", {}).get("content", {}).get("application/json")
    if ok is not None:
        ok["schema"] = _PARTIAL_COLLECTIONS
    # POST items also takes a FeatureCollection, answered with the ids it created.
    posted = document.get("paths", {}).get("/collections/{collection_id}/items", {}).get("post")
    for media in (posted or {}).get("responses", {}).get("201", {}).get("content", {}).values():
        media["schema"] = {"type": "object"}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for name, schema in operation.pop(_DEFS, {}).items():
                schemas.setdefault(name, schema)
            responses = operation["responses"]
            responses.pop("422", None)
            if method == "delete":
                # Upstream declares the deleted collection as the body; it is not sent.
                for status in ("200", "204"):
                    if status in responses:
                        responses[status].pop("content", None)
            errors = {**_ANY, **(_WRITES if method in _WRITE_METHODS else {})}
            for status, description in errors.items():
                responses.setdefault(status, _error_response(description))
            declared = {
                p.get("name") for p in operation.get("parameters", []) if p.get("in") == "path"
            }
            for name in _PATH_PARAM.findall(path):
                if name not in declared:
                    operation.setdefault("parameters", []).append(
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    )
    return document


def complete_openapi(app: FastAPI) -> None:
    """Serve the completed document (built once, like FastAPI's own)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def documented(content: Any, status_code: int = 200) -> JSONResponse:
    """A large answer as FastAPI encodes an unmodelled one: its ``response_model`` is
    the OpenAPI description, not validated again (job lists can hold 100,000 tiles)."""
    return JSONResponse(jsonable_encoder(content), status_code=status_code)
