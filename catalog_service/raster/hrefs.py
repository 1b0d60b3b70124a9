"""Which asset hrefs the raster service opens, and as what.

Asset hrefs are written by whoever may fill a collection: opened as given, an href
could name any file on the API's machine or any address its network reaches. The
raster service opens only the product store's own files: the local store's keys (as
paths under its root) and the object store's public URLs; every other asset is left out
of a mosaic or an item's tiles, as if it did not exist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from catalog_service.settings import ProductSettings

# How the local store's hrefs start in items (ingest/store.py LOCAL_FILES_PATH), as
# stored (relative) or as served (resolved against the API's address).
LOCAL_PREFIX = "products/files/"


@dataclass(frozen=True)
class ReadableHrefs:
    local_root: Path | None
    public_base: str | None

    @classmethod
    def of(cls, settings: ProductSettings) -> ReadableHrefs:
        local = settings.local_dir()
        public = settings.public_base()
        return cls(
            local.resolve() if local is not None else None,
            public.rstrip("/") + "/" if public else None,
        )

    def opened(self, href: str, collection: str) -> str | None:
        """What GDAL opens for ``href`` of an item of ``collection``: a path in the local
        store, the object store's URL, or None for an href outside the store or to
        another collection's files (store keys start with their collection's id: a
        private campaign's file named by someone else's item stays unread)."""
        if self.public_base is not None and href.startswith(self.public_base):
            parts = unquote(href[len(self.public_base) :].split("?", 1)[0]).split("/")
            return href if len(parts) > 1 and parts[0] == collection and ".." not in parts else None
        if self.local_root is None or not href.startswith(LOCAL_PREFIX):
            return None
        key = unquote(href[len(LOCAL_PREFIX) :].split("?", 1)[0].split("#", 1)[0])
        own = (self.local_root / collection).resolve()
        path = (self.local_root / key).resolve()
        if key.split("/", 1)[0] != collection or not path.is_relative_to(own):
            return None
        return str(path) if path.is_file() else None
