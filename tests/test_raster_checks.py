"""Rasters a back-end may send, checked from their header before any heavy work: small
hostile files made here (10,000 bands, a sparse 200,000 px square, a forged LAYOUT=COG,
a raster far outside its tile or in another CRS, an endless stream) each fail their
product with a reason, quickly, with nothing copied into the store; a normal product on
its tile still goes in (a COG byte for byte, a plain GeoTIFF converted)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.shutil import copy as gdal_copy
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import mapping
from support.database import Database, products_settings

from catalog_service.client.http import HttpSession
from catalog_service.grids.geometry import footprints
from catalog_service.settings import HarvestSettings
from ingest.engine import Ingester, Outcome
from ingest.errors import IngestError
from ingest.raster_checks import Expectations, check
from ingest.rasters import describe, make_cog
from ingest.sources import Product, Raster
from ingest.store import LocalStore

# The tile every product here belongs to: a utm-20km cell of zone 31N, as the grid makes it.
TILE = "T31-600-5640"
TILE_EPSG = 32631
WEST, SOUTH, SIZE = 600_000.0, 5_640_000.0, 20_000.0
TILE_GEOMETRY: dict[str, Any] = dict(
    mapping(footprints(np.array([WEST]), np.array([SOUTH]), SIZE, TILE_EPSG)[0])
)
QUICK_S = 30.0  # generous: each hostile file is refused in milliseconds


def write(
    path: Path,
    *,
    size: tuple[int, int] = (500, 500),  # width, height
    count: int = 4,
    dtype: str = "uint16",
    crs: str = f"EPSG:{TILE_EPSG}",
    origin: tuple[float, float] = (WEST, SOUTH + SIZE),  # the tile's upper-left corner
    pixel: float = 40.0,
    **profile: Any,
) -> Path:
    width, height = size
    data = np.random.default_rng(7).integers(1, 1000, (count, height, width)).astype(dtype)
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=dtype,
        crs=crs, transform=from_origin(*origin, pixel, pixel), nodata=0, **profile,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def sparse(path: Path, width: int, height: int, **profile: Any) -> Path:
    """A raster of ``width`` x ``height`` px whose blocks are all missing: a few bytes
    per block on disk (``sparse_ok``), every pixel nodata when read."""
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8",
        crs=f"EPSG:{TILE_EPSG}", transform=from_origin(WEST, SOUTH + SIZE, 1, 1),
        compress="deflate", sparse_ok=True, **profile,
    ):  # fmt: skip
        pass
    return path


def forge_cog_layout(src: Path, dst: Path, **options: Any) -> Path:
    """``src`` copied with COPY_SRC_OVERVIEWS: GDAL then writes LAYOUT=COG into the
    header whatever the file is (striped, without overviews). The fixture's own check:
    the forgery is there."""
    gdal_copy(str(src), str(dst), driver="GTiff", copy_src_overviews=True, **options)
    with rasterio.open(dst) as forged:
        assert forged.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert forged.overviews(1) == []
    return dst


class CountingStore(LocalStore):
    """The local product store, counting the staging files asked for: a file is copied
    into the store only through one of them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.staged = 0

    def staging_path(self) -> Path:
        self.staged += 1
        return super().staging_path()


@dataclass
class Engine:
    api: str
    store: CountingStore
    make: Callable[..., Ingester]

    def items(self, collection: str) -> list[str]:
        http = HttpSession(self.api)
        if not http.exists(f"collections/{collection}"):
            return []
        page = http.get(f"collections/{collection}/items", params={"limit": 100})
        return [feature["id"] for feature in page["features"]]


@pytest.fixture()
def engine(api: str, database: Database) -> Iterator[Engine]:
    root = Path(str(products_settings(database).store))
    store = CountingStore(root)

    def make(collection: str, **settings: Any) -> Ingester:
        limits = HarvestSettings(**{"footprint_tolerance": 0.1, "crs": "tile", **settings})
        return Ingester(HttpSession(api), store, collection, settings=limits)

    yield Engine(api, store, make)


