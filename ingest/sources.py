"""Inputs to the ingest engine, each turned into products (the rasters of one item):

- plain GeoTIFF/COG files, and folders of them (one product per file);
- a STAC item or collection JSON file whose assets are local files (an openEO results
  document saved next to its files, as ``job-results.json``);
- a folder MultiBackendJobManager downloaded (``job_{id}/``: the files, the results
  document and ``job_{id}.json`` with the job's metadata);
- an http(s) URL of a GeoTIFF or of such a document (its item links and assets
  downloaded, each URL and redirect through the egress policy, catalog_service/egress.py,
  under the size, time and rate limits of ingest/download.py; documents parsed strictly
  by ingest/results.py);
- a finished openEO job, read with the back-end's login (see ``ingest.harvest``).

Results with several dates give one product per date."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from catalog_service.egress import egress_session
from ingest.download import DownloadLimits, download, fetch, read_json, shown_url
from ingest.errors import IngestError
from ingest.results import parse_document, raster_key

RASTER_SUFFIXES = (".tif", ".tiff")
MAX_EXPRESSION_BYTES = 64 * 1024
DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


@dataclass
class Raster:
    path: Path
    key: str  # the asset key in the product item
    title: str | None = None
    expected: dict[str, Any] = field(default_factory=dict)  # file:size / file:checksum


@dataclass
class Product:
    """What becomes one product item."""

    id: str
    rasters: list[Raster]
    source: str  # where it came from, for messages
    datetime: str | None = None
    tile: str | None = None
    grid_code: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # processing:* fields
    via: str | None = None  # the back-end job (or other authoritative record)
    job_item: str | None = None  # href of the tile's job item (derived_from)
    # A campaign tile's product must lie within its tile (GeoJSON, EPSG:4326) and, when
    # set, be in the tile's CRS (see ingest/rasters.py).
    tile_geometry: dict[str, Any] | None = None
    expected_crs: str | None = None


def date_of(asset: dict[str, Any], name: str) -> str | None:
    for key in ("datetime", "start_datetime"):
        if asset.get(key):
            return str(asset[key])
    match = DATE.search(name)
    return f"{match[1]}-{match[2]}-{match[3]}T00:00:00Z" if match else None


def is_raster(name: str, asset: dict[str, Any]) -> bool:
    kind = str(asset.get("type", ""))
    return "tiff" in kind or name.lower().endswith(RASTER_SUFFIXES)


def provenance_of(doc: dict[str, Any], job: dict[str, Any] | None = None) -> dict[str, Any]:
    """processing:* fields from an openEO results document's producer (its ``providers``)
    and, where the document lacks it, the process graph from the job's metadata."""
    fields: dict[str, Any] = {}
    providers = doc.get("providers")
    for provider in providers if isinstance(providers, list) else []:
        for key, value in provider.items() if isinstance(provider, dict) else ():
            if key.startswith("processing:"):
                fields.setdefault(key, value)
    properties = doc.get("properties")
    for key, value in properties.items() if isinstance(properties, dict) else ():
        if key.startswith("processing:"):
            fields.setdefault(key, value)
    process = (job or {}).get("process")
    graph = process.get("process_graph") if isinstance(process, dict) else None
    # The job's graph, as the back-end describes it: kept when it is of a sensible size
    # (a description may be 16 MiB; a product item is no place for that).
    if (
        "processing:expression" not in fields
        and isinstance(graph, dict)
        and graph
        and len(json.dumps(graph, default=str)) <= MAX_EXPRESSION_BYTES
    ):
        fields["processing:expression"] = {"format": "openeo", "expression": graph}
    return fields


def group_by_date(
    product_id: str, rasters: Iterable[tuple[Raster, str | None]], source: str, **common: Any
) -> list[Product]:
    """One product per date; ids gain ``_YYYYMMDD`` only when there are several."""
    by_date: dict[str | None, list[Raster]] = {}
    for raster, date in rasters:
        by_date.setdefault(date, []).append(raster)
    if not by_date:
        raise IngestError(f"{source}: no raster assets")
    several = len(by_date) > 1
    products = []
    for date, members in sorted(by_date.items(), key=lambda kv: kv[0] or ""):
        pid = dated_id(product_id, date, several)
        products.append(Product(pid, members, source, date, **common))
    return products


def dated_id(product_id: str, date: str | None, several: bool) -> str:
    """A product's id: ``product_id``, with ``_YYYYMMDD`` when there are several dates."""
    return f"{product_id}_{date[:10].replace('-', '')}" if several and date else product_id


def _local_asset(folder: Path, name: str, asset: dict[str, Any]) -> Path:
    """The file an asset names, which must stay inside the document's folder. Absolute
    URLs (a back-end's signed links) are matched by file name, as MBJM saves them."""
    href = str(asset.get("href", ""))
    if "://" in href:
        candidate = folder / Path(href.split("?")[0]).name
        if not candidate.exists():
            candidate = folder / name
    else:
        candidate = folder / href.removeprefix("file://")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise IngestError(f"asset {name}: href {href!r} leaves the folder {folder}")
    if not resolved.is_file():
        raise IngestError(f"asset {name}: file {href!r} not found in {folder}")
    return resolved


def expected_of(asset: dict[str, Any]) -> dict[str, Any]:
    return {k: asset[k] for k in ("file:size", "file:checksum") if k in asset}


