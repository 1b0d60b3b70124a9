"""Items as served: what pgstac stored, made the STAC clients expect, in place.

Every item read path (search GET and POST, items, item) goes through the core client's
``_search_base``, which hands each item to ``as_served``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from catalog_service.jobs.campaign import ATTEMPT_KEYS, ORDER_KEY, job_extensions
from catalog_service.products import SOURCE_KEY
from catalog_service.raster.render import item_tile_link, with_web_map_links

_PROJECTION_V2 = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_PROJECTION_V1_2 = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"


@dataclass(frozen=True)
class Shown:
    """Which properties an answer shows (the fields extension's include and exclude)."""

    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    @classmethod
    def of(cls, fields: Any) -> Shown:
        if fields is None:
            return cls()
        return cls(frozenset(fields.include or ()), frozenset(fields.exclude or ()))

    def __call__(self, name: str) -> bool:
        field = f"properties.{name}"
        if field in self.exclude:
            return False
        return not self.include or field in self.include or "properties" in self.include


def as_served(item: dict[str, Any], base_url: str, shown: Shown = Shown()) -> None:
    """Make a stored item the valid STAC it was when written, in place.

    Relative asset hrefs (the local product store's files, ``products/files/...``) are
    resolved against the request's base URL, as stac-fastapi-pgstac resolves stored
    relative links: behind a proxy, on another host or port, downloads and thumbnails
    point where the API was reached.

    pgstac stores items without their null-valued properties (its dehydration strips
    them), so ``datetime: null`` beside ``start_datetime``/``end_datetime``, as STAC
    requires it for a range, comes back missing and the item would fail validation: it is
    served again. A job item's attempt properties (``openeo:job_id``, ``backend_name``,
    times, ``costs``) are served as null while it has none: OGR/QGIS make a layer's fields
    from its first page, and a first page of tiles not started yet lost the job id field
    for the whole campaign. Other null properties read as absent.

    Job items stored before they declared the extensions of their grid fields (proj:,
    grid:, mgrs:) declare them as served; products stored before they carried
    ``proj:epsg`` carry it as served."""
    _resolve_assets(item.get("assets"), base_url)
    props = item.get("properties")
    if not isinstance(props, dict):
        return
    if (
        "datetime" not in props
        and "start_datetime" in props
        and "end_datetime" in props
        and shown("datetime")
    ):
        props["datetime"] = None
    declared = item.get("stac_extensions")
    if ORDER_KEY in props:
        for key in ATTEMPT_KEYS:
            if key not in props and shown(key):
                props[key] = None
        if isinstance(declared, list):
            item["stac_extensions"] = job_extensions(props, declared)
    if SOURCE_KEY in props and isinstance(declared, list):
        _with_epsg(item, props, declared)
        link = item_tile_link(base_url, item)
        with_web_map_links(item, [link] if link else [])


def _with_epsg(item: dict[str, Any], props: dict[str, Any], declared: list[Any]) -> None:
    """Products ingested before they carried ``proj:epsg`` (GDAL 3.6's STACIT skips
    items without it, ingest/items.py) are served as ingested today: ``proj:epsg`` beside
    ``proj:code``, under projection v1.2.0, whose schema has both."""
    code = props.get("proj:code")
    if "proj:epsg" in props or not isinstance(code, str) or not code.startswith("EPSG:"):
        return
    number = code.removeprefix("EPSG:")
    if number.isdigit() and _PROJECTION_V2 in declared:
        props["proj:epsg"] = int(number)
        item["stac_extensions"] = [
            _PROJECTION_V1_2 if url == _PROJECTION_V2 else url for url in declared
        ]


def _resolve_assets(assets: Any, base_url: str) -> None:
    """Relative hrefs below the API's root only: ``/x``, ``//host/x`` and ``../`` would
    leave it (another host, or above a proxy's prefix) and stay as they were written."""
    if not isinstance(assets, dict):
        return
    for asset in assets.values():
        href = asset.get("href") if isinstance(asset, dict) else None
        if (
            isinstance(href, str)
            and not urlsplit(href).scheme
            and not href.startswith("/")
            and ".." not in href.split("/")
        ):
            asset["href"] = urljoin(base_url, href)
