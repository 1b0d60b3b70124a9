"""A campaign's products as one Cloud-Optimized GeoTIFF, with a STAC item of its
provenance (`tilekeeper export ID --format mosaic`).

The products' COG assets are read through the API with the export's own session (its API
key), or straight from the local product store when an href is the API's
``products/files/`` path and the file is there; every file is checked against its
item's ``file:checksum``. Inputs in another CRS than the most common one are warped to it
(``gdalwarp -of VRT``); a VRT over all of them (``gdalbuildvrt``, later products over
earlier ones) is written as one COG by rio-cogeo (deflate, internal overviews). Above
``max_pixels`` no single COG is written: the VRT over the inputs (copied beside it) and a
COG of it at a coarser resolution (its overview) instead.

Beside the output, ``<name>.json``: a STAC 1.1 item with the projection and raster fields
of the file, the file's own checksum and size, a ``derived_from`` link per product and
``tilekeeper:provenance``, every product's item id, asset href and checksum."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree

import rasterio
import requests
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from catalog_service.client.http import ApiError, HttpSession
from catalog_service.errors import TilekeeperError
from catalog_service.ids import PRODUCTS_SUFFIX, campaign_products_id, id_problem
from catalog_service.timestamps import utc_now_text
from ingest.export import iter_items
from ingest.items import EXT, STAC_VERSION, software
from ingest.rasters import COG_TYPE, FileDigest, describe, is_categorical, open_geotiff
from ingest.store import LOCAL_FILES_PATH

logger = logging.getLogger(__name__)

# Above this many pixels (width x height of the mosaic) no single COG is written: a VRT
# and a COG of its overview instead (2^31 pixels of 4 float32 bands are 32 GiB).
DEFAULT_MAX_PIXELS = 2**31
VRT_TYPE = "application/xml"  # GDAL's VRT has no registered media type
EXTENSIONS = [
    f"{EXT}/projection/v1.2.0/schema.json",
    f"{EXT}/raster/v1.1.0/schema.json",
    f"{EXT}/file/v2.1.0/schema.json",
    f"{EXT}/processing/v1.2.0/schema.json",
]
CHUNK = 4 << 20
# The mosaic's smallest overview is at most this wide.
OVERVIEW_MIN_PX = 256
# How often reading inputs is reported at least (seconds), besides every 10 %.
REPORT_EVERY_S = 10.0

Report = Callable[[str], None]
INPUTS_MARKER = ".tilekeeper-mosaic-inputs"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.~-]")


@dataclass
class Input:
    item: str
    asset: str
    href: str
    checksum: str | None
    size: int | None
    datetime: str | None
    path: Path | None = None
    local: bool = False  # read in place from the local product store
    crs: str = ""


@dataclass
class MosaicResult:
    collection: str
    path: Path  # the COG, or the VRT when too large for one
    item_path: Path
    inputs: int
    reprojected: int
    pixels: int
    as_vrt: bool
    overview: Path | None = None
    seconds: float = 0.0
    item: dict[str, Any] = field(default_factory=dict)


def products_collection(http: HttpSession, ident: str) -> str:
    """The product collection of ``ident``: a campaign id or its product collection's id.
    A collection the caller may not see (another tenant's private campaign) is missing."""
    problem = id_problem(ident, "campaign or collection id")
    if problem:
        raise TilekeeperError(problem)
    candidates = [campaign_products_id(ident)]
    if ident.endswith(PRODUCTS_SUFFIX):
        candidates.insert(0, ident)
    try:
        found = next((c for c in candidates if http.exists(f"collections/{c}")), None)
        campaign_only = found is None and not ident.endswith(PRODUCTS_SUFFIX)
        campaign_only = campaign_only and http.exists(f"collections/{ident}")
    except ApiError as exc:
        if exc.status in (401, 403):
            raise TilekeeperError(
                f"the API refused your credential ({exc.status}): check the key "
                "(--api-key or TILEKEEPER_API_KEY)"
            ) from exc
        raise
    if found is not None:
        return found
    if campaign_only:
        raise TilekeeperError(
            f"campaign {ident} has no products yet (no collection {campaign_products_id(ident)}): "
            f"harvest its finished tiles first (`tilekeeper ingest --campaign {ident}`)"
        )
    raise TilekeeperError(
        f"no campaign or product collection {ident!r} here, or not one your API key may "
        "read: check the id (`tilekeeper campaign list`) and the key (--api-key or "
        "TILEKEEPER_API_KEY)"
    )


def _cog_assets(item: dict[str, Any], asset: str | None) -> dict[str, dict[str, Any]]:
    found = {}
    for key, value in (item.get("assets") or {}).items():
        if not isinstance(value, dict) or not isinstance(value.get("href"), str):
            continue
        kind = str(value.get("type", ""))
        roles = value.get("roles") or ["data"]
        wanted = asset is None or key == asset
        if wanted and kind.startswith("image/tiff; application=geotiff") and "data" in roles:
            found[key] = value
    return found


def _inputs(http: HttpSession, collection: str, asset: str | None) -> list[Input]:
    inputs: list[Input] = []
    keys: set[str] = set()
    for item in iter_items(http, collection):
        properties = item.get("properties") or {}
        if properties.get("deprecated"):  # an earlier version of a product
            continue
        for key, value in _cog_assets(item, asset).items():
            keys.add(key)
            when = properties.get("datetime") or properties.get("start_datetime")
            inputs.append(
                Input(item["id"], key, value["href"], value.get("file:checksum"),
                      value.get("file:size"), when)
            )  # fmt: skip
    if len(keys) > 1:
        raise TilekeeperError(
            f"the products of {collection} have several COG assets ({', '.join(sorted(keys))}): "
            "say which to mosaic with --asset KEY"
        )
    if not inputs:
        what = f"a COG asset {asset!r}" if asset else "a COG asset"
        raise TilekeeperError(
            f"collection {collection} has no product with {what} to mosaic: harvest or "
            "ingest its products first (`tilekeeper ingest --campaign ...`)"
        )
    # Later products over earlier ones: gdalbuildvrt draws the last source on top.
    inputs.sort(key=lambda i: (i.datetime or "", i.item, i.asset))
    return inputs


def _local_file(http: HttpSession, href: str, store: Path | None) -> Path | None:
    """The local store's file an href of the API's file route names, if it is here."""
    prefix = http.root_url + LOCAL_FILES_PATH + "/"
    if store is None or not href.startswith(prefix):
        return None
    key = unquote(urlsplit(href[len(prefix) :]).path)
    root = store.resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def _download(http: HttpSession, source: Input, target: Path) -> None:
    """An asset's bytes into ``target``: the API's with its session (and key); any other
    host's through the egress policy, without the key."""
    if source.href.startswith(http.root_url):
        limit = source.size if source.size is not None else None
        try:
            with http.session.get(source.href, stream=True, timeout=120) as response:
                if response.status_code in (401, 403, 404):
                    raise TilekeeperError(
                        f"product {source.item}: its file {source.href} answers "
                        f"{response.status_code}: check your API key"
                    )
                response.raise_for_status()
                written = 0
                with target.open("wb") as out:
                    for chunk in response.iter_content(CHUNK):
                        written += len(chunk)
                        if limit is not None and written > limit:
                            raise TilekeeperError(
                                f"product {source.item}: {source.href} is larger than its "
                                f"file:size ({limit} bytes)"
                            )
                        out.write(chunk)
        except requests.RequestException as exc:
            raise TilekeeperError(f"cannot download {source.href}: {exc}") from exc
        return
    from catalog_service.egress import egress_session
    from ingest.download import DownloadLimits, download
    from ingest.errors import IngestError

    try:
        download(source.href, target, egress_session(), DownloadLimits.for_files())
    except IngestError as exc:
        raise TilekeeperError(f"product {source.item}: {exc}") from exc


def _file_name(n: int, source: Input) -> str:
    """An input's file name: its order, item id and asset key, in plain characters (an
    asset key is anybody's text; a name starting with a digit is no GDAL option)."""
    return _UNSAFE.sub("_", f"{n:06d}-{source.item}-{source.asset}")[:200] + ".tif"


def _fetch(
    http: HttpSession, inputs: list[Input], work: Path, store: Path | None, report: Report
) -> None:
    """Every input on disk (in place in the local store, else downloaded into ``work``),
    its checksum checked."""
    started = last = time.monotonic()
    step = max(1, len(inputs) // 10)
    local_count = 0
    for n, source in enumerate(inputs, 1):
        local = _local_file(http, source.href, store)
        path = local
        if local is None or (source.size is not None and local.stat().st_size != source.size):
            path = work / _file_name(n, source)
            _download(http, source, path)
        assert path is not None
        digest = FileDigest.of(path)
        if source.checksum and digest.checksum != source.checksum and path == local:
            # The local store holds other bytes (another installation's): the API's.
            path = work / _file_name(n, source)
            _download(http, source, path)
            digest = FileDigest.of(path)
        if source.checksum and digest.checksum != source.checksum:
            raise TilekeeperError(
                f"product {source.item}: its file {source.href} does not match its "
                f"file:checksum ({digest.checksum} != {source.checksum}): ingest the product "
                "again and export once more"
            )
        source.checksum = source.checksum or digest.checksum
        source.size = digest.size
        source.path, source.local = path, path == local
        local_count += source.local
        now = time.monotonic()
        if n % step == 0 or n == len(inputs) or now - last >= REPORT_EVERY_S:
            last = now
            report(
                f"read {n}/{len(inputs)} inputs ({local_count} from the local product store, "
                f"{n - local_count} through the API; {now - started:.1f} s)"
            )


def _gdal(*args: str, cwd: Path) -> str:
    """A GDAL command line tool; its messages (stderr, else stdout)."""
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=24 * 3600)
    except FileNotFoundError as exc:
        raise TilekeeperError(
            f"{args[0]} not found: install GDAL's command line tools (Debian: gdal-bin)"
        ) from exc
    if done.returncode != 0:
        raise TilekeeperError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-1000:]}")
    return done.stderr or done.stdout


