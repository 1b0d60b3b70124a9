"""A deterministic synthetic Sentinel-2 L2A-like collection, as COGs and STAC items.

Bands B02, B03, B04, B08 (surface reflectance x 10,000, uint16) and SCL (scene
classification) at 10 m in one UTM zone, one COG per band and date covering the whole
area. The scene has fields with crop-specific phenology (NDVI rises and falls across
the dates), bare soil, a river, and clouds with their shadows flagged in SCL (9 high
probability cloud, 8 medium, 3 shadow) as Sen2Cor does. The same arguments always give
the same pixels, so results can be compared across runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

COLLECTION_ID = "SENTINEL2_L2A_SYNTHETIC"
BANDS = {
    # name: (common name, centre wavelength in micrometres)
    "B02": ("blue", 0.490),
    "B03": ("green", 0.560),
    "B04": ("red", 0.665),
    "B08": ("nir", 0.842),
}
SCL = "SCL"
SCL_VEGETATION, SCL_BARE, SCL_WATER = 4, 5, 6
SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH = 3, 8, 9
RESOLUTION = 10.0
FIELD_SIZE_PX = 40  # 400 m fields


@dataclass(frozen=True)
class SampleArea:
    """An area in one UTM zone (EPSG:326xx) and the acquisition dates to simulate."""

    epsg: int
    west: float
    south: float
    east: float
    north: float
    dates: tuple[date, ...]
    seed: int = 20240601

    def key(self) -> str:
        text = json.dumps(
            [
                self.epsg,
                self.west,
                self.south,
                self.east,
                self.north,
                [d.isoformat() for d in self.dates],
                self.seed,
                1,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def shape(self) -> tuple[int, int]:
        return (
            round((self.north - self.south) / RESOLUTION),
            round((self.east - self.west) / RESOLUTION),
        )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a coarse grid, bilinearly upsampled."""
    rows, cols = shape[0] // scale + 2, shape[1] // scale + 2
    coarse = rng.random((rows, cols))
    y = np.linspace(0, rows - 1.001, shape[0])
    x = np.linspace(0, cols - 1.001, shape[1])
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = coarse[np.ix_(y0, x0)]
    b = coarse[np.ix_(y0, x0 + 1)]
    c = coarse[np.ix_(y0 + 1, x0)]
    d = coarse[np.ix_(y0 + 1, x0 + 1)]
    out: np.ndarray = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    return out


