"""Process-graph evaluation with openeo-processes-dask, and the processes a back-end
supplies itself: ``load_collection`` (from the tilekeeper STAC API) and ``save_result``
(COGs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac_client
import rasterio
import requests
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.stac import load as odc_load
from openeo_pg_parser_networkx import OpenEOProcessGraph
from openeo_pg_parser_networkx.process_registry import Process
from pyproj import CRS, Transformer

from local_openeo.cogs import describe_cog

log = logging.getLogger("local_openeo.processing")

# Pixel size used when neither the request nor the collection says otherwise.
DEFAULT_RESOLUTION = 10.0


def _offline_stac_type(url: str) -> str:
    """processes-dask's ``load_stac`` validates with stac-validator, which downloads
    JSON schemas; classify the document by its ``type`` instead (nothing from outside)."""
    document = requests.get(url, timeout=30).json()
    kind = {"Feature": "ITEM", "Collection": "COLLECTION", "Catalog": "CATALOG"}.get(
        document.get("type", "")
    )
    if kind is None:
        raise ValueError(f"{url} is not a STAC Item, Collection or Catalog")
    return kind


def _registry(stac_url: str, out_dir: Path, outputs: list[dict[str, Any]]) -> Any:
    import openeo_processes_dask.process_implementations.cubes.load as pdask_load
    from openeo.local.processing import PROCESS_REGISTRY
    from openeo_processes_dask import specs

    pdask_load._validate_stac = _offline_stac_type

    def load_collection(
        id: str,
        spatial_extent: Any = None,
        temporal_extent: Any = None,
        bands: list[str] | None = None,
        properties: Any = None,
        **_: Any,
    ) -> xr.DataArray:
        return load_from_catalogue(stac_url, id, spatial_extent, temporal_extent, bands)

    def save_result(
        data: xr.DataArray, format: str = "GTiff", options: Any = None, **_: Any
    ) -> bool:
        if format.lower() not in ("gtiff", "geotiff", "cog"):
            raise ValueError(f"save_result: format {format!r} is not supported here (GTiff only)")
        outputs.extend(write_cogs(data, out_dir))
        return True

    registry = PROCESS_REGISTRY
    # The specs module defines its attributes at import time (from JSON files).
    for name, implementation in (
        ("load_collection", load_collection),
        ("save_result", save_result),
    ):
        registry[name] = Process(spec=getattr(specs, name), implementation=implementation)
    return registry


def _grid(spatial_extent: Any, fallback_epsg: int) -> GeoBox:
    """The exact pixel grid of the requested extent: in its own CRS, 10 m pixels,
    edges on the extent (the tile's native bbox gives pixel-perfect tiles)."""
    crs = CRS.from_user_input(spatial_extent.crs) if spatial_extent.crs else CRS.from_epsg(4326)
    bbox = (spatial_extent.west, spatial_extent.south, spatial_extent.east, spatial_extent.north)
    if crs.is_geographic:
        to_native = Transformer.from_crs(crs, fallback_epsg, always_xy=True)
        bbox = to_native.transform_bounds(*bbox)
        crs = CRS.from_epsg(fallback_epsg)
    return GeoBox.from_bbox(bbox, crs=crs.to_wkt(), resolution=DEFAULT_RESOLUTION)


def load_from_catalogue(
    stac_url: str,
    collection_id: str,
    spatial_extent: Any,
    temporal_extent: Any,
    bands: list[str] | None,
) -> xr.DataArray:
    if spatial_extent is None:
        raise ValueError(
            "load_collection needs a spatial_extent here (whole collections are not loaded)"
        )
    client = pystac_client.Client.open(stac_url)
    crs = CRS.from_user_input(spatial_extent.crs) if spatial_extent.crs else CRS.from_epsg(4326)
    to_wgs84 = Transformer.from_crs(crs, 4326, always_xy=True)
    bbox = to_wgs84.transform_bounds(
        spatial_extent.west, spatial_extent.south, spatial_extent.east, spatial_extent.north
    )
    search: dict[str, Any] = {"collections": [collection_id], "bbox": list(bbox)}
    if temporal_extent is not None:
        start, end = (None if t is None else str(t.to_numpy())[:19] for t in temporal_extent)
        search["datetime"] = f"{start or '..'}Z/{end or '..'}Z".replace("..Z", "..")
    items = list(client.search(**search).items())
    log.info("load_collection %s: %d item(s) for %s", collection_id, len(items), search)
    if not items:
        raise ValueError(
            f"load_collection: no {collection_id} items in bbox {bbox} and {search.get('datetime')}"
        )
    native = items[0].properties.get("proj:code") or "EPSG:4326"
    geobox = _grid(spatial_extent, CRS.from_user_input(native).to_epsg() or 4326)
    dataset = odc_load(items, bands=bands, geobox=geobox, chunks={"x": 1024, "y": 1024})
    cube = dataset.to_dataarray(dim="bands").rename({"time": "t"})
    return cube.transpose("t", "bands", "y", "x")


def write_cogs(data: xr.DataArray, out_dir: Path) -> list[dict[str, Any]]:
    """One COG per date (or one if there is no time dimension), bands as bands."""
    temporal = [d for d in data.dims if d in ("t", "time")]
    if temporal:
        slices = [
            (pd.Timestamp(v).to_pydatetime(), data.sel({temporal[0]: v}))
            for v in data[temporal[0]].values
        ]
    else:
        slices = [(None, data)]
    written = []
    for when, cube in slices:
        band_dims = [d for d in cube.dims if d not in ("x", "y")]
        if band_dims:
            cube = cube.transpose(band_dims[0], "y", "x")
            names = [str(v) for v in cube[band_dims[0]].values]
        else:
            cube = cube.expand_dims("bands").transpose("bands", "y", "x")
            names = ["band_1"]
        values = np.asarray(cube.values)
        if values.dtype == bool:
            values = values.astype("uint8")
        if values.dtype.kind == "f":
            values = values.astype("float32")
        name = f"openEO_{when:%Y-%m-%d}.tif" if when else "openEO.tif"
        path = out_dir / name
        crs = cube.rio.crs if hasattr(cube, "rio") else None
        transform = cube.rio.transform() if crs else None
        profile: dict[str, Any] = {
            "driver": "COG",
            "width": values.shape[2],
            "height": values.shape[1],
            "count": values.shape[0],
            "dtype": values.dtype.name,
            "crs": crs,
            "transform": transform,
            "compress": "deflate",
            "blocksize": 256,
        }
        if values.dtype.kind == "f":
            profile["nodata"] = float("nan")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(values)
            dst.descriptions = tuple(names)
        written.append(describe_cog(path, names, when))
    return written


def evaluate(graph: dict[str, Any], stac_url: str, out_dir: Path) -> list[dict[str, Any]]:
    """Run a (UDP-free) process graph; returns the written assets."""
    outputs: list[dict[str, Any]] = []
    registry = _registry(stac_url, out_dir, outputs)
    parsed = OpenEOProcessGraph({"process_graph": graph})
    result = parsed.to_callable(process_registry=registry)()
    if not outputs and isinstance(result, xr.DataArray):
        outputs.extend(write_cogs(result, out_dir))  # no save_result: GTiff by default
    if not outputs:
        raise ValueError("the process graph produced no raster result to save")
    return outputs
