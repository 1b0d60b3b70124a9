"""What one raster request may ask for, checked before titiler reads anything (titiler
bounds none of it: an outside tester pinned a core for good with one point at 1e30 m, and
read 22 million pixels for one statistics request), and the answer to a request titiler
cannot draw: 400, not 500."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlencode

import morecantile
import orjson
from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.responses import Response

MAX_ZOOM = 24
LIMITS = {
    "tilesize": 1024,
    "max_size": 4096,
    "width": 4096,
    "height": 4096,
    "buffer": 64,
    "padding": 64,
    "histogram_bins": 1024,
    "scan_limit": 10_000,
    "items_limit": 500,
    "time_limit": 10,
    "minzoom": MAX_ZOOM,
    "maxzoom": MAX_ZOOM,
}
MAX_REPEATS = {"assets": 16, "bidx": 32, "rescale": 32, "c": 256, "p": 100}
MAX_TEXT = {"expression": 1000, "colormap": 20_000, "color_formula": 500, "histogram_range": 100}
# A coordinate (in degrees or a projected CRS's metres) no product is beyond: rasterio's
# transform of a point takes time in proportion to its distance.
MAX_COORDINATE = 1e8
COORDINATES = ("lon", "lat", "minx", "miny", "maxx", "maxy")
# A part or statistics read at most this many pixels a side when the caller says nothing.
DEFAULT_MAX_SIZE = 1024
SIZED = ("/bbox/", "/feature", "/statistics", "/preview")
MAX_VERTICES = 100_000
# Errors of titiler and rio-tiler on what a request asked for (a band that is not there,
# a colormap or formula that does not parse, a range upside down...).
INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError)


def _numbers(name: str, value: str, limit: float) -> list[float]:
    try:
        numbers = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise HTTPException(400, f"{name} must be a number, not {value[:40]!r}") from None
    if any(not math.isfinite(n) or abs(n) > limit for n in numbers):
        raise HTTPException(400, f"{name} must be a finite number of at most {limit:g}")
    return numbers


def _check_tile(path: dict[str, Any], tms: morecantile.TileMatrixSets) -> None:
    try:
        z, x, y = int(path["z"]), int(path["x"]), int(path["y"])
    except ValueError:
        raise HTTPException(400, "z, x and y must be whole numbers") from None
    name = str(path.get("tileMatrixSetId", "WebMercatorQuad"))
    if not 0 <= z <= MAX_ZOOM or name not in tms.list():
        raise HTTPException(400, f"tile {z}/{x}/{y}: zoom 0-{MAX_ZOOM} of a known tile matrix set")
    matrix = tms.get(name).matrix(z)
    if not (0 <= x < matrix.matrixWidth and 0 <= y < matrix.matrixHeight):
        raise HTTPException(400, f"tile {z}/{x}/{y} is outside the {name} tile matrix")


def _vertices(value: Any, budget: int) -> int:
    """Coordinates in a GeoJSON value, counted until past ``budget``."""
    stack, count = [value], 0
    while stack and count <= budget:
        item = stack.pop()
        if isinstance(item, list):
            if item and all(isinstance(v, int | float) for v in item):
                count += 1
            else:
                stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(
                v
                for k, v in item.items()
                if k in ("geometry", "geometries", "coordinates", "features")
            )
    return count


def bounded_request(
    tms: morecantile.TileMatrixSets,
) -> Callable[[Request], Coroutine[Any, Any, None]]:
    async def check(request: Request) -> None:
        """400 for anything past the limits above; a part's size defaulted."""
        params = request.query_params
        path = request.path_params
        if "z" in path:
            _check_tile(path, tms)
        for name in COORDINATES:
            if name in path:
                _numbers(name, str(path[name]), MAX_COORDINATE)
        for name, limit in LIMITS.items():
            given = params.getlist(name)
            if name in path:  # a part's /{width}x{height}.tif
                given.append(str(path[name]))
            for value in given:
                numbers = _numbers(name, value, limit)
                if len(numbers) > limit:
                    raise HTTPException(400, f"{name} may list at most {limit} values")
        for zooms in params.getlist("zooms"):
            if any(int(n) > MAX_ZOOM for n in re.findall(r"\d+", zooms)):
                raise HTTPException(400, f"zooms may go to {MAX_ZOOM} at most")
        for name, limit in MAX_REPEATS.items():
            if len(params.getlist(name)) > limit:
                raise HTTPException(400, f"{name} may be given at most {limit} times")
        for name, limit in MAX_TEXT.items():
            if any(len(v) > limit for v in params.getlist(name)):
                raise HTTPException(400, f"{name} may be at most {limit} characters")
        if request.method == "POST":
            try:
                body = orjson.loads(await request.body() or b"null")
            except orjson.JSONDecodeError:
                raise HTTPException(400, "the body is not JSON") from None
            if _vertices(body, MAX_VERTICES) > MAX_VERTICES:
                raise HTTPException(400, f"a feature may have at most {MAX_VERTICES} vertices")
        sized = any(part in request.url.path for part in SIZED)
        if sized and not {"max_size", "width", "height"} & set(params) and "width" not in path:
            # titiler reads a part at the products' own resolution unless told: bounded here
            # (the request object is the one every later dependency reads its query from).
            query = [*params.multi_items(), ("max_size", str(DEFAULT_MAX_SIZE))]
            request.scope["query_string"] = urlencode(query).encode()
            request._query_params = QueryParams(request.scope["query_string"])

    return check


class RasterRoute(APIRoute):
    """A route of titiler's: what it cannot draw from the request's parameters is 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException:
                raise
            except INPUT_ERRORS as exc:
                raise HTTPException(400, f"cannot draw this request: {exc}"[:500]) from exc

        return answer
