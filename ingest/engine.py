"""The ingest engine: products (from ``ingest.sources``) into COG files in the product
store and product items in the catalogue, together or not at all.

Per product: every raster's header is checked first (size to decode, CRS, footprint
within its tile, truncation, COG validity: ``ingest.raster_checks.check``), so nothing a
back-end sent is read in full, copied or converted before it is known to be a raster
this product may hold; then the source bytes are hashed (and checked against a checksum
or size the source document states); the same source bytes as the latest version change
nothing; otherwise every raster is made a COG when it is not one, described, and
previewed; the item is validated offline; the files are written under keys holding
their digest; then one API call writes the item (a new version where the product
existed), grows the collection's extent and marks the tile's job ingested; a batch of
products goes in one call, all or nothing. When that call fails, the files just
written are removed again."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog_service.client.http import ApiError, HttpSession
from catalog_service.errors import TilekeeperError
from catalog_service.remote_text import inert
from catalog_service.settings import HarvestSettings
from ingest.errors import IngestError, Mismatch, Unavailable
from ingest.items import SOURCE_KEY, StoredRaster, product_collection, product_item
from ingest.limits import raster_bytes_limit
from ingest.raster_checks import Expectations, check
from ingest.rasters import COG_TYPE, FileDigest, describe, make_cog
from ingest.sources import Product
from ingest.store import ProductStore
from ingest.validate import InvalidStac, validate

logger = logging.getLogger(__name__)
# Twice the cores: a worker waits while its direct-I/O copy reaches the disk, and the
# catalogue writes run on the calling thread; the cores should not idle meanwhile.
INGEST_WORKERS = min(8, 2 * (os.cpu_count() or 1))
PREFETCH = 200


@dataclass(frozen=True)
class Outcome:
    source: str
    product: str | None
    # created | updated | unchanged | would create | would update | failed | expired (a
    # harvest's: the back-end no longer has the results; only another job brings them)
    result: str
    version: int | None = None
    error: str | None = None
    href: str | None = None
    # A failure another try may cure (a file truncated or corrupted on its way); None: no.
    transient: bool | None = None

    @property
    def failed(self) -> bool:
        return self.result in ("failed", "expired")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Staged:
    """A product whose files are in the store and whose item awaits its catalogue write."""

    product: Product
    item: dict[str, Any]
    job: tuple[str, str] | None
    files: list[str]  # store keys written for it (removed again if the write fails)


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
        settings: HarvestSettings | None = None,
    ) -> None:
        self.http = http
        self.store = store
        self.collection = collection
        self.campaign = campaign
        self.dry_run = dry_run
        self.settings = settings or HarvestSettings()
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
                    {"rel": "related", "href": f"collections/{self.campaign}",
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

    def exists(self, product_id: str) -> bool:
        """True when the collection holds the product (its latest version)."""
        return self.http.exists(f"collections/{self.collection}/items/{product_id}")

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
        """Ingest products (each with its campaign tile, if any). ``workers`` threads
        hash, check, describe and store them (hashing, GDAL and file I/O release the
        GIL); this thread writes what they have staged to the catalogue, everything
        ready in one request (a batch), so the API and database pay their per-request
        cost once per batch. Outcomes in input order."""
        if not work:
            return []
        self._prefetch([product.id for product, _job in work])
        self.ensure_collection([r.key for r in work[0][0].rasters])  # once, before the race
        outcomes: dict[int, Outcome] = {}

        def record(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            if on_done is not None:
                on_done(outcome)

        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="ingest") as pool:
            pending = {
                pool.submit(self.stage, product, job): n for n, (product, job) in enumerate(work)
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                batch: list[tuple[int, Staged]] = []
                for future in done:
                    index = pending.pop(future)
                    staged = future.result()
                    if isinstance(staged, Outcome):
                        record(index, staged)
                    else:
                        batch.append((index, staged))
                if batch:
                    committed = self.commit([staged for _n, staged in batch])
                    for (index, _staged), outcome in zip(batch, committed, strict=True):
                        record(index, outcome)
        return [outcomes[n] for n in range(len(work))]

    def ingest(self, product: Product, job: tuple[str, str] | None = None) -> Outcome:
        """One product; never raises for a bad input: the outcome says what failed."""
        staged = self.stage(product, job)
        return staged if isinstance(staged, Outcome) else self.commit([staged])[0]

    def stage(self, product: Product, job: tuple[str, str] | None = None) -> Staged | Outcome:
        """Everything but the catalogue write: the product's files in the store and its
        item ready (or an outcome: failed, unchanged without a job, dry run)."""
        try:
            return self._stage(product, job)
        except (TilekeeperError, OSError) as exc:
            logger.warning("%s: %s", product.source, exc)
            transient = isinstance(exc, Mismatch | Unavailable) or None
            return Outcome(
                product.source, product.id, "failed", error=str(exc), transient=transient
            )
        except Exception as exc:  # a file no check foresaw (GDAL, numpy): it fails alone
            error = inert(f"{type(exc).__name__}: {exc}")
            logger.warning("%s: unexpected error: %s", product.source, error)
            logger.debug("%s: unexpected error", product.source, exc_info=True)
            return Outcome(product.source, product.id, "failed", error=error)

    def expectations(self, product: Product) -> Expectations:
        """What the product's rasters must be: within the raster limit (from the tile's
        size, unless set), and for a campaign tile, within the tile and in its CRS."""
        crs = product.expected_crs if self.settings.crs == "tile" else None
        return Expectations(
            max_bytes=raster_bytes_limit(self.settings, product.tile_geometry),
            tile=product.tile,
            tile_geometry=product.tile_geometry,
            tolerance=self.settings.footprint_tolerance,
            crs=crs,
        )

    def _stage(self, product: Product, job: tuple[str, str] | None) -> Staged | Outcome:
        self.ensure_collection([r.key for r in product.rasters])
        existing = self._existing(product.id)
        # The header checks first (milliseconds, no pixel read): nothing is read in full,
        # copied or converted before it is known to be a raster this product may hold.
        expect = self.expectations(product)
        cogs = {id(raster): check(raster.path, expect) for raster in product.rasters}
        # A new product's COGs are copied into the store while they are hashed: one read
        # each. A known one is hashed first: the same bytes again change nothing. A file
        # to convert is only hashed: its converted COG is what is stored.
        copies: dict[int, Path] = {}
        try:
            digests = {}
            for raster in product.rasters:
                new = existing is None and not self.dry_run and cogs[id(raster)]
                copy = self.store.staging_path() if new else None
                digests[id(raster)] = FileDigest.of(raster.path, copy_to=copy)
                if copy is not None:
                    copies[id(raster)] = copy
            for raster in product.rasters:
                _check_expected(raster.path, raster.expected, digests[id(raster)])
            checksums = [digests[id(r)].checksum for r in product.rasters]
            if existing is not None and existing["properties"].get(SOURCE_KEY) == checksums:
                if job is None or self.dry_run:
                    version = int(existing["properties"].get("version") or 1)
                    return Outcome(product.source, product.id, "unchanged", version)
                return Staged(product, existing, job, [])  # the job item learns of it
            with tempfile.TemporaryDirectory(prefix="tilekeeper-ingest-") as tmp:
                item, files = self._prepare(product, Path(tmp), checksums, digests, copies, cogs)
                if self.dry_run:
                    result = "would update" if existing else "would create"
                    return Outcome(product.source, product.id, result)
                written: list[str] = []
                try:
                    for key, path, media in files:
                        if self.store.exists(key):
                            # Content-addressed: these very bytes are there (a product
                            # registered again); never removed if the write fails.
                            continue
                        self.store.put(key, path, media)
                        written.append(key)
                except BaseException:
                    self._remove(written)
                    raise
            return Staged(product, item, job, written)
        finally:
            for copy in copies.values():  # the copies not moved into place
                copy.unlink(missing_ok=True)

    def commit(self, batch: list[Staged]) -> list[Outcome]:
        """Write staged products to the catalogue in one request, all or nothing. When
        the batch is refused, each is tried alone, so one bad product fails alone; a
        product whose write fails has its files removed again."""
        try:
            answer = self._write(batch)
        except (TilekeeperError, OSError) as exc:
            if len(batch) > 1:
                return [outcome for staged in batch for outcome in self.commit([staged])]
            staged = batch[0]
            self._remove(staged.files)
            logger.warning("%s: %s", staged.product.source, exc)
            return [Outcome(staged.product.source, staged.product.id, "failed", error=str(exc))]
        outcomes = []
        for staged, write in zip(batch, answer["writes"], strict=True):
            # "unchanged" after staging means another worker wrote the same source
            # meanwhile; its files have the same content-addressed keys, so none is removed.
            first = write["items"][0]
            href = self.http.url(f"collections/{self.collection}/items/{staged.product.id}")
            outcomes.append(
                Outcome(staged.product.source, staged.product.id, first["result"],
                        first["version"], href=href)
            )  # fmt: skip
        return outcomes

    def _remove(self, keys: list[str]) -> None:
        for key in keys:
            self.store.delete(key)

    def _prepare(
        self,
        product: Product,
        work: Path,
        checksums: list[str],
        digests: dict[int, FileDigest],
        copies: dict[int, Path],
        cogs: dict[int, bool],
    ) -> tuple[dict[str, Any], list[tuple[str, Path, str]]]:
        """The product's item and its files (key, path, media type); the files are
        ``copies`` already in the store where the input is a COG (``cogs``: checked)."""
        stored: list[StoredRaster] = []
        files: list[tuple[str, Path, str]] = []
        folder = f"{self.collection}/{product.id}"
        preview = work / "thumbnail.png"
        for n, raster in enumerate(product.rasters):
            cog, digest = raster.path, digests[id(raster)]
            stored_file = copies.get(id(raster), raster.path)
            if not cogs[id(raster)]:
                # Bounded work: check() held the raster to the raster limit, and the
                # conversion (overviews included) decodes no more than that.
                cog = work / f"{raster.key}.tif"
                make_cog(raster.path, cog)
                staging = self.store.staging_path()
                digest = FileDigest.of(cog, copy_to=staging)
                stored_file = staging or cog
                if staging is not None:
                    copies[id(raster)] = staging
            info = describe(cog, thumbnail_path=preview if n == 0 else None)
            key = f"{folder}/{digest.checksum[4:20]}/{raster.key}.tif"
            files.append((key, stored_file, COG_TYPE))
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
            {"rel": "collection", "href": f"collections/{self.collection}",
             "type": "application/json"}
        )  # fmt: skip
        try:
            validate(item)
        except InvalidStac as exc:
            raise IngestError(f"{product.source}: {exc}") from exc
        return item, files

    def _write(self, batch: list[Staged]) -> dict[str, Any]:
        writes: list[dict[str, Any]] = []
        for staged in batch:
            write: dict[str, Any] = {"items": [staged.item]}
            if staged.job is not None:
                write["job"] = {"campaign": staged.job[0], "tile": staged.job[1]}
            writes.append(write)
        answer: dict[str, Any] = self.http.post(
            f"collections/{self.collection}/products", json={"writes": writes}
        )
        return answer


def _check_expected(path: Path, expected: dict[str, Any], digest: FileDigest) -> None:
    name = inert(path.name, 200)
    size = expected.get("file:size")
    if size is not None and int(size) != digest.size:
        raise Mismatch(
            f"{name}: {digest.size} bytes, but its document says {inert(size, 40)} "
            "(truncated download?)"
        )
    checksum = expected.get("file:checksum")
    if checksum and str(checksum).lower() != digest.checksum:
        raise Mismatch(
            f"{name}: checksum {digest.checksum} does not match the document's "
            f"{inert(checksum, 140)}"
        )
