"""A campaign's summary figures, kept per (status, back-end) by every write that changes a tile.

Summing costs and runtimes over a million tiles took 4-6 s per summary; like the status
counters (``jobs/counts.py``), each write adds its tiles' deltas in its own transaction,
so ``/summary`` reads a handful of rows. A tile contributes to its (status, back-end)
row: one tile, its costs when they are a JSON number, and, when finished with both
times readable, its runtime. The campaign's first start and last finish are kept beside
them and only ever move outward: a reset clears a tile's times, yet the campaign's first
start stays when it was (progress is measured from the first job ever started).

The sums are numeric in the database, so adding and taking away never drifts; costs enter
as the float8 the old full scan cast them to, runtimes as that scan's
``extract(epoch FROM finish - start)`` (numeric, to the microsecond). The migration that
fills the tables reads stored values with the same rules (database/figures_schema.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import MAX_PREC, Context, Decimal, localcontext
from typing import Any

import asyncpg
import psycopg

from catalog_service.database import figures_schema
from catalog_service.database.figures_schema import LARGEST_COSTS, SMALLEST_COSTS, TIME_PATTERN
from catalog_service.jobs import status
from catalog_service.jobs.campaign import EARLIER_COSTS_KEY

# (status, back-end or '')
Key = tuple[str, str]
Props = Mapping[str, Any]
Pair = tuple[Props | None, Props | None]

_TIME = re.compile(TIME_PATTERN)  # database/figures_schema.py says which
_MICRO = Decimal("0.000001")
# Sums in Python are exact too (the default 28 digits would round 1e12 + 1e-17).
_EXACT = Context(prec=MAX_PREC)
# The properties a tile's figures read, and the properties of a tile without any.
_READ = frozenset(
    {"status", "backend_name", "costs", EARLIER_COSTS_KEY, "start_time", "finish_time"}
)
_NOTHING: Props = {}


@dataclass
class Figures:
    """One (status, back-end) row's figures, or a delta of them."""

    n: int = 0
    costs_n: int = 0
    costs_sum: Decimal = Decimal(0)
    runtime_n: int = 0
    runtime_sum: Decimal = Decimal(0)

    def add(self, other: Figures, sign: int) -> None:
        self.n += sign * other.n
        # Most tiles have no costs or runtime yet: skip the Decimal sums (registrations).
        if other.costs_n:
            self.costs_n += sign * other.costs_n
            self.costs_sum += sign * other.costs_sum
        if other.runtime_n:
            self.runtime_n += sign * other.runtime_n
            self.runtime_sum += sign * other.runtime_sum

    def is_zero(self) -> bool:
        return not (self.n or self.costs_n or self.costs_sum or self.runtime_n or self.runtime_sum)


@dataclass
class Delta:
    """What a batch of writes changes: figures per key, and the times it has seen."""

    rows: dict[Key, Figures] = field(default_factory=dict)
    first_start: datetime | None = None
    last_finish: datetime | None = None


def parse_time(value: Any) -> datetime | None:
    """A stored timestamp as PostgreSQL in a UTC session reads it, or None."""
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset, sign, off_h, off_m = match.groups()
    zone = UTC
    if offset and offset != "Z":
        shift = timedelta(hours=int(off_h), minutes=int(off_m or 0))
        zone = timezone(-shift if sign == "-" else shift)
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "").ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError:  # a day the month does not have
        return None
    return moment.astimezone(UTC)


def costs(value: Any) -> Decimal | None:
    """Costs that count (a JSON number), as the numeric of the float8 the old scan read;
    numbers no float8 holds (which made that scan fail) count as none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        as_float = float(value)
    except OverflowError:
        return None
    if not (as_float == 0 or SMALLEST_COSTS <= abs(as_float) <= LARGEST_COSTS):
        return None
    # repr is the shortest text of the float8, as PostgreSQL prints it (extra_float_digits 1).
    return Decimal(repr(as_float))


def _text(value: Any) -> str:
    """A property as ``->>`` gives it (for the keys; statuses and names are strings)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, int | float) else str(value)


def key(props: Props) -> Key:
    st = props.get("status")
    backend = props.get("backend_name")
    return (
        _text(st) if st is not None else status.NOT_STARTED,
        _text(backend) if backend is not None else "",
    )


def contribution(props: Props) -> tuple[Key, Figures]:
    """One tile's part of its campaign's figures."""
    figures = Figures(n=1)
    # The attempt's and the earlier attempts' credits (a retried tile's are spent too).
    parts = [costs(props.get(k)) for k in ("costs", EARLIER_COSTS_KEY)]
    known = [c for c in parts if c is not None]
    if known:  # as the migration's fill: counted when either is a number (0 included)
        figures.costs_n, figures.costs_sum = 1, sum(known, Decimal(0))
    tile_key = key(props)
    if tile_key[0] == status.FINISHED:
        started = parse_time(props.get("start_time"))
        finished = parse_time(props.get("finish_time"))
        if started is not None and finished is not None:
            micros = (finished - started) // timedelta(microseconds=1)
            figures.runtime_n, figures.runtime_sum = 1, Decimal(micros) * _MICRO
    return tile_key, figures


def delta(pairs: Iterable[Pair]) -> Delta:
    """What the tiles' changes (before, after; None: no tile) do to the figures."""
    with localcontext(_EXACT):
        return _delta(pairs)