@dataclass
class _Grid:
    crs: str
    resolution: float
    count: int
    dtype: str
    categorical: bool
    reprojected: int = 0


def _grid(inputs: list[Input]) -> _Grid:
    """The mosaic's CRS (the most common of the inputs'), resolution (the finest in that
    CRS) and bands (every input must have the same)."""
    shapes: Counter[tuple[int, str]] = Counter()
    crss: Counter[str] = Counter()
    categorical = False
    resolutions: dict[str, float] = {}
    for source in inputs:
        assert source.path is not None
        with open_geotiff(source.path) as src:
            if src.crs is None:
                raise TilekeeperError(f"product {source.item}: its file has no CRS")
            source.crs = src.crs.to_string()
            crss[source.crs] += 1
            shapes[(src.count, src.dtypes[0])] += 1
            if len(set(src.dtypes)) > 1:
                raise TilekeeperError(f"product {source.item}: bands of different data types")
            categorical = categorical or is_categorical(src)
            res = min(abs(src.res[0]), abs(src.res[1]))
            resolutions[source.crs] = min(res, resolutions.get(source.crs, res))
    if len(shapes) > 1:
        (common, _), *_ = shapes.most_common()
        odd = [
            s.item for s in inputs if s.path and _bands(s.path) != common
        ][:10]  # fmt: skip
        raise TilekeeperError(
            f"the products do not share their bands ({', '.join(f'{c} x {t}' for c, t in shapes)}); "
            f"these differ from the most common {common[0]} x {common[1]}: {', '.join(odd)}"
        )
    (crs, _), *_ = crss.most_common()
    (count, dtype), *_ = shapes
    return _Grid(crs, resolutions[crs], count, dtype, categorical)


