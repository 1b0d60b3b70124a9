"""The STAC API validator (stac-api-validator 0.6.8, offline with the vendored schemas)
finds no error: core, features, collections, item search and filter, on a campaign's
tile jobs and on a plain collection."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from support.stac import make_collection, make_item

# The schemas ingest validates with: carried by the repository (a clone needs nothing beside it).
SCHEMAS = Path(__file__).resolve().parents[1] / "ingest" / "schemas"
WRAPPER = Path(__file__).parent / "conformance" / "validate_offline.py"
AREA = '{"type":"Polygon","coordinates":[[[3.9,49.9],[4.3,49.9],[4.3,50.3],[3.9,50.3],[3.9,49.9]]]}'


def _validate(api: str, collection: str) -> str:
    classes = ["core", "features", "collections", "item-search", "filter"]
    command = [sys.executable, str(WRAPPER), str(SCHEMAS), "--root-url", f"{api}/"]
    for name in classes:
        command += ["--conformance", name]
    command += ["--collection", collection, "--geometry", AREA]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    return done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["campaign", "plain"])
def test_stac_api_validator_finds_no_error(api: str, http: httpx.Client, kind: str) -> None:
    assert SCHEMAS.is_dir(), f"the vendored STAC schemas are expected in {SCHEMAS}"
    collection = f"conform-{kind}-{uuid.uuid4().hex[:6]}"
    ring = [[4, 50], [4.1, 50], [4.1, 50.1], [4, 50.1], [4, 50]]
    if kind == "campaign":
        body = {"id": collection, "grid": "utm-20km", "temporal_extent": ["2024-03-01", "2024-09-30"]}  # fmt: skip
        assert http.post("/campaigns", json=body).status_code == 201
        tiles = [{"id": f"T{n}", "geometry": {"type": "Polygon", "coordinates": [ring]}} for n in range(3)]  # fmt: skip
        assert http.post(f"/campaigns/{collection}/tiles", json={"tiles": tiles}).status_code == 200
    else:
        assert http.post("/collections", json=make_collection(collection)).status_code == 201
        for n in range(3):
            item = make_item(f"i{n}", collection, lon=4.0, lat=50.0)
            assert http.post(f"/collections/{collection}/items", json=item).status_code == 201
    report = _validate(api, collection)
    assert "Errors: none" in report, report[-6000:]
