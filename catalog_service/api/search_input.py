"""Checks of what a search (or aggregation) asks for, before pgstac sees it: a bbox of
finite numbers in range (a 6-number bbox loses its vertical range, as other STAC APIs
do), and bounds on the cost one request may cause (ids listed, filter size), checked
on the raw text of each expression before any parser that recurses sees it."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson
from cql2 import Expr
from stac_fastapi.pgstac.core import clean_search_args
from stac_fastapi.types.errors import InvalidQueryParameter

from catalog_service.settings import ApiSettings


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


def _too_many_terms(limit: int) -> str:
    return (
        f"the filter is too complex: more than {limit:,} terms "
        "(TILEKEEPER_API_MAX_FILTER_TERMS); use ids or fewer conditions"
    )


def check_filter(expression: Any, limit: int) -> None:
    if expression is not None and _nodes(expression, limit) > limit:
        raise InvalidQueryParameter(_too_many_terms(limit))


# Query parameters that carry an expression or a list a parser walks. Each is bounded
# on its raw text before any parser (cql2's recurses natively: ~2,000 nested brackets
# overflow its stack and kill the process) sees it.
EXPRESSION_PARAMS = frozenset(
    {"filter", "sortby", "fields", "intersects", "ids", "collections", "query", "q", "bbox"}
)
# Search-body keys with the same role.
EXPRESSION_KEYS = ("filter", "sortby", "fields", "intersects", "ids", "collections", "query")
_OPENING = frozenset("([{")
_CLOSING = frozenset(")]}")


@dataclass(frozen=True)
class ExpressionLimits:
    """What one search may ask a parser (and pgstac) to do; each bound names its setting."""

    chars: int
    depth: int
    terms: int
    sort_fields: int
    fields: int
    ids: int
    geometry_values: int

    @classmethod
    def of(cls, settings: ApiSettings) -> ExpressionLimits:
        return cls(
            chars=settings.max_expression_chars,
            depth=settings.max_expression_depth,
            terms=settings.max_filter_terms,
            sort_fields=settings.max_sort_fields,
            fields=settings.max_fields,
            ids=settings.max_ids,
            geometry_values=settings.max_geometry_values,
        )


def text_depth(text: str, budget: int) -> int:
    """Bracket nesting of ``text`` outside quoted strings, counted up to ``budget`` + 1."""
    depth = deepest = 0
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in _OPENING:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > budget:
                    break
        elif char in _CLOSING:
            depth -= 1
    return deepest


def value_depth(value: Any, budget: int) -> int:
    """Nesting of lists and objects in a parsed JSON value, up to ``budget`` + 1."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > budget:
                    break
            stack.extend(
                (child, depth) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def _too_deep(name: str, limit: int) -> str:
    return (
        f"{name} is nested more than {limit} levels deep "
        "(TILEKEEPER_API_MAX_EXPRESSION_DEPTH); flatten it"
    )


def _count_problem(name: str, count: int, limits: ExpressionLimits) -> str | None:
    bound, setting = {
        "sortby": (limits.sort_fields, "TILEKEEPER_API_MAX_SORT_FIELDS"),
        "fields": (limits.fields, "TILEKEEPER_API_MAX_FIELDS"),
        "ids": (limits.ids, "TILEKEEPER_API_MAX_IDS"),
        "collections": (limits.ids, "TILEKEEPER_API_MAX_IDS"),
    }.get(name, (0, ""))
    if setting and count > bound:
        return f"{name} lists {count:,} entries, over the limit of {bound:,} ({setting})"
    return None


# cql2's parser recurses natively, about 2 kB of stack per nested operator (a run of
# 4,500 unary minus signs, no bracket among them, overflowed the 8 MB of the main thread
# and killed the process). Text is parsed here, on a thread with room for anything the
# length limit lets through, and handed on as CQL2-JSON, whose depth is bounded.
PARSER_STACK_BYTES = 512 * 1024 * 1024
_stack_lock = threading.Lock()


class BadFilter(ValueError):
    """A CQL2-text filter that does not parse."""


# Parsed and validated filters are kept: clients poll the same few filters (a status, a
# back-end), and parsing plus cql2's validation cost ~25 ms a search (profiled under
# load: a third of the API's time on a status search). Failures are not kept.
PARSED_FILTERS_KEPT = 1024
_parsed_texts: OrderedDict[str, bytes] = OrderedDict()


def cql2_text_as_json(text: str) -> Any:
    """CQL2-text as CQL2-JSON (a fresh copy: callers may change it)."""
    kept = _parsed_texts.get(text)
    if kept is not None:
        return orjson.loads(kept)
    parsed = _parse_cql2_text(text)
    try:
        _parsed_texts[text] = orjson.dumps(parsed)
    except TypeError:
        return parsed  # deeper than orjson writes: the depth check refuses it next
    while len(_parsed_texts) > PARSED_FILTERS_KEPT:
        _parsed_texts.popitem(last=False)
    return parsed


def _parse_cql2_text(text: str) -> Any:
    """CQL2-text as CQL2-JSON, parsed on a thread with a large stack."""
    outcome: dict[str, Any] = {}

    def parse() -> None:
        try:
            # Not validate(): its memory grows ~10 MB a level (4,500 NOTs: all there is);
            # upstream validates the JSON once its depth is bounded.
            outcome["json"] = Expr(text).to_json()
        except Exception as exc:  # cql2 raises bare Exceptions
            outcome["error"] = exc

    with _stack_lock:  # the stack size applies to threads started while it is set
        previous = threading.stack_size(PARSER_STACK_BYTES)
        try:
            worker = threading.Thread(target=parse, name="cql2-parse", daemon=True)
            worker.start()
        finally:
            threading.stack_size(previous)
    worker.join()
    if "error" in outcome:
        raise BadFilter(f"Invalid filter: {outcome['error']}")
    return outcome["json"]


_validated: OrderedDict[tuple[str, str | None], tuple[bytes, str]] = OrderedDict()


def validated_filter(text: str, lang: str | None) -> tuple[Any, str]:
    """A search's filter as pgstac takes it (CQL2-JSON, and its language), checked by
    upstream's own parser and validator (400 when it fails)."""
    kept = _validated.get((text, lang))
    if kept is not None:
        return orjson.loads(kept[0]), kept[1]
    args: dict[str, Any] = {}
    clean_search_args(args, filter_query=text, filter_lang=lang)
    with suppress(TypeError):  # deeper than orjson writes (a raised depth limit): not kept
        _validated[text, lang] = (orjson.dumps(args["filter"]), str(args["filter_lang"]))
    while len(_validated) > PARSED_FILTERS_KEPT:
        _validated.popitem(last=False)
    return args["filter"], str(args["filter_lang"])


def _path_problem(name: str, path: str, limits: ExpressionLimits) -> str | None:
    """A property path (``a.b.c``) pgstac walks recursively: as deep as a bracket."""
    if path.count(".") >= limits.depth:
        return _too_deep(f"{name} path {path[:40]}...", limits.depth)
    return None


def query_problem(params: Sequence[tuple[str, str]], limits: ExpressionLimits) -> str | None:
    """Why a GET's expression parameters are over their bounds (None when they are not),
    judged on their raw text: nothing is parsed here."""
    counts: dict[str, int] = {}
    for name, value in params:
        if name not in EXPRESSION_PARAMS:
            continue
        if len(value) > limits.chars:
            return (
                f"{name} has {len(value):,} characters, over the limit of {limits.chars:,} "
                "(TILEKEEPER_API_MAX_EXPRESSION_CHARS); use POST /search for long searches"
            )
        if text_depth(value, limits.depth) > limits.depth:
            return _too_deep(name, limits.depth)
        entries = value.split(",")
        counts[name] = counts.get(name, 0) + len(entries)
        if name in ("sortby", "fields"):
            for entry in entries:
                found = _path_problem(name, entry, limits)
                if found:
                    return found
    for name, count in counts.items():
        found = _count_problem(name, count, limits)
        if found:
            return found
    return None


def filter_as_json(
    params: list[tuple[str, str]], limits: ExpressionLimits
) -> list[tuple[str, str]] | str:
    """The parameters with a CQL2-text ``filter`` turned into CQL2-JSON (so no parser
    after this one reads text), or why the filter is refused."""
    for name in ("filter", "filter-lang"):
        if sum(k == name for k, _ in params) > 1:
            # Upstream takes the last of them and this check the first: one filter only,
            # or an unchecked one would reach cql2's parser (an outside tester crashed a
            # worker with `filter={}&filter=NOT NOT ...`).
            return f"{name} is given more than once; give one"
    lang = next((v for k, v in params if k == "filter-lang"), None)
    text = next((v for k, v in params if k == "filter"), None)
    if text is None:
        return params
    if lang == "cql2-json" or text.lstrip().startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return params  # upstream words its own 400
        return filter_problem(parsed, limits) or params
    try:
        parsed = cql2_text_as_json(text)
    except BadFilter as exc:
        return str(exc)
    problem = filter_problem(parsed, limits)
    if problem:
        return problem
    kept = [(k, v) for k, v in params if k not in ("filter", "filter-lang")]
    return [*kept, ("filter", orjson.dumps(parsed).decode()), ("filter-lang", "cql2-json")]


def filter_problem(expression: Any, limits: ExpressionLimits) -> str | None:
    """A parsed filter over its bounds: depth, terms, property paths."""
    if value_depth(expression, limits.depth) > limits.depth:
        return _too_deep("filter", limits.depth)
    if _nodes(expression, limits.terms) > limits.terms:
        return _too_many_terms(limits.terms)
    for name in property_names(expression):
        found = _path_problem("filter property", name, limits)
        if found:
            return found
    return None


def property_names(value: Any) -> list[str]:
    """The property names a CQL2-JSON expression refers to."""
    found, stack = [], [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("property"), str):
                found.append(node["property"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def body_problem(body: Any, limits: ExpressionLimits) -> str | None:
    """The same bounds for a search or aggregation body (already parsed)."""
    if not isinstance(body, dict):
        return None
    for name in EXPRESSION_KEYS:
        value = body.get(name)
        if value is None:
            continue
        if value_depth(value, limits.depth) > limits.depth:
            return _too_deep(name, limits.depth)
        found = _key_problem(name, value, limits)
        if found:
            return found
    return None


def _key_problem(name: str, value: Any, limits: ExpressionLimits) -> str | None:
    if name == "filter":
        return filter_problem(value, limits)
    if name == "intersects" and _nodes(value, limits.geometry_values) > limits.geometry_values:
        return (
            f"intersects has more than {limits.geometry_values:,} values "
            "(TILEKEEPER_API_MAX_GEOMETRY_VALUES); simplify the geometry"
        )
    paths: list[Any] = []
    if name == "fields" and isinstance(value, dict):
        paths = [p for v in value.values() if isinstance(v, list) for p in v]
    elif name == "sortby" and isinstance(value, list):
        paths = [s.get("field") if isinstance(s, dict) else s for s in value]
    for path in paths:
        found = _path_problem(name, path, limits) if isinstance(path, str) else None
        if found:
            return found
    if name == "fields":
        return _count_problem(name, len(paths), limits)
    return _count_problem(name, len(value), limits) if isinstance(value, list) else None