def _bands(path: Path) -> tuple[int, str]:
    with open_geotiff(path) as src:
        return src.count, src.dtypes[0]


def _build_vrt(inputs: list[Input], grid: _Grid, vrt: Path, warp_dir: Path) -> Path:
    """A VRT over the inputs (each in the grid's CRS: warped into ``warp_dir`` when not),
    naming them relative to itself."""
    vrt, warp_dir = vrt.absolute(), warp_dir.absolute()
    folder = vrt.parent
    sources = []
    for n, source in enumerate(inputs, 1):
        assert source.path is not None
        path = source.path
        if source.crs != grid.crs:
            warped = warp_dir / f"{path.stem}-warped-{n}.vrt"
            resampling = "near" if grid.categorical else "bilinear"
            _gdal(
                "gdalwarp", "-q", "-of", "VRT", "-t_srs", grid.crs,
                "-tr", repr(grid.resolution), repr(grid.resolution), "-r", resampling,
                os.path.relpath(path, warp_dir), warped.name, cwd=warp_dir,
            )  # fmt: skip
            grid.reprojected += 1
            path = warped
        sources.append(os.path.relpath(path, folder))
    listing = warp_dir / f".{vrt.name}.inputs.txt"
    listing.write_text("\n".join(sources) + "\n")
    messages = _gdal(
        "gdalbuildvrt", "-q", "-resolution", "highest", "-input_file_list", str(listing),
        vrt.name, cwd=folder,
    )  # fmt: skip
    listing.unlink()
    band = ElementTree.parse(vrt).getroot().find("VRTRasterBand")
    used = len(band.findall("./*/SourceFilename")) if band is not None else 0
    if used != len(inputs):  # gdalbuildvrt skips what it cannot mosaic, with a warning
        raise TilekeeperError(
            f"gdalbuildvrt took {used} of the {len(inputs)} inputs: {messages.strip()[-1000:]}"
        )
    return vrt


