"""The parts of an AOI: the polygons (or other primitives) it is made of, each with a
label a person recognises, so that what is repaired or dropped can be named."""

from __future__ import annotations

from dataclasses import dataclass

from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class Part:
    """One polygon (or other primitive) of an AOI, with a label a person recognises."""

    label: str
    geometry: BaseGeometry


def split_parts(label: str, geometry: BaseGeometry) -> list[Part]:
    """The primitives of ``geometry``, labelled ``label`` (numbered when there are several)."""
    pieces = [p for p in _primitives(geometry) if not p.is_empty]
    if len(pieces) == 1:
        return [Part(label, pieces[0])]
    return [Part(f"{label}, part {n}", p) for n, p in enumerate(pieces, 1)]


def _primitives(geometry: BaseGeometry) -> list[BaseGeometry]:
    if hasattr(geometry, "geoms"):
        return [p for g in geometry.geoms for p in _primitives(g)]
    return [geometry]
