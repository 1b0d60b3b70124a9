"""The service under schemathesis (property-based fuzzing from its own OpenAPI), on a
database of its own holding a plain collection, a campaign with tiles and products:
no server error, no status the OpenAPI does not document, every response valid against
its schema. Run with a valid admin key, then with a key of the wrong scope and with no
credential: those two store nothing at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from support.database import Database, admin_token, own_database, start_api
from support.stac import make_collection, make_item

from catalog_service.auth import keys

CONFIG = Path(__file__).parent / "fuzz" / "schemathesis.toml"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
# Each run fuzzes with more than one seed (one seed explores one corner); another is
# added with TILEKEEPER_FUZZ_SEED, e.g. to reproduce a finding of a local run.
SEEDS = [1, 20261206, *[int(s) for s in os.environ.get("TILEKEEPER_FUZZ_SEED", "").split(",") if s]]


@pytest.fixture(scope="module")
def fuzz_db() -> Iterator[Database]:
    with own_database("tilekeeper-fuzz-") as db:
        yield db


@pytest.fixture(scope="module")
def fuzz_api(fuzz_db: Database) -> Iterator[str]:
    server = start_api(fuzz_db)
    admin = {"Authorization": f"Bearer {admin_token(fuzz_db)}"}
    with httpx.Client(base_url=server.url, headers=admin, timeout=60) as http:
        http.get("/_mgmt/health").raise_for_status()
        assert http.post("/collections", json=make_collection("fuzz-plain")).status_code == 201
        for n in range(3):
            item = make_item(f"fuzz-{n}", "fuzz-plain", lon=4 + n / 10)
            assert http.post("/collections/fuzz-plain/items", json=item).status_code == 201
        body = {"id": "fuzz-campaign", "grid": "utm-20km"}
        assert http.post("/campaigns", json=body).status_code == 201
        ring = [[4, 50], [4.1, 50], [4.1, 50.1], [4, 50.1], [4, 50]]
        tiles = [{"id": f"T{n}", "geometry": {"type": "Polygon", "coordinates": [ring]}} for n in range(1, 5)]  # fmt: skip
        assert http.post("/campaigns/fuzz-campaign/tiles", json={"tiles": tiles}).status_code == 200
        products = "fuzz-campaign-products"
        assert http.post("/collections", json=make_collection(products)).status_code == 201
        product = make_item("P1", products)
        assert http.post(f"/collections/{products}/items", json=product).status_code == 201
    yield server.url
    server.stop()


def _fuzz(
    url: str,
    seconds: int,
    headers: dict[str, str],
    tmp: Path,
    exclude: str | None = None,
    seed: int = 1,
) -> None:
    """One schemathesis run; fails the test with its report when it finds anything."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(CONFIG),
        "run", f"{url}/api",
        "--checks", CHECKS,
        "--seed", str(seed),
        "--max-examples", "10",
        "--phases", "examples,coverage,fuzzing",
        "--max-time", str(seconds),
        "--workers", "2",
        "--request-timeout", "30",
        "--no-color",
    ]  # fmt: skip
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if exclude:
        command += ["--exclude-path-regex", exclude]
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=seconds + 180)
    report = done.stdout[-12_000:] + done.stderr[-2_000:]
    assert "Loaded specification" in done.stdout, report
    # A failed check is ours; so is every error but schemathesis' own crashes (seen: a
    # CPython AST recursion error inside its data generation).
    errors = re.findall(r"🚫 ([A-Za-z ]+): \d+", done.stdout)
    ours = [kind for kind in errors if kind.strip() != "Runtime Error"]
    assert "Failures:" not in done.stdout and not ours, f"seed {seed}:\n{report}"


def _state(db: Database) -> list[tuple[object, ...]]:
    """Everything a write could change."""
    return db.sql(
        "SELECT (SELECT md5(string_agg(id || content::text, ',' ORDER BY id)) FROM pgstac.collections),"
        " (SELECT md5(string_agg(collection || id || content::text, ',' ORDER BY collection, id)) FROM pgstac.items),"
        " (SELECT count(*) FROM tilekeeper.job_history),"
        " (SELECT count(*) FROM tilekeeper.workers),"
        " (SELECT count(*) FROM tilekeeper.api_keys)"
    )  # fmt: skip


@pytest.mark.slow
def test_fuzzing_without_a_valid_write_scope_stores_nothing(
    fuzz_api: str, fuzz_db: Database, tmp_path: Path
) -> None:
    with psycopg.connect(fuzz_db.report.logins.admin.dsn, autocommit=True) as conn:
        reader = keys.create_key(conn, "fuzz-wrong-scope", ["products:write"], None)[1]
    before = _state(fuzz_db)
    _fuzz(fuzz_api, 45, {}, tmp_path)
    # Every route but the two product writes, which that key may use.
    wrong_scope = {"Authorization": f"Bearer {reader}"}
    _fuzz(fuzz_api, 45, wrong_scope, tmp_path, exclude="/products$|/product$")
    assert _state(fuzz_db) == before


@pytest.mark.slow
def test_fuzzing_with_an_admin_key_finds_no_server_error(
    fuzz_api: str, fuzz_db: Database, tmp_path: Path
) -> None:
    assert shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    admin = {"Authorization": f"Bearer {admin_token(fuzz_db)}"}
    for seed in SEEDS:
        _fuzz(fuzz_api, 150 // len(SEEDS), admin, tmp_path, seed=seed)
