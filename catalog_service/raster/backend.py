"""titiler-pgstac's mosaic backend and item reader, opening only the product store's
files (hrefs.py) and answering low zooms from the campaign overview (overview.py)."""

from __future__ import annotations

from typing import Any

import attr
from rio_tiler.errors import EmptyMosaicError, InvalidAssetName, TileOutsideBounds
from rio_tiler.models import ImageData
from rio_tiler.types import AssetInfo, AssetType
from titiler.pgstac.backend import PGSTACBackend
from titiler.pgstac.reader import Item, PgSTACReader, SimpleSTACReader

from catalog_service.raster.hrefs import ReadableHrefs
from catalog_service.raster.overview import Pyramid


def readable_item(item: Item, hrefs: ReadableHrefs) -> Item | None:
    """``item`` with only the assets the service may open (hrefs as stored: listings
    show no server path); None when none is left."""
    collection = str(item.get("collection", ""))
    assets = {
        name: {k: v for k, v in asset.items() if k != "alternate"}
        for name, asset in item.get("assets", {}).items()
        if hrefs.opened(str(asset.get("href", "")), collection) is not None
    }
    if not assets:
        return None
    result: Item = {**item, "assets": assets}
    return result


@attr.s
class StoreMosaicReader(SimpleSTACReader):
    """One item of a mosaic (titiler-pgstac's simple reader), opened from the store."""

    hrefs: ReadableHrefs = attr.ib(kw_only=True)

    def _get_asset_info(self, asset: AssetType) -> AssetInfo:
        info: AssetInfo = super()._get_asset_info(asset)
        href = str(self.input["assets"][info["name"]].get("href", ""))
        opened = self.hrefs.opened(href, str(self.input.get("collection", "")))
        if opened is None:
            raise InvalidAssetName(f"asset {info['name']!r} is not in the product store")
        info["url"] = opened
        return info


@attr.s
class StoreBackend(PGSTACBackend):
    """A registered search's items, with the assets the service may open."""

    hrefs: ReadableHrefs = attr.ib(kw_only=True)
    overview: Pyramid | None = attr.ib(kw_only=True, default=None)

    def tile(  # type: ignore[override]  # upstream's own override of BaseReader.tile
        self, x: int, y: int, z: int, search_options: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[ImageData, list[str]]:
        """Zooms the collection's overview serves come from it; others from the products."""
        pyramid = self.overview
        bands = None
        if pyramid is not None:
            bands = pyramid.bands_for(z, kwargs.get("assets"), kwargs.get("expression"))
        if pyramid is not None and bands is not None:
            try:
                image = pyramid.tile(x, y, z, kwargs.get("tilesize"), bands)
            except TileOutsideBounds as exc:
                raise EmptyMosaicError("no product in this tile") from exc
            if not image.mask.any():
                raise EmptyMosaicError("no product in this tile")
            return image, [f"overview z{z}"]
        found: tuple[ImageData, list[str]] = super().tile(x, y, z, search_options, **kwargs)
        return found

    def get_assets(self, *args: Any, **kwargs: Any) -> list[Item]:
        found: list[Item] = super().get_assets(*args, **kwargs)
        kept = (readable_item(item, self.hrefs) for item in found)
        return [item for item in kept if item is not None]


@attr.s
class StoreItemReader(PgSTACReader):
    """One item's assets (titiler's item routes), from the product store only."""

    hrefs: ReadableHrefs = attr.ib(kw_only=True)

    def _get_asset_info(self, asset: AssetType) -> AssetInfo:
        info: AssetInfo = super()._get_asset_info(asset)
        opened = self.hrefs.opened(
            str(self.item.assets[info["name"]].href), str(self.item.collection_id)
        )
        if opened is None:
            raise InvalidAssetName(f"asset {info['name']!r} is not in the product store")
        info["url"] = opened
        return info
