"""Small real rasters written for the tests (GeoTIFF, with optional colour map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin


def write_raster(
    path: Path,
    *,
    count: int = 4,
    dtype: str = "float32",
    size: int = 600,
    crs: str | None = "EPSG:32631",
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    seed: int = 1,
    origin: tuple[float, float] = (600_000, 5_660_000),
) -> Path:
    rng = np.random.default_rng(seed)
    if colormap:
        data = rng.integers(1, len(colormap), (count, size, size)).astype(dtype)
    else:
        data = (rng.random((count, size, size)) * 100).astype(dtype)
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": size, "height": size, "count": count, "dtype": dtype,
        "transform": from_origin(*origin, 10, 10), "nodata": 0,
    }  # fmt: skip
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colormap:
            dst.write_colormap(1, colormap)
    return path
