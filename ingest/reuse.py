"""Result files the product store already holds, registered instead of downloaded again.

A catalogue restored from an older backup (or a crash between a harvest's file writes
and its catalogue write) leaves product files in the store with no product item. When
a tile is harvested again, each result file is looked for in its product's folder first
(keys hold the content's digest: ``{collection}/{product}/{digest}/{raster}.tif``, see
ingest/store.py). A stored file is used only when its bytes hash to the digest of its
key and to the ``file:checksum`` (and ``file:size``) the back-end's results document
states. A document that states no checksum leaves the key's digest as the only proof,
so the file is used only when the product has no item at all and the folder holds no
other file for that raster; otherwise it is downloaded. Each refusal is logged with why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.rasters import FileDigest
from ingest.store import ProductStore

logger = logging.getLogger(__name__)
# The digest part of a key: ingest/engine.py writes the checksum's hex digits 4 to 20.
DIGEST = slice(4, 20)


def _candidates(keys: list[str], folder: str, raster_key: str) -> list[str]:
    """The keys of ``folder`` that are a version of ``raster_key``'s file."""
    name = f"{raster_key}.tif"
    out = []
    for key in keys:
        rest = key[len(folder) + 1 :].split("/") if key.startswith(folder + "/") else []
        if len(rest) == 2 and rest[1] == name:
            out.append(key)
    return out


def mismatch(key: str, digest: FileDigest, expected: dict[str, Any]) -> str | None:
    """Why the stored file at ``key`` (hashed: ``digest``) is not the result the
    document describes (``expected``: its file:checksum and file:size); None: it is."""
    if key.split("/")[-2] != digest.checksum[DIGEST]:
        return f"its bytes hash to {digest.checksum}, not to the digest its key holds (damaged?)"
    checksum = str(expected.get("file:checksum") or "").lower()
    if checksum and checksum != digest.checksum:
        return f"checksum {digest.checksum}, but the back-end's result says {checksum[:140]}"
    size = expected.get("file:size")
    if size is not None and str(size) != str(digest.size):
        return f"{digest.size} bytes, but the back-end's result says {str(size)[:40]}"
    return None


class StoredResults:
    """Finds a tile's result files among one product collection's stored files."""

    def __init__(
        self, store: ProductStore, collection: str, product_exists: Callable[[str], bool]
    ) -> None:
        self.store = store
        self.collection = collection
        self.product_exists = product_exists
        self.reused = 0  # files registered from the store, not downloaded

    def find(
        self,
        tile: str,
        product_id: str,
        raster_key: str,
        expected: dict[str, Any],
        scratch: Path,
    ) -> Path | None:
        """A local file with the result's bytes from the store (the store's own file, or
        ``scratch`` fetched from object storage), or None: download it."""
        folder = f"{self.collection}/{product_id}"
        candidates = _candidates(self.store.keys(folder), folder, raster_key)
        if not candidates:
            return None
        checksum = str(expected.get("file:checksum") or "").lower()
        if checksum:
            key = f"{folder}/{checksum[DIGEST]}/{raster_key}.tif"
            if key not in candidates:
                logger.info(
                    "tile %s: %d stored version(s) of %s, none with the result's checksum: "
                    "downloaded",
                    tile,
                    len(candidates),
                    raster_key,
                )
                return None
        elif len(candidates) > 1 or self.product_exists(product_id):
            logger.info(
                "tile %s: the results document states no checksum for %s and the store's "
                "file cannot be told apart from an earlier version's: downloaded",
                tile,
                raster_key,
            )
            return None
        else:
            key = candidates[0]
        path = self.store.fetch(key, scratch)
        problem = mismatch(key, FileDigest.of(path), expected)
        if problem is not None:
            logger.warning("tile %s: stored file %s not registered: %s", tile, key, problem)
            return None
        logger.info("tile %s: %s found in the product store: registered, not downloaded", tile, key)
        self.reused += 1
        return path
