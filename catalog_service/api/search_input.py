"""Checks of what a search (or aggregation) asks for, before pgstac sees it: a bbox of
finite numbers in range (a 6-number bbox loses its vertical range, as other STAC APIs
do), and bounds on the cost one request may cause (ids listed, filter size)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from stac_fastapi.types.errors import InvalidQueryParameter


def flat_bbox(bbox: Sequence[Any] | None) -> list[float] | None:
    """The 2D bbox to search with; 400 for one that is not four (or six) finite numbers
    within longitude/latitude range."""
    if bbox is None:
        return None
    values = list(bbox)
    if len(values) not in (4, 6):
        raise InvalidQueryParameter(f"bbox needs 4 (or 6) numbers, got {len(values)}")
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InvalidQueryParameter("bbox must be numbers") from None
    if not all(math.isfinite(v) for v in numbers):
        raise InvalidQueryParameter("bbox numbers must be finite (no NaN or Infinity)")
    if len(numbers) == 6:  # minx, miny, minz, maxx, maxy, maxz: footprints are 2D
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    west, south, east, north = numbers
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise InvalidQueryParameter(
            "bbox is minx,miny,maxx,maxy in degrees: longitudes within [-180, 180], "
            "latitudes within [-90, 90], miny <= maxy"
        )
    return numbers


def check_ids(ids: Sequence[str] | None, limit: int) -> None:
    if ids is not None and len(ids) > limit:
        raise InvalidQueryParameter(
            f"at most {limit:,} ids per search (TILEKEEPER_API_MAX_IDS); page through them"
        )


def _nodes(value: Any, budget: int) -> int:
    """Nodes of a CQL2-JSON expression, counted up to ``budget`` + 1."""
    count, stack = 0, [value]
    while stack and count <= budget:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def check_filter(expression: Any, limit: int) -> None:
    if expression is not None and _nodes(expression, limit) > limit:
        raise InvalidQueryParameter(
            f"the filter is too complex: more than {limit:,} terms "
            "(TILEKEEPER_API_MAX_FILTER_TERMS); use ids or fewer conditions"
        )