def _delta(pairs: Iterable[Pair]) -> Delta:
    out = Delta()
    plain = 0  # tiles with no property the figures read: not_started, no back-end
    for before, after in pairs:
        for props, sign in ((before, -1), (after, 1)):
            if props is None:
                continue
            if _READ.isdisjoint(props):  # most registered tiles: counted, not read
                plain += sign
                continue
            tile_key, figures = contribution(props)
            out.rows.setdefault(tile_key, Figures()).add(figures, sign)
            # A time seen on either side: the campaign's times only move outward.
            started = parse_time(props.get("start_time"))
            if started is not None and (out.first_start is None or started < out.first_start):
                out.first_start = started
            finished = parse_time(props.get("finish_time"))
            if finished is not None and (out.last_finish is None or finished > out.last_finish):
                out.last_finish = finished
    if plain:
        out.rows.setdefault((status.NOT_STARTED, ""), Figures()).add(Figures(n=1), plain)
    out.rows = {k: f for k, f in sorted(out.rows.items()) if not f.is_zero()}
    return out


def as_registered(properties: Props | None) -> Props:
    """A new tile's properties as far as the figures go: registration stores the status
    given or not_started, and drops None (jobs/campaign.py ``job_properties``)."""
    props = properties or _NOTHING
    if "status" in props and not props["status"]:
        return {**props, "status": status.NOT_STARTED}
    return props  # a missing status reads as not_started already


def _columns(d: Delta) -> list[list[Any]]:
    rows = d.rows.items()  # sorted by key in `delta`
    return [
        [k[0] for k, _ in rows],
        [k[1] for k, _ in rows],
        [f.n for _, f in rows],
        [f.costs_n for _, f in rows],
        [f.costs_sum for _, f in rows],
        [f.runtime_n for _, f in rows],
        [f.runtime_sum for _, f in rows],
    ]


# Keys sorted: concurrent writers lock the rows in one order (no deadlock). Runtime sums
# keep 6 decimals, as extract(epoch ...) gives them: the mean divides as the old avg did.
_APPLY = """
INSERT INTO tilekeeper.campaign_figures AS f
    (collection, status, backend, n, costs_n, costs_sum, runtime_n, runtime_sum)
SELECT {c}, s, b, n, cn, cs, rn, round(rs, 6)
FROM unnest({a}::text[], {a}::text[], {a}::bigint[], {a}::bigint[], {a}::numeric[],
            {a}::bigint[], {a}::numeric[]) AS u(s, b, n, cn, cs, rn, rs)
ORDER BY s, b
ON CONFLICT (collection, status, backend) DO UPDATE SET
    n = f.n + excluded.n, costs_n = f.costs_n + excluded.costs_n,
    costs_sum = f.costs_sum + excluded.costs_sum, runtime_n = f.runtime_n + excluded.runtime_n,
    runtime_sum = f.runtime_sum + excluded.runtime_sum
"""
_TIMES = """
INSERT INTO tilekeeper.campaign_times AS t (collection, first_start, last_finish)
VALUES ({c}, {a}::timestamptz, {a}::timestamptz)
ON CONFLICT (collection) DO UPDATE SET
    first_start = least(t.first_start, excluded.first_start),
    last_finish = greatest(t.last_finish, excluded.last_finish)
"""


def _asyncpg(query: str) -> str:
    """``{c}`` and each ``{a}`` as asyncpg's $1, $2, ..."""
    numbers = iter(range(2, 10))
    return re.sub(r"\{a\}", lambda _: f"${next(numbers)}", query.replace("{c}", "$1"))


def _psycopg(query: str) -> str:
    return query.replace("{c}", "%s").replace("{a}", "%s")


_APPLY_ASYNCPG, _TIMES_ASYNCPG = _asyncpg(_APPLY), _asyncpg(_TIMES)
_APPLY_PSYCOPG, _TIMES_PSYCOPG = _psycopg(_APPLY), _psycopg(_TIMES)


async def apply(conn: asyncpg.Connection, campaign: str, pairs: Iterable[Pair]) -> None:
    """Add the tiles' changes to the figures (in the caller's transaction, after the
    status counters: every writer locks counters, then figures, then times)."""
    d = delta(pairs)
    if d.rows:
        await conn.execute(_APPLY_ASYNCPG, campaign, *_columns(d))
    if d.first_start is not None or d.last_finish is not None:
        await conn.execute(_TIMES_ASYNCPG, campaign, d.first_start, d.last_finish)


def register(cur: psycopg.Cursor[Any], campaign: str, pairs: Iterable[Pair]) -> None:
    """The registrar's (psycopg) form of ``apply``."""
    d = delta(pairs)
    if d.rows:
        cur.execute(_APPLY_PSYCOPG, [campaign, *_columns(d)])
    if d.first_start is not None or d.last_finish is not None:
        cur.execute(_TIMES_PSYCOPG, [campaign, d.first_start, d.last_finish])


def refill(cur: psycopg.Cursor[Any], campaign: str) -> None:
    """Count one campaign's figures again from its tiles, for whatever rewrote the tiles
    without the job store (a benchmark's bulk UPDATE). Its times become those of the tiles
    as they are: the one write that moves them back."""
    for statement in figures_schema.REFILL:
        cur.execute(statement, {"c": campaign})
