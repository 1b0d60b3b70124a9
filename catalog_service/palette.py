"""Palette pictures (class maps, grid previews) as PNG, written by GDAL's PNG driver."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile


def palette_png(indices: np.ndarray, colormap: dict[int, Any]) -> bytes:
    """A palette PNG of ``(rows, cols)`` uint8 values (``colormap``: value -> (r, g, b, a);
    an alpha below 255 is written as the PNG's transparency)."""
    rows, cols = indices.shape
    with warnings.catch_warnings():  # a picture, not a map: no georeferencing
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as memory:
            profile = {"driver": "PNG", "width": cols, "height": rows, "count": 1}
            with memory.open(**profile, dtype="uint8") as png:
                png.write(indices, 1)
                png.write_colormap(1, colormap)
            return bytes(memory.read())