def _landscape(area: SampleArea) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: land class (0 bare, 1 water, 2.. crop types) and a field brightness."""
    rng = np.random.default_rng(area.seed)
    rows, cols = area.shape
    field_rows, field_cols = rows // FIELD_SIZE_PX + 1, cols // FIELD_SIZE_PX + 1
    crops = rng.integers(0, 5, size=(field_rows, field_cols))  # 0 = bare, 2..5 = crops
    crops = np.where(crops == 1, 5, crops)
    crops = np.where(crops == 0, 0, crops + 1)
    brightness = rng.normal(1.0, 0.08, size=(field_rows, field_cols))
    iy = np.arange(rows) // FIELD_SIZE_PX
    ix = np.arange(cols) // FIELD_SIZE_PX
    land = crops[np.ix_(iy, ix)]
    field_brightness = brightness[np.ix_(iy, ix)]
    # A river meandering north-south through the area.
    y = np.arange(rows)[:, None]
    x = np.arange(cols)[None, :]
    centre = cols * 0.35 + cols * 0.08 * np.sin(y / rows * 3 * np.pi)
    land = np.where(np.abs(x - centre) < 12, 1, land)
    return land, field_brightness


# NDVI per crop type (classes 2..6) at the season's start, peak and end.
_PHENOLOGY = {
    2: (0.25, 0.85, 0.3),
    3: (0.2, 0.7, 0.6),
    4: (0.3, 0.6, 0.2),
    5: (0.15, 0.8, 0.7),
    6: (0.4, 0.75, 0.5),
}


def _season_fraction(area: SampleArea, when: date) -> float:
    first, last = area.dates[0], area.dates[-1]
    span = max((last - first).days, 1)
    return (when - first).days / span


def _ndvi(land: np.ndarray, phase: float) -> np.ndarray:
    ndvi = np.full(land.shape, 0.12, dtype="float32")  # bare soil
    for crop, (start, peak, end) in _PHENOLOGY.items():
        value = (
            start + (peak - start) * phase * 2
            if phase < 0.5
            else peak + (end - peak) * (phase - 0.5) * 2
        )
        ndvi[land == crop] = value
    ndvi[land == 1] = -0.3
    return ndvi


def _scene(area: SampleArea, index: int, when: date) -> dict[str, np.ndarray]:
    land, brightness = _landscape(area)
    rng = np.random.default_rng(area.seed + 1 + index)
    ndvi = _ndvi(land, _season_fraction(area, when))
    ndvi = ndvi + rng.normal(0, 0.02, size=land.shape).astype("float32")
    red = np.where(land == 1, 0.03, 0.08 * brightness * (1.15 - ndvi)).astype("float32")
    red = np.clip(red, 0.01, 0.5)
    nir = np.clip(red * (1 + ndvi) / np.clip(1 - ndvi, 0.05, None), 0.005, 0.7)
    blue = np.clip(red * 0.55 + 0.01, 0.005, 0.5)
    green = np.clip(red * 0.75 + nir * 0.05, 0.005, 0.5)
    # Clouds: smooth blobs covering a share that differs per date; shadows offset to the SE.
    cover = _smooth_noise(rng, land.shape, 150)
    threshold = 0.55 + 0.1 * (index % 3)
    cloud_high = cover > threshold + 0.1
    cloud_medium = (cover > threshold) & ~cloud_high
    shadow = np.roll(np.roll(cover > threshold, 30, axis=0), 30, axis=1) & ~(cover > threshold)
    scl = np.where(land == 1, SCL_WATER, np.where(land == 0, SCL_BARE, SCL_VEGETATION))
    scl = np.where(shadow, SCL_SHADOW, scl)
    scl = np.where(cloud_medium, SCL_CLOUD_MEDIUM, scl)
    scl = np.where(cloud_high, SCL_CLOUD_HIGH, scl).astype("uint8")
    bands = {"B02": blue, "B03": green, "B04": red, "B08": nir}
    out = {}
    for name, reflectance in bands.items():
        value = np.where(shadow, reflectance * 0.4, reflectance)
        value = np.where(cloud_high | cloud_medium, 0.45 + 0.2 * cover, value)
        out[name] = np.clip(np.round(value * 10_000), 1, 65535).astype("uint16")
    out[SCL] = scl
    return out


def _write_cog(path: Path, data: np.ndarray, area: SampleArea) -> None:
    transform = from_origin(area.west, area.north, RESOLUTION, RESOLUTION)
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{area.epsg}",
        "transform": transform,
        "nodata": 0,
        "compress": "deflate",
        "predictor": 2,
        "blocksize": 512,
        "overview_resampling": "nearest",
    }
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data, 1)
    tmp.replace(path)


def _footprint(area: SampleArea) -> tuple[dict[str, Any], list[float]]:
    to_wgs84 = Transformer.from_crs(area.epsg, 4326, always_xy=True)
    xs = [area.west, area.east, area.east, area.west]
    ys = [area.south, area.south, area.north, area.north]
    lon, lat = to_wgs84.transform(xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def collection(area: SampleArea) -> dict[str, Any]:
    _, bbox = _footprint(area)
    bands = [
        {"name": name, "eo:common_name": common, "eo:center_wavelength": wl}
        for name, (common, wl) in BANDS.items()
    ] + [{"name": SCL, "description": "Scene classification (Sen2Cor classes)"}]
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": COLLECTION_ID,
        "title": "Synthetic Sentinel-2 L2A (demo)",
        "description": "Deterministic synthetic Sentinel-2 L2A-like surface reflectance and "
        "scene classification at 10 m, generated by tilekeeper's local openEO back-end.",
        "license": "CC0-1.0",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {
                "interval": [[f"{area.dates[0]}T00:00:00Z", f"{area.dates[-1]}T23:59:59Z"]]
            },
        },
        "summaries": {"bands": bands, "gsd": [RESOLUTION], "platform": ["synthetic-2"]},
        "cube:dimensions": {
            "x": {
                "type": "spatial",
                "axis": "x",
                "step": RESOLUTION,
                "reference_system": area.epsg,
            },
            "y": {
                "type": "spatial",
                "axis": "y",
                "step": -RESOLUTION,
                "reference_system": area.epsg,
            },
            "t": {"type": "temporal", "extent": [str(area.dates[0]), str(area.dates[-1])]},
            "bands": {"type": "bands", "values": [*BANDS, SCL]},
        },
        "links": [],
    }


def generate(area: SampleArea, cache_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The collection and its items, generating the COGs once per area under
    ``cache_dir`` (a ``complete`` marker makes interrupted runs start over)."""
    out = cache_dir / f"{COLLECTION_ID}-{area.key()}"
    marker = out / "complete"
    if not marker.exists():
        out.mkdir(parents=True, exist_ok=True)
        for index, when in enumerate(area.dates):
            for name, data in _scene(area, index, when).items():
                _write_cog(out / f"{when:%Y%m%d}_{name}.tif", data, area)
        marker.write_text("ok\n")
    geometry, bbox = _footprint(area)
    rows, cols = area.shape
    items = []
    for index, when in enumerate(area.dates):
        assets = {}
        for name in [*BANDS, SCL]:
            common = BANDS.get(name)
            band: dict[str, Any] = {"name": name}
            if common:
                band.update({"eo:common_name": common[0], "eo:center_wavelength": common[1]})
            assets[name] = {
                # A file URI: a bare path would be resolved against the item's HTTP URL.
                "href": (out / f"{when:%Y%m%d}_{name}.tif").resolve().as_uri(),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "bands": [band],
                "gsd": RESOLUTION,
            }
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.1.0",
                "stac_extensions": [
                    "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
                ],
                "id": f"S2X_{when:%Y%m%d}_{area.key()}",
                "collection": COLLECTION_ID,
                "geometry": geometry,
                "bbox": bbox,
                "properties": {
                    "datetime": f"{when}T10:30:00Z",
                    "platform": "synthetic-2",
                    "proj:code": f"EPSG:{area.epsg}",
                    "proj:shape": [rows, cols],
                    "proj:transform": [RESOLUTION, 0.0, area.west, 0.0, -RESOLUTION, area.north],
                    "proj:bbox": [area.west, area.south, area.east, area.north],
                    "sample:index": index,
                },
                "links": [],
                "assets": assets,
            }
        )
    return collection(area), items