def _cog(source: Any, target: Path, categorical: bool) -> None:
    """``source`` (a path or a dataset) as a COG: deflate, 512 px tiles, internal overviews
    down to 256 px (rio-cogeo's own choice stops at one tile: none below 512 px)."""
    with rasterio.open(source) if isinstance(source, (str, Path)) else _same(source) as src:
        largest = max(src.width, src.height)
    levels = max(0, math.ceil(math.log2(largest / OVERVIEW_MIN_PX))) if largest > 1 else 0
    profile = cog_profiles.get("deflate")  # type: ignore[no-untyped-call]
    profile.update({"BIGTIFF": "IF_SAFER", "blockxsize": 512, "blockysize": 512})
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        cog_translate(
            source, str(partial), profile, quiet=True, in_memory=False,
            overview_resampling="mode" if categorical else "average", overview_level=levels,
            config={"GDAL_NUM_THREADS": "2", "GDAL_TIFF_OVR_BLOCKSIZE": "512"},
        )  # fmt: skip
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _cli_version() -> str:
    """The command line tools' GDAL version (Debian's may differ from rasterio's)."""
    text = _gdal("gdalbuildvrt", "--version", cwd=Path.cwd()).strip()
    return text.removeprefix("GDAL ").split(",")[0] or text


@contextlib.contextmanager
def _same(dataset: Any) -> Iterator[Any]:
    yield dataset


def _proj_fields(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as src:
        epsg = src.crs.to_epsg()
        fields: dict[str, Any] = {
            "proj:shape": [src.height, src.width],
            "proj:transform": list(src.transform)[:6],
            "proj:bbox": list(src.bounds),
        }
        if epsg:
            fields |= {"proj:code": f"EPSG:{epsg}", "proj:epsg": epsg}
        else:
            fields["proj:wkt2"] = src.crs.to_wkt(version="WKT2_2019")
        return fields


def _item(
    http: HttpSession,
    collection: str,
    inputs: list[Input],
    data: Path,
    overview: Path | None,
    grid: _Grid,
    item_path: Path,
) -> dict[str, Any]:
    # Statistics and footprint from the COG (the overview's, for a VRT).
    info = describe(overview or data)
    digest = FileDigest.of(data)
    relative = os.path.relpath(data, item_path.parent)
    bands = [band.as_raster_band() for band in info.bands]
    assets: dict[str, Any] = {
        "data": {
            "href": relative,
            "type": VRT_TYPE if overview else COG_TYPE,
            "roles": ["data"],
            "title": f"Mosaic of {collection}"
            + (" (GDAL VRT over its inputs)" if overview else ""),
            "file:size": digest.size,
            "file:checksum": digest.checksum,
            **_proj_fields(data),
            "raster:bands": bands,
        }
    }
    if overview is not None:
        over = FileDigest.of(overview)
        assets["overview"] = {
            "href": os.path.relpath(overview, item_path.parent),
            "type": COG_TYPE,
            "roles": ["overview"],
            "title": f"Mosaic of {collection} at a coarser resolution",
            "file:size": over.size,
            "file:checksum": over.checksum,
            **_proj_fields(overview),
            "raster:bands": bands,
        }
    dates = sorted(i.datetime for i in inputs if i.datetime)
    stamp = utc_now_text()
    properties: dict[str, Any] = {
        **_proj_fields(data),
        "created": stamp,
        "processing:datetime": stamp,
        "processing:software": {**software(), "GDAL command line tools": _cli_version()},
        "processing:lineage": (
            f"Mosaic of the {len(inputs)} COG products of {collection} by tilekeeper: a "
            f"gdalbuildvrt VRT ({grid.reprojected} input(s) warped to {grid.crs}; later "
            "products over earlier ones), "
            + (
                "kept as a VRT with a COG of its overview (too large for one COG)."
                if overview
                else "written as one COG by rio-cogeo (deflate, internal overviews)."
            )
        ),
        "tilekeeper:provenance": [
            {
                "collection": collection,
                "item": i.item,
                "asset": i.asset,
                "href": i.href,
                "file:checksum": i.checksum,
                "file:size": i.size,
            }
            for i in inputs
        ],
    }
    if dates and dates[0] != dates[-1]:
        properties |= {"datetime": None, "start_datetime": dates[0], "end_datetime": dates[-1]}
    else:
        properties["datetime"] = dates[0] if dates else stamp
    seen: set[str] = set()
    links = []
    for i in inputs:
        if i.item in seen:
            continue
        seen.add(i.item)
        links.append(
            {"rel": "derived_from", "type": "application/geo+json", "title": f"product {i.item}",
             "href": f"{http.root_url}collections/{collection}/items/{i.item}"}
        )  # fmt: skip
    links.append(
        {"rel": "related", "type": "application/json", "title": "the products mosaicked",
         "href": f"{http.root_url}collections/{collection}"}
    )  # fmt: skip
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": f"{collection}-mosaic",
        "geometry": info.geometry,
        "bbox": info.bbox,
        "properties": properties,
        "links": links,
        "assets": assets,
    }