def from_stac_file(path: Path, job: dict[str, Any] | None = None, **common: Any) -> list[Product]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IngestError(f"{path}: not a readable JSON document ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("type") not in ("Feature", "Collection"):
        raise IngestError(f"{path}: not a STAC item or collection")
    folder = path.parent
    docs = [doc]
    for link in doc.get("links", []):  # a collection's items saved beside it
        if link.get("rel") == "item" and "://" not in str(link.get("href", "")):
            item_path = (folder / link["href"]).resolve()
            if not item_path.is_relative_to(folder.resolve()):
                raise IngestError(f"{path}: item link {link['href']!r} leaves the folder")
            try:
                docs.append(json.loads(item_path.read_text()))
            except (OSError, ValueError) as exc:
                raise IngestError(f"{item_path}: not a readable JSON document ({exc})") from exc
    rasters = []
    for d in docs:
        for name, asset in (d.get("assets") or {}).items():
            if is_raster(name, asset):
                date = date_of(asset, name) or date_of(d.get("properties") or {}, "")
                raster = Raster(
                    _local_asset(folder, name, asset),
                    raster_key(name),
                    asset.get("title"),
                    expected_of(asset),
                )
                rasters.append((raster, date))
    product_id = str(common.pop("product_id", None) or doc.get("id") or path.stem)
    common.setdefault("provenance", provenance_of(doc, job))
    return group_by_date(product_id, rasters, str(path), **common)


def from_job_folder(folder: Path, **common: Any) -> list[Product]:
    """A folder MultiBackendJobManager downloaded: ``job_{id}.json`` and the results."""
    meta_files = sorted(folder.glob("job_*.json"))
    job = json.loads(meta_files[0].read_text()) if meta_files else {}
    title = str(job.get("title") or "")
    common.setdefault("tile", title.split(" ")[-1] if title else None)
    common.setdefault("product_id", common.get("tile") or folder.name)
    results = folder / "job-results.json"
    if results.exists():
        return from_stac_file(results, job=job, **common)
    rasters = [(Raster(p, p.stem), date_of({}, p.name)) for p in _raster_files(folder)]
    product_id = str(common.pop("product_id"))
    common.setdefault("provenance", provenance_of({}, job))
    return group_by_date(product_id, rasters, str(folder), **common)


def _raster_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()
    )


def _url_name(url: str) -> str:
    """A plain file name for a download, from the URL's last path segment."""
    name = Path(urlsplit(url).path).name
    return re.sub(r"[^A-Za-z0-9_.~-]+", "_", name).strip("._")[:100] or "download"


def from_url(url: str, workdir: Path, **common: Any) -> list[Product]:
    """Products of an http(s) URL: a GeoTIFF, or a STAC item/collection (an openEO
    results document) whose raster assets are downloaded into ``workdir``. Every
    request goes through the egress policy, each file and document under the limits of
    ``ingest.download``; the documents are parsed strictly (``ingest.results``)."""
    session = egress_session()
    file_limits = DownloadLimits.for_files()
    document_limits = DownloadLimits.for_documents()
    shown = shown_url(url)
    name = _url_name(url)
    n = len(list(workdir.iterdir()))
    first = workdir / f"{n}-{name}"
    with session:
        doc = fetch(url, first, session, file_limits, document_limits)
        if doc is None:
            product_id = str(common.pop("product_id", None) or Path(name).stem)
            return [Product(product_id, [Raster(first, "data")], url, date_of({}, name), **common)]
        parsed = parse_document(doc, shown, base_url=url)
        if parsed.type not in ("Feature", "Collection"):
            raise IngestError(f"{shown}: not a STAC item or collection")
        folder = Path(tempfile.mkdtemp(prefix=f"doc-{n}-", dir=workdir))
        # The document and the items it links, each saved beside its downloaded rasters
        # with only what was checked, its raster assets pointing at the local files.
        docs = [(parsed, folder / "document.json")]
        for i, item_url in enumerate(parsed.item_links):
            item = parse_document(
                read_json(item_url, session, document_limits), shown_url(item_url), item_url
            )
            docs.append((item, folder / f"item-{i}.json"))
        for d, (document, path) in enumerate(docs):
            saved = document.as_stac()
            saved["assets"] = {}
            for a, asset in enumerate(document.assets):
                if is_raster(asset.key, asset.metadata()):
                    local = f"{d}-{a}.tif"
                    download(asset.href, folder / local, session, file_limits)
                    saved["assets"][asset.key] = {**asset.metadata(), "href": local}
            if d == 0:
                saved["links"] = [
                    {"rel": "item", "href": item_path.name} for _, item_path in docs[1:]
                ]
            path.write_text(json.dumps(saved))
    products = from_stac_file(folder / "document.json", **common)
    for product in products:
        product.source = url
    return products


def from_path(path: Path, **common: Any) -> Iterator[Product]:
    """Products of a local path (file, STAC JSON, MBJM job folder or folder of rasters)."""
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(path.glob("job_*.json")) or (path / "job-results.json").exists():
            yield from from_job_folder(path, **common)
            return
        files = _raster_files(path)
        if not files:
            raise IngestError(f"{path}: no GeoTIFF files in this folder")
        for file in files:
            yield Product(
                file.stem, [Raster(file, "data")], str(file), date_of({}, file.name), **common
            )
        return
    if path.suffix.lower() == ".json":
        yield from from_stac_file(path, **common)
        return
    product_id = str(common.pop("product_id", None) or path.stem)
    yield Product(product_id, [Raster(path, "data")], str(path), date_of({}, path.name), **common)
