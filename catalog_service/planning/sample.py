"""A pilot sample spread over the area (and over an attribute, when one is named).

Tiles are ordered along a Z-order (Morton) curve of their centres, so neighbours on the
curve are neighbours on the ground; with an attribute, by the attribute first. The ordered
tiles are cut into ``n`` runs of equal length and the middle tile of each run is taken:
a systematic sample, which covers the area (or the attribute's range) evenly and is the
same every time for the same tiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Candidate:
    tile: str
    lon: float
    lat: float
    attribute: Any = None


def _morton(lon: np.ndarray, lat: np.ndarray, bits: int = 16) -> np.ndarray:
    """Interleaved bits of the centres scaled to the sample's own extent."""

    def scaled(v: np.ndarray) -> np.ndarray:
        span = float(v.max() - v.min()) or 1.0
        out: np.ndarray = ((v - v.min()) / span * (2**bits - 1)).astype(np.uint64)
        return out

    x, y = scaled(lon), scaled(lat)
    code = np.zeros(len(lon), dtype=np.uint64)
    for bit in range(bits):
        b = np.uint64(bit)
        code |= ((x >> b) & np.uint64(1)) << np.uint64(2 * bit)
        code |= ((y >> b) & np.uint64(1)) << np.uint64(2 * bit + 1)
    return code


def stratified(candidates: Sequence[Candidate], n: int, by_attribute: bool = False) -> list[str]:
    """``n`` tiles spread over the candidates' area (and attribute values)."""
    if n <= 0 or not candidates:
        return []
    if n >= len(candidates):
        return [c.tile for c in candidates]
    lon = np.array([c.lon for c in candidates])
    lat = np.array([c.lat for c in candidates])
    keys: list[np.ndarray] = [_morton(lon, lat)]
    if by_attribute:
        keys.append(_ranks([c.attribute for c in candidates]))
    order = np.lexsort(keys)  # the last key sorts first
    edges = np.linspace(0, len(candidates), n + 1)
    picks = ((edges[:-1] + edges[1:]) / 2).astype(int)
    return [candidates[int(order[p])].tile for p in picks]


def _ranks(values: Sequence[Any]) -> np.ndarray:
    """Sort ranks of attribute values: numbers as numbers when every value given is one,
    else as text; tiles without a value last."""
    given = [v for v in values if v is not None]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in given)
    ordered = sorted(set(given), key=float if numeric else str)
    rank = {v: n for n, v in enumerate(ordered)}
    return np.array([rank[v] if v is not None else len(ordered) for v in values])
