"""The properties tilekeeper registers as pgstac queryables, with their types.

pgstac reads a property through its queryable's wrapper: without one a property is text,
so ``tilekeeper:order`` sorted 9, 8, ..., 2, 15, ..., 10, 1, 0 and ``costs > 9.5``
compared strings. Every numeric or date property of job and product items is therefore
registered with its JSON-schema type and wrapper (``to_int``, ``to_float``, ``to_tstz``).
The rows are global in pgstac (one reading of a property for every search, whatever its
collections); which collections *describe* a property in their queryables is
``kinds``: campaigns list the job properties, product collections the product ones
(see api/queryables.py). The same registry feeds the migration in database/schema.py:
it ran once per database, so a change here needs ``migration_sql()`` appended to
``MIGRATIONS`` again (it is idempotent).

Not typed, on purpose: ``cpu``, ``memory`` and ``duration`` are the openEO job manager's
``"<value> <unit>"`` texts (``"40668 cpu-seconds"``), which no numeric cast reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

JOBS = "jobs"
PRODUCTS = "products"


@dataclass(frozen=True)
class Queryable:
    name: str
    definition: dict[str, Any]
    wrapper: str
    kinds: frozenset[str]
    index: str | None = None  # pgstac's property_index_type: an index per partition


def _q(
    name: str,
    kind: str,
    title: str,
    description: str,
    wrapper: str,
    kinds: frozenset[str],
    index: str | None = None,
    **constraints: Any,
) -> Queryable:
    """``kind``: a JSON-schema type, or ``date-time`` (a string of that format)."""
    typed = {"type": "string", "format": "date-time"} if kind == "date-time" else {"type": kind}
    definition = {**typed, **constraints, "title": title, "description": description}
    return Queryable(name, definition, wrapper, kinds, index)


_BOTH = frozenset({JOBS, PRODUCTS})
_JOBS = frozenset({JOBS})
_PRODUCTS = frozenset({PRODUCTS})

REGISTERED: tuple[Queryable, ...] = (
    # Strings registered since the first migration, with a BTREE index for the counts.
    _q("status", "string", "Job status", "openEO or job-manager status of the tile job",
       "to_text", _JOBS, "BTREE"),
    _q("backend_name", "string", "Back-end", "openEO back-end running the tile job",
       "to_text", _JOBS, "BTREE"),
    _q("grid:code", "string", "Grid code", "Tile id in its grid (grid extension)",
       "to_text", _BOTH, "BTREE"),
    _q("openeo:job_id", "string", "openEO job", "The tile's openEO batch job id on its back-end",
       "to_text", _JOBS),
    # Numbers of job items. The order is what job listings sort by: indexed.
    _q("tilekeeper:order", "integer", "Processing order",
       "The tile job's processing order number in its campaign", "to_int", _JOBS, "BTREE",
       minimum=0),
    _q("tilekeeper:revision", "integer", "Revision", "Changes applied to the tile job so far",
       "to_int", _JOBS, minimum=0),
    _q("attempts", "integer", "Attempts", "openEO jobs started for the tile so far",
       "to_int", _JOBS, minimum=0),
    _q("costs", "number", "Costs",
       "Credits the tile's openEO job cost, as its back-end reports them", "to_float", _JOBS,
       minimum=0),
    _q("mgrs:utm_zone", "integer", "UTM zone", "UTM zone of the tile (MGRS extension)",
       "to_int", _JOBS, minimum=1, maximum=60),
    # Dates of job items.
    _q("start_time", "date-time", "Job started",
       "When the tile's openEO job was created and started", "to_tstz", _JOBS),
    _q("running_start_time", "date-time", "Job running since",
       "When the tile's openEO job was first seen running", "to_tstz", _JOBS),
    _q("finish_time", "date-time", "Job finished", "When the tile job reached a final status",
       "to_tstz", _JOBS),
    _q("updated", "date-time", "Updated", "When the item last changed", "to_tstz", _BOTH),
    # Product items.
    _q("created", "date-time", "Created", "When the product item was created", "to_tstz",
       _PRODUCTS),
    _q("processing:datetime", "date-time", "Processed",
       "When the product was converted and catalogued (processing extension)", "to_tstz",
       _PRODUCTS),
    _q("proj:code", "string", "Projection",
       "Coordinate reference system of the data (projection extension)", "to_text", _BOTH),
    _q("version", "string", "Version", "Version of the product", "to_text", _PRODUCTS),
    _q("tilekeeper:tile", "string", "Tile",
       "The campaign tile (job item id) the product comes from", "to_text", _PRODUCTS),
)  # fmt: skip

BY_NAME: dict[str, Queryable] = {q.name: q for q in REGISTERED}


def _is_timestamp(value: Any) -> bool:
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return False
    return isinstance(value, str)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_READS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "to_int": ("an integer", _is_integer),
    "to_float": ("a number", _is_number),
    "to_tstz": ("an RFC 3339 timestamp", _is_timestamp),
}


def value_problem(properties: dict[str, Any], what: str) -> str | None:
    """Why a property would not read as its queryable's type, or None. pgstac casts
    every item's value when a search sorts or filters by it, across collections: one
    ``costs: "abc"`` written anywhere made every ``sortby=costs`` answer 400, for
    everybody. So a value is refused when written (null removes a property: allowed)."""
    for name, value in properties.items():
        queryable = BY_NAME.get(name)
        if value is None or queryable is None or queryable.wrapper not in _READS:
            continue
        kind, reads = _READS[queryable.wrapper]
        if not reads(value):
            return (
                f"{what}: property {name} must be {kind} (searches sort and compare it as "
                f"one), not {type(value).__name__} {str(value)[:40]!r}"
            )
    return None


# pgstac's own queryables, whose stored definitions $ref schemas on the internet: served
# self-contained instead (nothing is fetched at run time, by the service or its clients).
CORE: dict[str, dict[str, Any]] = {
    "id": {"title": "Item ID", "description": "Item identifier", "type": "string", "minLength": 1},
    "geometry": {
        "title": "Item Geometry",
        "description": "Item Geometry (a GeoJSON geometry)",
        "type": "object",
        "format": "geometry-any",
        "required": ["type"],
        "properties": {
            "type": {
                "type": "string",
                "enum": [
                    "Point",
                    "MultiPoint",
                    "LineString",
                    "MultiLineString",
                    "Polygon",
                    "MultiPolygon",
                    "GeometryCollection",
                ],
            },
        },
    },
    "datetime": {
        "description": "Datetime",
        "type": "string",
        "title": "Acquired",
        "format": "date-time",
        "pattern": "(\\+00:00|Z)$",
    },
}


def _values(rows: list[tuple[str | None, ...]]) -> str:
    def literal(value: str | None) -> str:
        return "NULL" if value is None else "'" + value.replace("'", "''") + "'"

    return ",\n        ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)


def migration_sql() -> str:
    """Types the registered queryables (inserting the missing ones) and makes pgstac's
    core ones self-contained. Only rows for every collection are touched; an operator's
    per-collection rows and index choices on existing rows stay. Idempotent."""
    typed = _values([(q.name, json.dumps(q.definition), q.wrapper, q.index) for q in REGISTERED])
    core = _values([(name, json.dumps(d)) for name, d in CORE.items()])
    return f"""
    WITH wanted(name, definition, property_wrapper, property_index_type) AS (VALUES
        {typed}
    ), updated AS (
        UPDATE pgstac.queryables q
        SET definition = w.definition::jsonb, property_wrapper = w.property_wrapper
        FROM wanted w
        WHERE q.name = w.name AND q.collection_ids IS NULL
          AND (q.definition IS DISTINCT FROM w.definition::jsonb
               OR q.property_wrapper IS DISTINCT FROM w.property_wrapper)
        RETURNING q.name
    )
    INSERT INTO pgstac.queryables (name, definition, property_wrapper, property_index_type)
    SELECT w.name, w.definition::jsonb, w.property_wrapper, w.property_index_type
    FROM wanted w
    WHERE NOT EXISTS (SELECT 1 FROM pgstac.queryables e WHERE e.name = w.name);
    UPDATE pgstac.queryables q
    SET definition = c.definition::jsonb
    FROM (VALUES
        {core}
    ) AS c(name, definition)
    WHERE q.name = c.name AND q.collection_ids IS NULL AND q.definition ? '$ref';
    """