def export_mosaic(
    http: HttpSession,
    ident: str,
    dest: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    asset: str | None = None,
    local_store: Path | None = None,
    report: Report = logger.info,
) -> MosaicResult:
    """The products of campaign (or product collection) ``ident`` as the COG ``dest``
    (``dest`` with ``.vrt`` and ``.overview.tif`` above ``max_pixels``) and its STAC item
    ``dest`` with ``.json``."""
    started = time.monotonic()
    if dest.is_dir():
        raise TilekeeperError(
            f"{dest} is a folder: give the file to write (e.g. {dest}/mosaic.tif)"
        )
    collection = products_collection(http, ident)
    try:
        inputs = _inputs(http, collection, asset)
    except ApiError as exc:
        raise TilekeeperError(f"cannot read the products of {collection}: {exc}") from exc
    report(f"{len(inputs)} product file(s) of {collection} to mosaic")
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    item_path = dest.with_suffix(".json")
    with tempfile.TemporaryDirectory(prefix=f".{dest.stem}-", dir=dest.parent) as tmp:
        work = Path(tmp)
        _fetch(http, inputs, work, local_store, report)
        grid = _grid(inputs)
        vrt = _build_vrt(inputs, grid, work / "mosaic.vrt", work)
        with rasterio.open(vrt) as src:
            width, height = src.width, src.height
        pixels = width * height
        report(
            f"mosaic of {width} x {height} px ({pixels:,} pixels, {grid.count} band(s) "
            f"{grid.dtype}) in {grid.crs}; {grid.reprojected} input(s) warped"
        )
        overview = None
        if pixels <= max_pixels:
            report(f"writing the COG {dest}")
            _cog(vrt, dest, grid.categorical)
            data = dest
        else:
            data, overview = _keep_as_vrt(inputs, grid, dest, pixels, max_pixels, report)
        item = _item(http, collection, inputs, data, overview, grid, item_path)
    item_path.write_text(json.dumps(item, indent=1))
    seconds = time.monotonic() - started
    report(f"done in {seconds:.1f} s: {data} and its STAC item {item_path}")
    return MosaicResult(
        collection, data, item_path, len(inputs), grid.reprojected, pixels,
        overview is not None, overview, seconds, item,
    )  # fmt: skip


def _keep_as_vrt(
    inputs: list[Input], grid: _Grid, dest: Path, pixels: int, max_pixels: int, report: Report
) -> tuple[Path, Path]:
    """Too large for one COG: the inputs copied into ``<name>_inputs/``, a VRT over them
    beside, and a COG of the VRT at a coarser resolution (a power of 2)."""
    folder = dest.with_name(f"{dest.stem}_inputs")
    if folder.exists():  # an earlier export's, else somebody's own: left alone
        if not (folder / INPUTS_MARKER).is_file():
            raise TilekeeperError(
                f"{folder} exists and is not an earlier mosaic's inputs: move it, or export "
                "to another DEST"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / INPUTS_MARKER).write_text("the inputs of a tilekeeper mosaic VRT\n")
    for n, source in enumerate(inputs, 1):
        assert source.path is not None
        target = folder / _file_name(n, source)
        if source.local:
            shutil.copyfile(source.path, target)
        else:
            os.replace(source.path, target)
        source.path, source.local = target, False
    grid.reprojected = 0
    vrt = _build_vrt(inputs, grid, dest.with_suffix(".vrt"), folder)
    factor = 2 ** math.ceil(math.log2(math.sqrt(pixels / max_pixels)))
    overview = dest.with_name(f"{dest.stem}.overview.tif")
    report(
        f"{pixels:,} pixels are more than --max-pixels {max_pixels:,}: no single COG; "
        f"wrote the VRT {vrt} over the inputs in {folder}/ and writing its overview "
        f"(1/{factor} resolution) as the COG {overview}"
    )
    resampling = Resampling.mode if grid.categorical else Resampling.average
    with rasterio.open(vrt) as src:
        transform = src.transform * src.transform.scale(factor, factor)
        shape = {"width": max(1, src.width // factor), "height": max(1, src.height // factor)}
        with WarpedVRT(src, transform=transform, resampling=resampling, **shape) as coarse:
            _cog(coarse, overview, grid.categorical)
    return vrt, overview