def collection_id() -> str:
    return f"checks-{uuid.uuid4().hex[:8]}"


def on_tile(product_id: str, path: Path, **fields: Any) -> Product:
    """A campaign tile's product: within TILE, in its CRS."""
    return Product(
        product_id, [Raster(path, "data")], str(path), tile=TILE,
        tile_geometry=TILE_GEOMETRY, expected_crs=f"EPSG:{TILE_EPSG}", **fields,
    )  # fmt: skip


def files_in(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# -- a normal product ------------------------------------------------------------


def test_a_normal_product_on_its_tile_goes_in(engine: Engine, tmp_path: Path) -> None:
    """A COG covering its tile is stored byte for byte (one staging copy, made while
    hashing); a plain GeoTIFF of the same tile is converted (its COG is the one copy)."""
    cog = tmp_path / "cog.tif"
    make_cog(write(tmp_path / "src.tif", size=(1000, 1000), pixel=20.0), cog)
    plain = write(tmp_path / "plain.tif", size=(1000, 1000), pixel=20.0)  # striped
    assert check(cog) is True and check(plain) is False
    collection = collection_id()
    ingester = engine.make(collection)
    before = engine.store.staged
    outcomes = ingester.ingest_all([(on_tile("cog", cog), None), (on_tile("plain", plain), None)])
    assert [o.result for o in outcomes] == ["created", "created"], outcomes
    assert engine.store.staged - before == 2  # no copy of the plain file, one of its COG
    assert sorted(engine.items(collection)) == ["cog", "plain"]
    files = files_in(engine.store.root / collection)
    stored = {p.parent.parent.name: p for p in files if p.suffix == ".tif"}
    assert stored["cog"].read_bytes() == cog.read_bytes()
    valid, errors, _warnings = cog_validate(str(stored["plain"]), quiet=True)
    assert valid, errors
    with rasterio.open(stored["plain"]) as converted:
        assert converted.overviews(1)  # built by the conversion


# -- hostile rasters ---------------------------------------------------------------


def _bands(tmp: Path) -> Product:
    # 121 kB on disk; converting it asks GDAL for 512 px tiles of every band: 21 GB.
    path = write(tmp / "bands.tif", size=(1, 1), count=10_000, dtype="float64")
    return on_tile("bands", path)


def _sparse(tmp: Path) -> Product:
    # 1.6 MB on disk, 40 GB of pixels: decoding it kept a core busy for minutes.
    return on_tile("sparse", sparse(tmp / "sparse.tif", 200_000, 200_000))


def _forged(tmp: Path) -> Product:
    # LAYOUT=COG in its header, no overviews, 9.4 GiB of pixels in whole blocks: over the limit of a
    # file that belongs to no tile (8 GiB), as for `tilekeeper ingest` of a file.
    big = sparse(tmp / "big.tif", 100_000, 100_000, tiled=True)
    forged = forge_cog_layout(big, tmp / "forged.tif", tiled=True, sparse_ok=True)
    return Product("forged", [Raster(forged, "data")], str(forged))


def _far(tmp: Path) -> Product:
    path = write(tmp / "far.tif", origin=(WEST + 100_000, SOUTH + SIZE))  # 100 km east
    return on_tile("far", path)


def _continent(tmp: Path) -> Product:
    # From the tile (Belgium) 2,000 km south (North Africa), as one product did.
    path = write(tmp / "continent.tif", size=(20, 2000), count=1, pixel=1000.0)
    return on_tile("continent", path)


def _beside(tmp: Path) -> Product:
    # Within the tolerance (2 km) of the tile, but not on it.
    path = write(tmp / "beside.tif", size=(10, 10), origin=(WEST + SIZE + 1000, SOUTH + 5000))
    return on_tile("beside", path)


def _other_crs(tmp: Path) -> Product:
    # The middle of the tile, but in zone 32's CRS (its grid turned by a few degrees).
    inner = (WEST + 3000, SOUTH + 3000, WEST + SIZE - 3000, SOUTH + SIZE - 3000)
    west, south, east, north = transform_bounds(f"EPSG:{TILE_EPSG}", "EPSG:32632", *inner)
    path = write(
        tmp / "other.tif", crs="EPSG:32632", origin=(west, north),
        pixel=max(east - west, north - south) / 500,
    )  # fmt: skip
    return on_tile("other", path)


def _stream(tmp: Path) -> Product:
    # A result file that never ends (a named pipe fed without end): it used to be
    # hashed and copied into the store before anything looked at it.
    path = tmp / "stream.tif"
    os.mkfifo(path)
    return on_tile("stream", path)


# Each case: how its file is made, the reason its product fails with, and whether that
# reason is the raster limit (which names its setting).
HOSTILE: dict[str, tuple[Callable[[Path], Product], str, bool]] = {
    "10,000 bands": (_bands, "10000 band(s) of float64 is 19.5 GiB to decode", True),
    "sparse 200,000 px": (_sparse, "200000 x 200000 px x 1 band(s) of uint8 is 37.3 GiB", True),
    "forged COG layout": (
        _forged,
        "100000 x 100000 px x 1 band(s) of uint8 is 9.4 GiB to decode",
        True,
    ),
    "far outside its tile": (_far, "footprint reaches 100.0 km beyond tile T31-600-5640", False),
    "Belgium to North Africa": (_continent, "km beyond tile T31-600-5640 (allowed: 2.0 km", False),
    "beside its tile": (_beside, "footprint does not overlap tile T31-600-5640", False),
    "another CRS": (_other_crs, "in EPSG:32632, not in its tile's EPSG:32631", False),
    "endless stream": (_stream, "not a readable raster", False),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_raster_fails_its_product_before_any_copy(
    engine: Engine, tmp_path: Path, case: str
) -> None:
    build, reason, names_limit = HOSTILE[case]
    product = build(tmp_path)
    sent = [0]
    feeder = None
    if case == "endless stream":
        path = product.rasters[0].path
        feeder = threading.Thread(target=_feed, args=(path, sent), daemon=True)
        feeder.start()
    collection = collection_id()
    ingester = engine.make(collection)
    before, staged = files_in(engine.store.root), engine.store.staged
    outcomes: list[Outcome] = []
    # On a thread of its own, so that a regression (a file read to its end, a pipe
    # opened twice) fails the test instead of hanging it.
    worker = threading.Thread(target=lambda: outcomes.append(ingester.ingest(product)))
    worker.daemon = True
    start = time.monotonic()
    worker.start()
    worker.join(QUICK_S)
    seconds = time.monotonic() - start
    assert not worker.is_alive(), f"still checking {case} after {QUICK_S} s"
    if feeder is not None:
        feeder.join(QUICK_S)
        assert not feeder.is_alive()
        assert sent[0] < 1 << 20  # GDAL read its first bytes, nothing hashed them all
    (outcome,) = outcomes
    assert outcome.result == "failed" and outcome.error, outcome
    assert reason in outcome.error
    assert ("TILEKEEPER_HARVEST_MAX_RASTER_BYTES" in outcome.error) is names_limit
    assert seconds < QUICK_S, seconds
    assert engine.store.staged == staged  # nothing was copied, not even for a moment
    assert files_in(engine.store.root) == before
    assert engine.items(collection) == []


def _feed(path: Path, sent: list[int]) -> None:
    """Writes a TIFF-looking start and then zeros until the reader goes away (or 256 MB,
    so that a regression fails the test instead of hanging it)."""
    try:
        with path.open("wb") as pipe:
            pipe.write(b"II*\x00" + bytes(4092))
            sent[0] += 4096
            while sent[0] < 256 << 20:
                pipe.write(bytes(1 << 16))
                sent[0] += 1 << 16
    except BrokenPipeError:
        pass


# -- COG validation ------------------------------------------------------------------


def test_a_forged_cog_layout_is_validated_and_the_raster_converted(
    engine: Engine, tmp_path: Path
) -> None:
    """GDAL's LAYOUT=COG is not taken for a COG: a tiled raster without overviews and a
    striped one, both with the header, are converted (overviews built)."""
    src = write(tmp_path / "src.tif", size=(1500, 1500), count=1, pixel=10.0)
    tiled = forge_cog_layout(src, tmp_path / "tiled.tif", tiled=True)
    striped = forge_cog_layout(src, tmp_path / "striped.tif")
    assert cog_validate(str(tiled), quiet=True)[0]  # rio-cogeo alone would take it
    assert check(tiled) is False and check(striped) is False
    collection = collection_id()
    outcomes = engine.make(collection).ingest_all(
        [(on_tile("tiled", tiled), None), (on_tile("striped", striped), None)]
    )
    assert [o.result for o in outcomes] == ["created", "created"], outcomes
    for stored in files_in(engine.store.root / collection):
        if stored.suffix != ".tif":
            continue
        assert stored.read_bytes() not in (tiled.read_bytes(), striped.read_bytes())
        valid, errors, warnings = cog_validate(str(stored), quiet=True)
        assert valid and not warnings, (errors, warnings)
        with rasterio.open(stored) as cog:
            assert cog.overviews(1)


def test_a_small_raster_needs_no_overviews_to_be_a_cog(tmp_path: Path) -> None:
    small = tmp_path / "small.tif"
    make_cog(write(tmp_path / "src.tif", size=(400, 300)), small)
    with rasterio.open(small) as src:
        assert src.overviews(1) == []
    assert check(small) is True


# -- limits, footprint and CRS, checked directly -----------------------------------------


def test_one_block_of_too_many_bands_fails_under_a_raised_limit(tmp_path: Path) -> None:
    """Under a raster limit raised to 2 GiB, 200 float64 bands still make one 512 px
    window of 400 MiB, which GDAL would hold at once (past its block cache)."""
    path = write(tmp_path / "wide.tif", size=(1, 1), count=200, dtype="float64")
    with pytest.raises(IngestError, match=r"400\.0 MiB decoded at once, over "):
        check(path, Expectations(max_bytes=2 << 30))
    fewer = write(tmp_path / "fewer.tif", size=(1, 1), count=20, dtype="float64")
    assert check(fewer, Expectations(max_bytes=2 << 30)) is True


def test_a_million_tiny_blocks_fail_before_they_are_looked_up(tmp_path: Path) -> None:
    """16 px tiles: 1,050,625 blocks in 270 MB of pixels (under a 1 GiB limit), each an
    offset to look up (truncation check, COG validation) and a block to decode."""
    path = sparse(tmp_path / "tiny.tif", 16_400, 16_400, tiled=True, blockxsize=16, blockysize=16)
    start = time.monotonic()
    with pytest.raises(IngestError, match="1,050,625 blocks of 16 x 16 px, over 1,048,576"):
        check(path, Expectations(max_bytes=1 << 30))
    assert time.monotonic() - start < QUICK_S


def test_the_raster_limit_counts_whole_blocks(tmp_path: Path) -> None:
    """513 x 513 px decodes as 1,024 x 1,024 (four 512 px tiles): 1 MiB at one byte a
    pixel, over a limit just under it, though 513 x 513 bytes are a quarter of it."""
    path = write(tmp_path / "edge.tif", size=(513, 513), count=1, dtype="uint8")
    with pytest.raises(IngestError, match=r"is 1\.0 MiB to decode"):
        check(path, Expectations(max_bytes=(1 << 20) - 1))
    assert check(path, Expectations(max_bytes=1 << 21)) is False  # striped: to convert


@pytest.mark.parametrize(
    ("beyond_m", "passes"), [(0.0, True), (1_000.0, True), (1_900.0, True), (3_000.0, False)]
)
def test_the_footprint_may_reach_beyond_its_tile_by_the_tolerance(
    tmp_path: Path, beyond_m: float, passes: bool
) -> None:
    """Tolerance 0.1 of a 20 km tile: 2 km all round."""
    side = SIZE + 2 * beyond_m
    path = write(
        tmp_path / "grown.tif", size=(200, 200), pixel=side / 200,
        origin=(WEST - beyond_m, SOUTH + SIZE + beyond_m),
    )  # fmt: skip
    expect = Expectations(tile=TILE, tile_geometry=TILE_GEOMETRY, tolerance=0.1)
    if passes:
        check(path, expect)
    else:
        with pytest.raises(IngestError, match=r"reaches 3\.0 km beyond tile T31-600-5640"):
            check(path, expect)
    tight = Expectations(tile=TILE, tile_geometry=TILE_GEOMETRY, tolerance=0.0)
    if beyond_m == 0.0:  # exactly on the tile passes without any tolerance
        check(path, tight)
    else:
        with pytest.raises(IngestError, match="km beyond tile"):
            check(path, tight)


def test_the_crs_is_compared_as_a_crs(tmp_path: Path) -> None:
    path = write(tmp_path / "utm.tif")
    for same in ("EPSG:32631", "epsg:32631", "+proj=utm +zone=31 +datum=WGS84 +units=m"):
        check(path, Expectations(crs=same))
    with pytest.raises(IngestError, match="in EPSG:32631, not in its tile's EPSG:4326"):
        check(path, Expectations(crs="EPSG:4326"))
    with pytest.raises(IngestError, match="is not a CRS"):
        check(path, Expectations(crs="EPSG:nonsense"))


def test_any_crs_is_accepted_when_the_settings_say_so(engine: Engine, tmp_path: Path) -> None:
    product = _other_crs(tmp_path)
    collection = collection_id()
    outcome = engine.make(collection, crs="any").ingest(product)
    assert outcome.result == "created", outcome
    assert engine.items(collection) == ["other"]


def test_text_from_the_file_is_made_inert(tmp_path: Path) -> None:
    """Band descriptions go into the item (raster:bands name), short, on one line."""
    path = write(tmp_path / "described.tif", size=(64, 64), count=2)
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, "red\x1b[2J\r\nfake log line " + "x" * 5000)
        dst.set_band_description(2, "nir")
    info = describe(path)
    first, second = (band.description for band in info.bands)
    assert first is not None and first.startswith("red[2J fake log line x")
    assert len(first) < 260 and "\x1b" not in first and "\n" not in first
    assert second == "nir"


def test_a_tiff_of_many_images_is_refused_before_gdal_walks_them(tmp_path: Path) -> None:
    """100,000 tiny IFDs appended to a small raster cost GDAL 97 s and 500 MB to open."""
    path = write(tmp_path / "many.tif", size=(16, 16))
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00", "rasterio writes little-endian classic TIFF"
    # Walk to the last IFD and chain 1,000 minimal ones (one entry each) after it.
    offset = int.from_bytes(data[4:8], "little")
    while True:
        entries = int.from_bytes(data[offset : offset + 2], "little")
        next_at = offset + 2 + 12 * entries
        following = int.from_bytes(data[next_at : next_at + 4], "little")
        if not following:
            break
        offset = following
    for _ in range(1000):
        new = len(data) + (len(data) % 2)
        data += b"\x00" * (new - len(data))
        data[next_at : next_at + 4] = new.to_bytes(4, "little")
        # One entry: NewSubfileType = 1 (a reduced-resolution image), then no next IFD.
        data += (1).to_bytes(2, "little") + bytes.fromhex("fe0004000100000001000000")
        next_at = len(data)
        data += b"\x00\x00\x00\x00"
    path.write_bytes(bytes(data))
    with pytest.raises(IngestError, match="more than 64 images in one TIFF"):
        check(path)
    assert check(write(tmp_path / "fine.tif", size=(16, 16))) in (True, False)
