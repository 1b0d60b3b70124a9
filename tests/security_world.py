"""What the security tests (test_access_matrix.py, test_attacks.py) set up against the
real API: API keys of every kind (made as `tilekeeper auth key create` makes them), and
campaigns with a registered tile, a product collection ``X-products`` holding a product
and that product's file in the local store the API serves."""

from __future__ import annotations

import http.client
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from support.database import Database, products_settings
from support.stac import make_collection, make_item

from catalog_service.auth import keys

WRITE_SCOPES = ["stac:write", "campaigns:write", "products:write"]
TILE_GEOMETRY = {
    "type": "Polygon",
    "coordinates": [[[4, 50], [4.2, 50], [4.2, 50.2], [4, 50.2], [4, 50]]],
}
FILE = "P1/x.tif"  # the product file of every campaign's product P1, under X-products/


def suffix() -> str:
    return uuid.uuid4().hex[:6]


def new_key(database: Database, name: str, scopes: list[str]) -> str:
    """A valid API key; its identity is ``key:<name>``."""
    with psycopg.connect(database.report.logins.admin.dsn, autocommit=True) as conn:
        return keys.create_key(conn, name, scopes, None)[1]


def revoked_key(database: Database, name: str) -> str:
    """An admin key that was revoked."""
    with psycopg.connect(database.report.logins.admin.dsn, autocommit=True) as conn:
        info, token = keys.create_key(conn, name, ["admin"], None)
        assert keys.revoke_key(conn, info.id)
    return token


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def tile_address(lon: float, lat: float, z: int) -> str:
    """The web mercator z/x/y of the tile holding (lon, lat)."""
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return f"{z}/{x}/{y}"


def store_dir(database: Database) -> Path:
    return Path(str(products_settings(database).store))


def product_item(item_id: str, collection: str) -> dict[str, Any]:
    return make_item(item_id, collection, lon=4.0, lat=50.0)


def campaign(
    http: httpx.Client,
    database: Database,
    token: str,
    campaign_id: str,
    visibility: str = "public",
    products: bool = True,
    **definition: Any,
) -> None:
    """Campaign ``campaign_id`` made by ``token`` (its owner), with tile T1 and, unless
    ``products`` is False, ``<id>-products`` holding product P1 and its file."""
    body = {"id": campaign_id, "grid": "utm-20km", "visibility": visibility, **definition}
    made = http.post("/campaigns", json=body, headers=bearer(token))
    assert made.status_code == 201, made.text
    tiles = {"tiles": [{"id": "T1", "geometry": TILE_GEOMETRY}]}
    registered = http.post(f"/campaigns/{campaign_id}/tiles", json=tiles, headers=bearer(token))
    assert registered.status_code == 200, registered.text
    if not products:
        return
    collection = f"{campaign_id}-products"
    made = http.post("/collections", json=make_collection(collection), headers=bearer(token))
    assert made.status_code == 201, made.text
    write = {"writes": [{"items": [product_item("P1", collection)]}]}
    written = http.post(f"/collections/{collection}/products", json=write, headers=bearer(token))
    assert written.status_code == 200, written.text
    stored = store_dir(database) / collection / FILE
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(b"not really a tiff")


def plain_collection(http: httpx.Client, token: str, collection_id: str) -> None:
    """A collection that belongs to no campaign, with item P1."""
    made = http.post("/collections", json=make_collection(collection_id), headers=bearer(token))
    assert made.status_code == 201, made.text
    item = product_item("P1", collection_id)
    added = http.post(f"/collections/{collection_id}/items", json=item, headers=bearer(token))
    assert added.status_code == 201, added.text


@dataclass
class Answer:
    """An HTTP answer as compared byte for byte."""

    request: str
    status: int
    headers: dict[str, str]
    body: bytes


def answer_of(request: str, response: httpx.Response) -> Answer:
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Answer(request, response.status_code, headers, response.content)


def raw_request(api: str, method: str, raw_path: str, headers: dict[str, str]) -> Answer:
    """A request whose path goes out exactly as written (httpx would resolve `./` and
    `../` before sending)."""
    parts = urlsplit(api)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, raw_path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        shown = {k.lower(): v for k, v in response.getheaders()}
        return Answer(f"{method} {raw_path}", response.status, shown, body)
    finally:
        conn.close()


IGNORED_HEADERS = frozenset({"date", "content-length"})


def differences(hidden: Answer, missing: Answer, substitutions: dict[str, str]) -> str | None:
    """None when the answer about something hidden is the answer about something
    missing, once its names are substituted (``substitutions``: hidden -> missing, e.g.
    the ids, and their hex forms in paging tokens); else what differs."""

    def substituted(text: str) -> str:
        for old, new in substitutions.items():
            text = text.replace(old, new)
        return text

    problems = []
    if hidden.status != missing.status:
        problems.append(f"status {hidden.status} vs {missing.status}")
    body = substituted(hidden.body.decode("utf-8", "replace"))
    if body.encode() != missing.body:
        problems.append(f"body {hidden.body[:300]!r} vs {missing.body[:300]!r}")
    h = {k: substituted(v) for k, v in hidden.headers.items() if k not in IGNORED_HEADERS}
    m = {k: v for k, v in missing.headers.items() if k not in IGNORED_HEADERS}
    if h != m:
        problems.append(f"headers differ: {sorted(set(h.items()) ^ set(m.items()))}")
    return "; ".join(problems) or None
