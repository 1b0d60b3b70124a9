"""How a product collection's mosaic is drawn (the STAC render extension) and where it
is served (the web-map-links extension), so STAC Browser, QGIS and the campaign map
show the same layer.

Until someone writes renders of their own, the API keeps ``renders.default`` in step
with the products (``grow_render``, called as products land): the first data asset,
for one band of a non-byte type a rescale over the products' minimum and maximum and
a colormap; a byte band or several bands are drawn as they are."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

RENDER_EXTENSION = "https://stac-extensions.github.io/render/v2.0.0/schema.json"
WEB_MAP_LINKS = "https://stac-extensions.github.io/web-map-links/v1.2.0/schema.json"
# "automatic": the API keeps renders.default in step with the products; any other value
# (or renders written without it) leaves the renders alone.
AUTOMATIC_KEY = "tilekeeper:renders"
AUTOMATIC = "automatic"
DEFAULT_COLORMAP = "viridis"
TMS = "WebMercatorQuad"
# The mosaic's WMTS layers are "{WMTS_LAYER}_{tile matrix set}_{render name}".
WMTS_LAYER = "products"
# Where the raster routes are, below the API's root (api/raster.py).
RASTER_PATH = "raster/collections"


def _data_asset(items: list[dict[str, Any]], collection: dict[str, Any]) -> str | None:
    for item in items:
        for name, asset in (item.get("assets") or {}).items():
            if "data" in (asset.get("roles") or []):
                return str(name)
    for name, asset in (collection.get("item_assets") or {}).items():
        if "data" in (asset.get("roles") or []):
            return str(name)
    return None


def _band_ranges(items: list[dict[str, Any]], asset: str) -> list[tuple[float, float]] | None:
    """Per band of the products' ``asset``, the lowest minimum and highest maximum (None
    for bytes, drawn as they are, or products whose bands differ)."""
    lows: list[list[float]] = []
    highs: list[list[float]] = []
    for item in items:
        bands = ((item.get("assets") or {}).get(asset) or {}).get("raster:bands") or []
        if not bands or any(b.get("data_type") in ("uint8", "int8") for b in bands):
            return None
        if lows and len(bands) != len(lows):
            return None
        for n, band in enumerate(bands):
            stats = band.get("statistics") or {}
            low, high = stats.get("minimum"), stats.get("maximum")
            if not isinstance(low, int | float) or not isinstance(high, int | float):
                return None
            if len(lows) <= n:
                lows.append([])
                highs.append([])
            lows[n].append(float(low))
            highs[n].append(float(high))
    return [(min(lo), max(hi)) for lo, hi in zip(lows, highs, strict=True)] or None


def _drawn_bands(count: int) -> list[int]:
    """One band with a colormap; three or more as red, green and blue; else the first."""
    return [1, 2, 3] if count >= 3 else [1]


def grow_render(collection: dict[str, Any], items: list[dict[str, Any]], fresh: bool) -> None:
    """Keep an automatic ``renders.default`` true for the collection's products after
    ``items`` arrived (restarted when these are its first products), in place."""
    renders = collection.get("renders")
    if renders and collection.get(AUTOMATIC_KEY) != AUTOMATIC:
        return  # someone's own renders
    asset = _data_asset(items, collection)
    if asset is None:
        return
    render: dict[str, Any] = {"title": "Products", "assets": [asset]}
    found = _band_ranges(items, asset)
    previous = None if fresh else ((renders or {}).get("default") or {}).get("rescale")
    if found is not None:
        bands = _drawn_bands(len(found))
        ranges = [found[b - 1] for b in bands]
        if previous and len(previous) == len(ranges):
            ranges = [
                (min(lo, old[0]), max(hi, old[1]))
                for (lo, hi), old in zip(ranges, previous, strict=True)
            ]
        render["rescale"] = [[lo, hi if hi > lo else lo + 1] for lo, hi in ranges]
        if len(found) > 1:
            render["bidx"] = bands
        if len(bands) == 1:
            render["colormap_name"] = DEFAULT_COLORMAP
    collection["renders"] = {"default": render}
    collection[AUTOMATIC_KEY] = AUTOMATIC
    extensions = collection.setdefault("stac_extensions", [])
    if RENDER_EXTENSION not in extensions:
        extensions.append(RENDER_EXTENSION)


def render_query(render: dict[str, Any]) -> str:
    """A render as titiler's query parameters (its bands as titiler's ``asset|bidx=``)."""
    bidx = render.get("bidx")
    suffix = (
        f"|bidx={','.join(str(int(b)) for b in bidx)}" if isinstance(bidx, list) and bidx else ""
    )
    params: list[tuple[str, str]] = [("assets", f"{a}{suffix}") for a in render.get("assets") or []]
    for low_high in render.get("rescale") or []:
        params.append(("rescale", ",".join(str(v) for v in low_high)))
    for key in ("colormap_name", "color_formula", "resampling", "expression", "nodata"):
        if render.get(key) is not None:
            params.append((key, str(render[key])))
    return urlencode(params)


def default_render(collection: dict[str, Any]) -> dict[str, Any] | None:
    renders = collection.get("renders")
    if not isinstance(renders, dict) or not renders:
        return None
    chosen = renders.get("default") or next(iter(renders.values()))
    return chosen if isinstance(chosen, dict) and chosen.get("assets") else None


def mosaic_base(base_url: str, collection_id: str) -> str:
    return f"{base_url}{RASTER_PATH}/{quote(collection_id, safe='')}"


def mosaic_links(base_url: str, collection: dict[str, Any]) -> list[dict[str, Any]]:
    """XYZ, TileJSON and WMTS links to the collection's mosaic, drawn by its default
    render (none without one)."""
    render = default_render(collection)
    if render is None:
        return []
    base = mosaic_base(base_url, str(collection["id"]))
    query = render_query(render)
    title = f"{collection.get('title') or collection['id']}: the mosaic"
    return [
        {
            "rel": "xyz",
            "href": f"{base}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png?{query}",
            "type": "image/png",
            "title": f"{title} (XYZ tiles)",
        },
        {
            "rel": "tilejson",
            "href": f"{base}/{TMS}/tilejson.json?{query}",
            "type": "application/json",
            "title": f"{title} (TileJSON)",
        },
        {
            "rel": "wmts",
            "href": f"{base}/WMTSCapabilities.xml?tileMatrixSet={TMS}&{query}",
            "type": "application/xml",
            "title": f"{title} (WMTS, for QGIS)",
            "wmts:layer": f"{WMTS_LAYER}_{TMS}_default",
        },
    ]


def item_tile_link(base_url: str, item: dict[str, Any]) -> dict[str, Any] | None:
    """An XYZ link to one product's COG, drawn by its own statistics."""
    asset = _data_asset([item], {})
    if asset is None or not item.get("collection"):
        return None
    render: dict[str, Any] = {"assets": [asset]}
    found = _band_ranges([item], asset)
    if found is not None:
        bands = _drawn_bands(len(found))
        render["rescale"] = [
            [found[b - 1][0], max(found[b - 1][1], found[b - 1][0] + 1e-9)] for b in bands
        ]
        if len(found) > 1:
            render["bidx"] = bands
        if len(bands) == 1:
            render["colormap_name"] = DEFAULT_COLORMAP
    base = mosaic_base(base_url, str(item["collection"]))
    return {
        "rel": "xyz",
        "href": f"{base}/items/{quote(str(item['id']), safe='')}/tiles/{TMS}/{{z}}/{{x}}/{{y}}.png?"
        + render_query(render),
        "type": "image/png",
        "title": f"{item['id']} (tiles)",
    }


def with_web_map_links(stac_object: dict[str, Any], links: list[dict[str, Any]]) -> None:
    """Add web-map ``links`` to a collection or item as served, declaring the extension."""
    if not links:
        return
    stac_object.setdefault("links", []).extend(links)
    extensions = stac_object.setdefault("stac_extensions", [])
    if WEB_MAP_LINKS not in extensions:
        extensions.append(WEB_MAP_LINKS)
