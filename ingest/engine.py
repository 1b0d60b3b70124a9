"""The ingest engine: products (from ``ingest.sources``) into COG files in the product
store and product items in the catalogue, together or not at all.

Per product: the source bytes are hashed (and checked against a checksum or size the
source document states); the same source bytes as the latest version change nothing;
otherwise every raster is checked and made a COG when it is not one, described, and
previewed; the item is validated offline; the files are written under keys holding
their digest; then one API call writes the item (a new version where the product
existed), grows the collection's extent and marks the tile's job ingested. When that
call fails, the files just written are removed again."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog_service.client.http import ApiError, HttpSession
from catalog_service.errors import TilekeeperError
from ingest.errors import IngestError
from ingest.items import SOURCE_KEY, StoredRaster, product_collection, product_item
from ingest.rasters import COG_TYPE, FileDigest, check, describe, is_cog, make_cog
from ingest.sources import Product
from ingest.store import ProductStore
from ingest.validate import InvalidStac, validate

logger = logging.getLogger(__name__)
INGEST_WORKERS = min(4, os.cpu_count() or 1)
PREFETCH = 200


@dataclass(frozen=True)
class Outcome:
    source: str
    product: str | None
    result: str  # created | updated | unchanged | would create | would update | failed
    version: int | None = None
    error: str | None = None
    href: str | None = None

    @property
    def failed(self) -> bool:
        return self.result == "failed"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def campaign_products_id(campaign: str) -> str:
    return f"{campaign}-products"


class Ingester:
    """Ingests products into one collection of the catalogue at ``http``."""

    def __init__(
        self,
        http: HttpSession,
        store: ProductStore,
        collection: str,
        *,
        campaign: str | None = None,
        dry_run: bool = False,
    ) -> None:
        self.http = http
        self.store = store
        self.collection = collection
        self.campaign = campaign
        self.dry_run = dry_run
        self._collection_checked = False
        # Latest versions looked up ahead for a batch (None: no such product yet).
        self._known: dict[str, dict[str, Any] | None] = {}
        self._lock = threading.Lock()
        self.fallback_datetime: str | None = None

    # -- the collection -----------------------------------------------------------

    def ensure_collection(self, asset_keys: list[str]) -> None:
        """Create the product collection when missing (validated like every item)."""
        if self._collection_checked:
            return
        path = f"collections/{self.collection}"
        if not self.http.exists(path):
            collection = product_collection(
                self.collection, campaign=self.campaign, asset_keys=asset_keys
            )
            if self.campaign:
                collection["links"].append(
                    {"rel": "related", "href": self.http.url(f"collections/{self.campaign}"),
                     "type": "application/json", "title": "the campaign these products come from"}
                )  # fmt: skip
            validate(collection)
            if self.dry_run:
                self._collection_checked = True
                return
            try:
                self.http.post("collections", json=collection)
            except ApiError as exc:
                if exc.status != 409:  # created meanwhile by another worker
                    raise
        if self.campaign and not self.dry_run:
            self._campaign_dates()
        self._collection_checked = True

    def _campaign_dates(self) -> None:
        campaign = self.http.get(f"collections/{self.campaign}")
        interval = campaign.get("extent", {}).get("temporal", {}).get("interval", [[None]])[0]
        self.fallback_datetime = interval[0] if interval else None

    # -- products -----------------------------------------------------------------

    def _prefetch(self, product_ids: list[str]) -> None:
        """The latest versions of a batch's products in a few searches instead of one
        request per product (what `_existing` would otherwise ask)."""
        if not self.http.exists(f"collections/{self.collection}"):
            self._known.update(dict.fromkeys(product_ids))
            return
        for start in range(0, len(product_ids), PREFETCH):
            ids = product_ids[start : start + PREFETCH]
            page = self.http.post(
                "search", json={"collections": [self.collection], "ids": ids, "limit": len(ids)}
            )
            found = {f["id"]: f for f in page.get("features", [])}
            self._known.update({pid: found.get(pid) for pid in ids})

    def _existing(self, product_id: str) -> dict[str, Any] | None:
        with self._lock:
            if product_id in self._known:
                return self._known.pop(product_id)
        path = f"collections/{self.collection}/items/{product_id}"
        try:
            item: dict[str, Any] = self.http.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return item

    def ingest_all(
        self,
        work: Sequence[tuple[Product, tuple[str, str] | None]],
        workers: int = INGEST_WORKERS,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Ingest products (each with its campaign tile, if any) on ``workers`` threads:
        hashing, GDAL reads and the store's I/O release the GIL. Outcomes in input order."""
        if not work:
            return []
        self._prefetch([product.id for product, _job in work])
        self.ensure_collection([r.key for r in work[0][0].rasters])  # once, before the race
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="ingest") as pool:
            futures = [pool.submit(self.ingest, product, job) for product, job in work]
            outcomes = []
            for future in futures:
                outcome = future.result()
                if on_done is not None:
                    on_done(outcome)
                outcomes.append(outcome)
        return outcomes

    def ingest(self, product: Product, job: tuple[str, str] | None = None) -> Outcome:
        """One product; never raises for a bad input: the outcome says what failed."""
        try:
            return self._ingest(product, job)
        except (TilekeeperError, OSError) as exc:
            logger.warning("%s: %s", product.source, exc)
            return Outcome(product.source, product.id, "failed", error=str(exc))

    def _ingest(self, product: Product, job: tuple[str, str] | None) -> Outcome:
        digests = {id(r): FileDigest.of(r.path) for r in product.rasters}
        for raster in product.rasters:
            _check_expected(raster.path, raster.expected, digests[id(raster)])
        checksums = [digests[id(r)].checksum for r in product.rasters]
        self.ensure_collection([r.key for r in product.rasters])
        existing = self._existing(product.id)
        if existing is not None and existing["properties"].get(SOURCE_KEY) == checksums:
            version = int(existing["properties"].get("version") or 1)
            if job is not None and not self.dry_run:
                self._write([existing], job)  # the job item learns of it, if it did not
            return Outcome(product.source, product.id, "unchanged", version)
        with tempfile.TemporaryDirectory(prefix="tilekeeper-ingest-") as tmp:
            work = Path(tmp)
            item, files = self._prepare(product, work, checksums, digests)
            if self.dry_run:
                result = "would update" if existing else "would create"
                return Outcome(product.source, product.id, result)
            written: list[str] = []
            try:
                for key, path, media in files:
                    self.store.put(key, path, media)
                    written.append(key)
                answer = self._write([item], job)
            except BaseException:
                for key in written:
                    self.store.delete(key)
                raise
        # "unchanged" here means another worker wrote the same source meanwhile; its
        # files have the same content-addressed keys, so nothing is removed.
        first = answer["items"][0]
        href = self.http.url(f"collections/{self.collection}/items/{product.id}")
        return Outcome(product.source, product.id, first["result"], first["version"], href=href)

    def _prepare(
        self,
        product: Product,
        work: Path,
        checksums: list[str],
        digests: dict[int, FileDigest],
    ) -> tuple[dict[str, Any], list[tuple[str, Path, str]]]:
        stored: list[StoredRaster] = []
        files: list[tuple[str, Path, str]] = []
        folder = f"{self.collection}/{product.id}"
        preview = work / "thumbnail.png"
        for n, raster in enumerate(product.rasters):
            check(raster.path)
            cog, digest = raster.path, digests[id(raster)]
            if not is_cog(raster.path):
                cog = work / f"{raster.key}.tif"
                make_cog(raster.path, cog)
                digest = FileDigest.of(cog)
            info = describe(cog, thumbnail_path=preview if n == 0 else None)
            key = f"{folder}/{digest.checksum[4:20]}/{raster.key}.tif"
            files.append((key, cog, COG_TYPE))
            stored.append(
                StoredRaster(raster.key, self.store.href(key), info, digest, raster.title)
            )
        thumb_key = f"{folder}/{stored[0].digest.checksum[4:20]}/thumbnail.png"
        files.append((thumb_key, preview, "image/png"))
        item = product_item(
            product,
            self.collection,
            stored,
            self.store.href(thumb_key),
            checksums,
            grid_code=product.grid_code,
            fallback_datetime=self.fallback_datetime,
        )
        # STAC 1.1: an item naming its collection links to it (the API adds the rest).
        item["links"].append(
            {"rel": "collection", "href": self.http.url(f"collections/{self.collection}"),
             "type": "application/json"}
        )  # fmt: skip
        try:
            validate(item)
        except InvalidStac as exc:
            raise IngestError(f"{product.source}: {exc}") from exc
        return item, files

    def _write(self, items: list[dict[str, Any]], job: tuple[str, str] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"items": items}
        if job is not None:
            body["job"] = {"campaign": job[0], "tile": job[1]}
        answer: dict[str, Any] = self.http.post(
            f"collections/{self.collection}/products", json=body
        )
        return answer


def _check_expected(path: Path, expected: dict[str, Any], digest: FileDigest) -> None:
    size = expected.get("file:size")
    if size is not None and int(size) != digest.size:
        raise IngestError(
            f"{path.name}: {digest.size} bytes, but its document says {size} (truncated download?)"
        )
    checksum = expected.get("file:checksum")
    if checksum and str(checksum).lower() != digest.checksum:
        raise IngestError(
            f"{path.name}: checksum {digest.checksum} does not match the document's {checksum}"
        )
