"""The campaign map's cell tiles against the real API: zoomed out, where a campaign's tiles
are a few pixels wide, the map draws them from Mapbox vector tiles of cells (one square
per cell of the tile, in its most frequent status, with a count), made by PostGIS; the
map's filters (statuses and back-ends hidden) leave tiles out before they are counted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.grids import load_aoi, tiles_for
from catalog_service.jobs.mapview import CELL_EXTENT, MIN_CELL, cell_size

MVT_TYPE = "application/vnd.mapbox-vector-tile"


# A Mapbox vector tile read by hand (protobuf: tile.layers = 3; layer: name 1, features 2,
# keys 3, values 4, extent 5; feature: tags 2, type 3, geometry 4; value: string 1, int 4,
# uint 5, sint 6), enough for what the service writes.
def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    found: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            found.append((number, value))
        elif wire == 2:
            size, at = _varint(data, at)
            found.append((number, data[at : at + size]))
            at += size
        else:  # fixed 32/64 bit (floats and doubles): not written for these layers
            width = 4 if wire == 5 else 8
            found.append((number, data[at : at + width]))
            at += width
    return found


def _packed(data: bytes) -> list[int]:
    values, at = [], 0
    while at < len(data):
        value, at = _varint(data, at)
        values.append(value)
    return values


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


@dataclass
class Feature:
    properties: dict[str, Any]
    kind: int  # 1 point, 2 line, 3 polygon
    rings: list[list[tuple[int, int]]] = field(default_factory=list)


def _rings(commands: list[int]) -> list[list[tuple[int, int]]]:
    rings: list[list[tuple[int, int]]] = []
    x = y = at = 0
    while at < len(commands):
        command, count = commands[at] & 7, commands[at] >> 3
        at += 1
        if command == 7:  # ClosePath
            continue
        for _ in range(count):
            x += _zigzag(commands[at])
            y += _zigzag(commands[at + 1])
            at += 2
            if command == 1:  # MoveTo
                rings.append([])
            rings[-1].append((x, y))
    return rings


def read_mvt(data: bytes) -> dict[str, tuple[int, list[Feature]]]:
    layers: dict[str, tuple[int, list[Feature]]] = {}
    for number, layer in _fields(data):
        assert number == 3 and isinstance(layer, bytes)
        parts = _fields(layer)
        name = next(v for n, v in parts if n == 1)
        keys = [v.decode() for n, v in parts if n == 3 and isinstance(v, bytes)]
        values: list[Any] = []
        for n, v in parts:
            if n == 4 and isinstance(v, bytes):
                kind, raw = _fields(v)[0]
                if kind == 1 and isinstance(raw, bytes):
                    values.append(raw.decode())
                elif kind == 6 and isinstance(raw, int):
                    values.append(_zigzag(raw))
                else:
                    values.append(raw)
        extent = next((v for n, v in parts if n == 5), 4096)
        features = []
        for n, v in parts:
            if n != 2 or not isinstance(v, bytes):
                continue
            feature = dict(_fields(v))
            tags, commands, shape = feature.get(2, b""), feature.get(4, b""), feature.get(3, 0)
            assert isinstance(tags, bytes) and isinstance(commands, bytes)
            assert isinstance(shape, int)
            tag = _packed(tags)
            properties = {keys[tag[i]]: values[tag[i + 1]] for i in range(0, len(tag), 2)}
            features.append(Feature(properties, shape, _rings(_packed(commands))))
        assert isinstance(name, bytes) and isinstance(extent, int)
        layers[name.decode()] = (extent, features)
    return layers


def _area(ring: list[tuple[int, int]]) -> float:
    """The surveyor's formula in tile units (y down): positive for a ring drawn clockwise on
    screen, as the vector tile specification wants an exterior ring."""
    return (
        sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True))
        / 2
    )


@pytest.fixture(scope="module")
def campaign(api: str) -> tuple[str, list[str]]:
    """The browser tests' map campaign: utm-20km tiles over 4.0-5.0 E, 50.4-51.0 N, one
    running and one finished on `alpha`."""
    campaigns = Campaigns(HttpSession(api))
    campaign = f"cells-{uuid.uuid4().hex[:6]}"
    campaigns.create(
        {"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-03-01", "2024-09-30"],
         "backends": [{"name": "alpha", "url": "https://alpha.test/", "auth": "none"}]}
    )  # fmt: skip
    records = list(tile_records(tiles_for("utm-20km", load_aoi("4.0,50.4,5.0,51.0"))))
    campaigns.register(campaign, records)
    tiles = [r["id"] for r in records]
    for tile, statuses in ((tiles[0], ["running"]), (tiles[1], ["running", "finished"])):
        for status in statuses:
            change = {"tile": tile, "status": status, "set": {"backend_name": "alpha"}}
            campaigns.change(campaign, [change])
    return campaign, tiles


def _cells(api: str, campaign: str, tile: str, **params: Any) -> tuple[int, list[Feature]]:
    response = requests.get(f"{api}/campaigns/{campaign}/cells/{tile}.pbf", params=params, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MVT_TYPE
    layers = read_mvt(response.content)
    assert set(layers) <= {"cells"}
    return layers.get("cells", (CELL_EXTENT, []))


def test_cells_count_every_tile_once_in_squares_of_their_most_frequent_status(
    api: str, campaign: tuple[str, list[str]]
) -> None:
    name, tiles = campaign
    # The area lies in tiles 4/8/5 (a 20 km tile ~3 px wide: 4 px cells) and 6/32/21
    # (~12 px: 16 px cells, as wide as a tile or more so the cells leave no gaps).
    for tile, cell in (("4/8/5", MIN_CELL), ("6/32/21", 16)):
        extent, features = _cells(api, name, tile)
        assert extent == CELL_EXTENT
        assert sum(f.properties["n"] for f in features) == len(tiles), tile
        statuses = {f.properties["status"] for f in features}
        assert "not_started" in statuses and statuses <= {"not_started", "running", "finished"}
        for f in features:
            assert f.kind == 3 and len(f.rings) == 1, f
            ring = f.rings[0]
            xs, ys = {x for x, _ in ring}, {y for _, y in ring}
            assert len(xs) == 2 and len(ys) == 2, ring  # a square on the cell grid
            assert max(xs) - min(xs) == cell and max(ys) - min(ys) == cell, (tile, ring)
            assert min(xs) % cell == 0 and min(ys) % cell == 0
            assert _area(ring) > 0, "an exterior ring, clockwise on screen"
        cells = [(min(x for x, _ in f.rings[0]), min(y for _, y in f.rings[0])) for f in features]
        assert len(cells) == len(set(cells)), "one square per cell"
    # Zoomed in as far as the cells go, a cell holds one tile: every tile's status shows.
    _, features = _cells(api, name, "6/32/21")
    assert {f.properties["status"] for f in features} == {"not_started", "running", "finished"}


def test_hidden_statuses_and_backends_are_left_out_before_counting(
    api: str, campaign: tuple[str, list[str]]
) -> None:
    name, tiles = campaign
    for tile in ("4/8/5", "6/32/21"):
        _, shown = _cells(api, name, tile, hide_status=["not_started", "running"])
        assert {f.properties["status"] for f in shown} == {"finished"}, tile
        assert sum(f.properties["n"] for f in shown) == 1
        _, shown = _cells(api, name, tile, hide_backend=["alpha"])
        assert {f.properties["status"] for f in shown} == {"not_started"}, tile
        assert sum(f.properties["n"] for f in shown) == len(tiles) - 2
        _, none = _cells(api, name, tile, hide_status=["not_started"], hide_backend=["alpha"])
        assert none == []


def test_cells_outside_the_campaign_or_the_tile_matrix(
    api: str, campaign: tuple[str, list[str]]
) -> None:
    name, tiles = campaign
    assert _cells(api, name, "4/0/0") == (CELL_EXTENT, [])
    _, world = _cells(api, name, "0/0/0")  # the whole campaign in a cell or two
    assert sum(f.properties["n"] for f in world) == len(tiles)
    # The most frequent status wins (not the first by name: "finished" < "not_started").
    assert max(world, key=lambda f: f.properties["n"]).properties["status"] == "not_started"
    last = 2**22 - 1
    assert _cells(api, name, f"22/{last}/{last}") == (CELL_EXTENT, [])
    odd = ["", "'; DROP TABLE x; --", "ünïcode", "finished"]
    _, shown = _cells(api, name, "4/8/5", hide_status=odd, hide_backend=odd)
    # "finished" hidden, and with the back-end "" the tiles without one (as on the map).
    assert {f.properties["status"] for f in shown} == {"running"}
    for bad in ("2/9/0", "2/0/4", "23/0/0"):
        answer = requests.get(f"{api}/campaigns/{name}/cells/{bad}.pbf", timeout=30)
        assert answer.status_code in (400, 422), (bad, answer.status_code)
    assert requests.get(f"{api}/campaigns/{name}/cells/2/9/0.pbf", timeout=30).status_code == 400
    missing = requests.get(f"{api}/campaigns/no-such-{name}/cells/4/8/5.pbf", timeout=30)
    assert missing.status_code == 404


def test_cell_size_grows_with_the_campaign_tiles_on_screen() -> None:
    # A 20 km tile (~0.28 degrees wide): ~3 px at zoom 4, ~12 px at zoom 6.
    assert cell_size(0.28, 4) == MIN_CELL
    assert cell_size(0.28, 5) == 8
    assert cell_size(0.28, 6) == 16
    assert cell_size(0.28, 12) == 32  # at most
    assert cell_size(None, 3) == MIN_CELL  # a campaign without tiles


def test_the_map_page_configures_cells_below_the_vector_zoom(
    api: str, campaign: tuple[str, list[str]]
) -> None:
    import html
    import json
    import re

    name, _ = campaign
    page = requests.get(f"{api}/campaigns/{name}/map", timeout=30).text
    found = re.search(r'data-config="([^"]*)"', page)
    assert found
    config = json.loads(html.unescape(found.group(1)))
    assert config["vectorMinZoom"] == 5  # 4 px wide from zoom 5: cells below
    assert "mosaic" not in config  # no products yet
    assert "overview" not in page and "previews" not in page
