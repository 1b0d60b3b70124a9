"""Named areas: countries and groups of them, from a packaged Natural Earth derivative.

The outlines are the npm package ``@geo-maps/countries-land-10km`` (Natural Earth land
borders at 10 km resolution, one feature per ISO 3166-1 alpha-3 code), installed with the
web parts (``scripts/build_web.sh``); nothing is downloaded at run time. Country codes
and names are read with ``pycountry``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pycountry
from shapely.geometry import shape

from catalog_service.grids.aoi import AoiError
from catalog_service.grids.areas import Part, split_parts

COUNTRIES_FILE_ENV = "TILEKEEPER_COUNTRIES_FILE"
DEFAULT_COUNTRIES_FILE = (
    Path(__file__).resolve().parents[2]
    / "web"
    / "map"
    / "node_modules"
    / "@geo-maps"
    / "countries-land-10km"
    / "map.geo.json"
)

# The member states of the European Union since 1 February 2020.
EU27 = [
    "AT",
    "BE",
    "BG",
    "HR",
    "CY",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "GR",
    "HU",
    "IE",
    "IT",
    "LV",
    "LT",
    "LU",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SK",
    "SI",
    "ES",
    "SE",
]
GROUPS = {"eu27": EU27}


def is_named(spec: str) -> bool:
    text = spec.strip().lower()
    return text in GROUPS or text.startswith("country:")


def countries_file() -> Path:
    path = Path(os.environ.get(COUNTRIES_FILE_ENV) or DEFAULT_COUNTRIES_FILE)
    if not path.is_file():
        raise AoiError(
            f"the country outlines are not installed ({path} is missing): run "
            f"`bash scripts/build_web.sh`, or set {COUNTRIES_FILE_ENV} to a copy of "
            "@geo-maps/countries-land-10km's map.geo.json"
        )
    return path


@cache
def _outlines(path: Path) -> dict[str, dict[str, Any]]:
    """Alpha-3 code -> GeoJSON geometry."""
    features = json.loads(path.read_bytes())["features"]
    return {f["properties"]["A3"]: f["geometry"] for f in features}


def country(code: str) -> Any:
    """The pycountry record of an alpha-2 or alpha-3 code or an English name."""
    found = pycountry.countries.get(alpha_2=code.upper()) if len(code) == 2 else None
    found = found or (pycountry.countries.get(alpha_3=code.upper()) if len(code) == 3 else None)
    if found is None:
        try:
            found = pycountry.countries.lookup(code)
        except LookupError:
            found = None
    if found is None:
        raise AoiError(f"unknown country {code!r}: use ISO 3166-1 codes such as BE or BEL")
    return found


def codes(spec: str) -> list[str]:
    """The alpha-2 codes a named area stands for."""
    text = spec.strip()
    if text.lower() in GROUPS:
        return list(GROUPS[text.lower()])
    listed = [c.strip() for c in text.partition(":")[2].split(",") if c.strip()]
    if not listed:
        raise AoiError("give country codes after `country:`, e.g. country:BE,NL")
    return [country(c).alpha_2 for c in listed]


def parts(spec: str) -> list[Part]:
    """The parts of the named area's countries, labelled with the country's name."""
    outlines = _outlines(countries_file())
    out: list[Part] = []
    for code in codes(spec):
        record = country(code)
        geometry = outlines.get(record.alpha_3)
        if geometry is None:
            raise AoiError(f"no outline for {record.name} ({record.alpha_3}) in the countries file")
        out += split_parts(f"{record.name} ({record.alpha_3})", shape(geometry))
    return out
