"""Answers written straight to bytes.

A client method that returns a dict goes through FastAPI's ``jsonable_encoder``, which
walks every value of a 100-item page in Python, then the standard library's JSON encoder:
profiled under load, half of a status search's time in the API. The item routes answer
with orjson instead (the values come from PostgreSQL's jsonb: plain JSON types)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

GEOJSON = "application/geo+json"


def geojson(content: Any) -> Any:
    """``content`` as a GeoJSON answer; an answer upstream already made stays as it is."""
    if isinstance(content, Response):
        return content
    return Response(orjson.dumps(content), media_type=GEOJSON)
