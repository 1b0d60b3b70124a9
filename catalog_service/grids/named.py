"""Named areas: countries and groups of them, from country outlines shipped in the package.

The outlines are those of the npm package ``@geo-maps/countries-land-10km`` (land borders
at 10 km resolution, one feature per ISO 3166-1 alpha-3 code), copied into
``catalog_service/grids/data`` by ``scripts/package_country_outlines.py`` (source and
licence: ``data/README.md``); nothing is downloaded at run time. Country codes and names
are read with ``pycountry``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import pycountry
from shapely.geometry import shape

from catalog_service.grids.aoi import AoiError
from catalog_service.grids.parts import Part, split_parts

# Another outlines file (GeoJSON, features with an ``A3`` property) instead of the packaged one.
COUNTRIES_FILE_ENV = "TILEKEEPER_COUNTRIES_FILE"
COUNTRIES_RESOURCE = "countries-land-10km.geo.json"

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


def countries_file() -> Traversable:
    """The country outlines: the package's, or the file ``TILEKEEPER_COUNTRIES_FILE`` names."""
    return _countries_file(_override())


def _override() -> str | None:
    return os.environ.get(COUNTRIES_FILE_ENV) or None


def _countries_file(override: str | None) -> Traversable:
    if override is None:
        return files("catalog_service.grids") / "data" / COUNTRIES_RESOURCE
    path = Path(override)
    if not path.is_file():
        raise AoiError(
            f"the country outlines are missing ({path}, from {COUNTRIES_FILE_ENV}, is not a "
            f"file): point {COUNTRIES_FILE_ENV} at a copy of @geo-maps/countries-land-10km's "
            "map.geo.json, or unset it to use the outlines tilekeeper ships"
        )
    return path


@cache
def _outlines(override: str | None) -> dict[str, dict[str, Any]]:
    """Alpha-3 code -> GeoJSON geometry, from the outlines ``_countries_file`` finds."""
    features = json.loads(_countries_file(override).read_bytes())["features"]
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
    outlines = _outlines(_override())
    out: list[Part] = []
    for code in codes(spec):
        record = country(code)
        geometry = outlines.get(record.alpha_3)
        if geometry is None:
            raise AoiError(f"no outline for {record.name} ({record.alpha_3}) in the countries file")
        out += split_parts(f"{record.name} ({record.alpha_3})", shape(geometry))
    return out
