"""What a back-end says of a result file it wrote: the asset metadata of one COG."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rasterio
from pyproj import Transformer


def describe_cog(path: Path, bands: list[str], when: datetime | None) -> dict[str, Any]:
    """Asset metadata of one result file: what the results document and MBJM need."""
    with rasterio.open(path) as src:
        epsg = src.crs.to_epsg() if src.crs else None
        west, south, east, north = src.bounds
        bbox = [west, south, east, north]
        if src.crs:
            bbox = list(Transformer.from_crs(src.crs, 4326, always_xy=True).transform_bounds(*bbox))
        shape = [src.height, src.width]
        dtype = src.dtypes[0]
    return {
        "filename": path.name,
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"],
        "bands": [{"name": b} for b in bands],
        "proj:epsg": epsg,
        "proj:bbox": [west, south, east, north],
        "proj:shape": shape,
        "bbox": bbox,
        "datetime": when.replace(tzinfo=UTC).isoformat() if when else None,
        "file:size": path.stat().st_size,
        "data_type": dtype,
    }
