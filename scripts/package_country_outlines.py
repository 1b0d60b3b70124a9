"""Writes the country outlines the named areas (``eu27``, ``country:BE,NL``) are cut from
into the Python package, so that an installed tilekeeper needs no npm install.

Source: the npm package ``@geo-maps/countries-land-10km`` 0.6.0 (Simone Primarosa,
https://github.com/simonepri/geo-maps): countries' political land borders at 10 km
resolution, one feature per ISO 3166-1 alpha-3 code (property ``A3``), pinned in
web/map/package-lock.json and installed by scripts/build_web.sh. Licence: the package's
code is MIT; its data is under the Open Data Commons Open Database License 1.0 (ODbL,
the licence of OpenStreetMap, whose data the maps are made from), as its README says.
The written file keeps what the code reads (each feature's geometry and ``A3``), the
coordinates to the digit, and the features in the source's order; it is checked into
git, so this runs again only when the source changes:

    bash scripts/build_web.sh && .venv/bin/python scripts/package_country_outlines.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGE = ROOT / "web" / "map" / "node_modules" / "@geo-maps" / "countries-land-10km"
VERSION = "0.6.0"
TARGET = ROOT / "catalog_service" / "grids" / "data" / "countries-land-10km.geo.json"


def main() -> int:
    manifest = json.loads((SOURCE_PACKAGE / "package.json").read_text())
    if manifest["version"] != VERSION:
        print(f"expected @geo-maps/countries-land-10km {VERSION}, found {manifest['version']}")
        return 1
    source = SOURCE_PACKAGE / "map.geo.json"
    raw = source.read_bytes()
    features = json.loads(raw)["features"]
    lines = [
        json.dumps(
            {
                "type": "Feature",
                "properties": {"A3": f["properties"]["A3"]},
                "geometry": f["geometry"],
            },
            separators=(",", ":"),
        )
        for f in features
    ]
    TARGET.write_text('{"type":"FeatureCollection","features":[\n' + ",\n".join(lines) + "\n]}\n")
    print(
        f"{TARGET.relative_to(ROOT)}: {len(lines)} countries, {TARGET.stat().st_size:,} bytes, "
        f"from {source.relative_to(ROOT)} (sha256 {hashlib.sha256(raw).hexdigest()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
