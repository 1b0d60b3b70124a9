"""STAC for products: one item per product (its COGs and a thumbnail, with projection,
raster, file, processing, grid and version fields) and the product collection."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import openeo
import rasterio
import rio_cogeo

from catalog_service import __version__
from catalog_service.timestamps import utc_now_text
from ingest.rasters import COG_TYPE, FileDigest, RasterInfo
from ingest.sources import Product

STAC_VERSION = "1.1.0"
EXT = "https://stac-extensions.github.io"
# Projection v1.2.0, not v2.0.0: v1.2.0 has proj:code and the deprecated proj:epsg side
# by side, v2.0.0's schema refuses proj:epsg. GDAL's STACIT driver (a mosaic of a search)
# skips every asset whose item lacks a proj:epsg member in GDAL 3.6, Debian bookworm's
# (OSGeo/gdal#8137; tests/test_gdal_clients.py), and reads proj:code only since 3.10.2
# (OSGeo/gdal#11760).
EXTENSIONS = [
    f"{EXT}/projection/v1.2.0/schema.json",
    f"{EXT}/raster/v1.1.0/schema.json",
    f"{EXT}/file/v2.1.0/schema.json",
    f"{EXT}/processing/v1.2.0/schema.json",
    f"{EXT}/grid/v1.1.0/schema.json",
    f"{EXT}/version/v1.2.0/schema.json",
]
# Where the tile's job item says which product versions it has (tilekeeper-managed).
SOURCE_KEY = "tilekeeper:source_checksums"
DEFAULT_LICENSE = "other"


@dataclass(frozen=True)
class StoredRaster:
    key: str  # asset key
    href: str
    info: RasterInfo
    digest: FileDigest
    title: str | None


@cache  # package metadata lookups: ~2 ms a call
def software() -> dict[str, str]:
    return {
        "tilekeeper": __version__,
        "openeo-python-client": openeo.client_version(),
        "rio-cogeo": rio_cogeo.__version__,
        "GDAL": rasterio.__gdal_version__,
    }


def product_item(
    product: Product,
    collection: str,
    rasters: list[StoredRaster],
    thumbnail_href: str | None,
    source_checksums: list[str],
    grid_code: str | None,
    fallback_datetime: str | None,
) -> dict[str, Any]:
    first = rasters[0].info
    stamp = utc_now_text()
    properties: dict[str, Any] = {
        "datetime": product.datetime or fallback_datetime or stamp,
        "created": stamp,
        "updated": stamp,
        "proj:code": first.proj_code,
        "proj:shape": first.shape,
        "proj:transform": first.transform,
        "proj:bbox": first.proj_bbox,
        "processing:datetime": stamp,
        "processing:lineage": _lineage(product),
        "version": "1",
        SOURCE_KEY: source_checksums,
    }
    if first.proj_epsg is not None:
        properties["proj:epsg"] = first.proj_epsg  # for GDAL's STACIT before 3.10.2
    elif first.proj_wkt2:
        # No EPSG code. GDAL 3.6's STACIT would read the WKT2 only beside a
        # "proj:epsg": null, and pgstac drops null properties: such products do not
        # mosaic there.
        properties["proj:wkt2"] = first.proj_wkt2
    provenance = dict(product.provenance)
    backend_software = provenance.pop("processing:software", None)
    properties["processing:software"] = {
        **(backend_software if isinstance(backend_software, dict) else {}),
        **software(),
    }
    properties.update(provenance)
    properties.setdefault("processing:facility", "tilekeeper ingest")
    if grid_code:
        properties["grid:code"] = grid_code
    if product.tile:
        properties["tilekeeper:tile"] = product.tile
    assets: dict[str, Any] = {}
    for raster in rasters:
        assets[raster.key] = {
            "href": raster.href,
            "type": COG_TYPE,
            "roles": ["data"],
            "title": raster.title or raster.key,
            "file:size": raster.digest.size,
            "file:checksum": raster.digest.checksum,
            "raster:bands": [band.as_raster_band() for band in raster.info.bands],
        }
    if thumbnail_href:
        assets["thumbnail"] = {
            "href": thumbnail_href,
            "type": "image/png",
            "roles": ["thumbnail"],
            "title": "Preview",
        }
    links = []
    if product.job_item:
        links.append(
            {"rel": "derived_from", "href": product.job_item, "type": "application/geo+json",
             "title": "the tile's openEO job (a tilekeeper job item)"}
        )  # fmt: skip
    if product.via:
        links.append(
            {"rel": "via", "href": product.via, "type": "application/json",
             "title": "the openEO batch job on its back-end"}
        )  # fmt: skip
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS
        if grid_code
        else [e for e in EXTENSIONS if "/grid/" not in e],
        "id": product.id,
        "collection": collection,
        "geometry": first.geometry,
        "bbox": first.bbox,
        "properties": properties,
        "links": links,
        "assets": assets,
    }


def _lineage(product: Product) -> str:
    if product.via:
        return f"Result of openEO batch job {product.via}, converted to COG and catalogued by tilekeeper."
    return f"Ingested by tilekeeper from {product.source}."


def product_collection(
    collection_id: str,
    *,
    title: str | None = None,
    description: str | None = None,
    license: str = DEFAULT_LICENSE,
    campaign: str | None = None,
    asset_keys: list[str] | None = None,
) -> dict[str, Any]:
    """A new product collection; its extent and summaries are kept true by the API as
    products arrive."""
    item_assets: dict[str, Any] = {
        key: {"type": COG_TYPE, "roles": ["data"], "title": key} for key in (asset_keys or ["data"])
    }
    item_assets["thumbnail"] = {"type": "image/png", "roles": ["thumbnail"], "title": "Preview"}
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": collection_id,
        "title": title or (f"Products of campaign {campaign}" if campaign else collection_id),
        "description": description
        or (
            f"Cloud-optimized GeoTIFF products of the tilekeeper campaign {campaign}, one item "
            "per tile (and date), with their provenance."
            if campaign
            else "Cloud-optimized GeoTIFF products catalogued by tilekeeper."
        ),
        "license": license,
        "providers": [
            {
                "name": "tilekeeper",
                "roles": ["processor", "host"],
                "description": "COG conversion, cataloguing and dissemination",
            }
        ],
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "item_assets": item_assets,
        "summaries": {},
        "links": [],
        # Not `tilekeeper:campaign`: that key makes a collection a campaign.
        **({"tilekeeper:products_of": campaign} if campaign else {}),
    }
