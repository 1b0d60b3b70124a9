"""The product store: where product files live. A local directory (served by the API
with Range requests) or S3-compatible object storage (obstore).

Keys hold the content's digest (``{collection}/{item}/{digest}/{file}``), so a new
version never overwrites the files an older one points to, and a file is written once
under its final key: the local store copies into ``.staging/`` and renames (atomic on
one file system); an object store's PUT is atomic by itself."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import obstore
from obstore.exceptions import BaseError as ObjectStoreError
from obstore.exceptions import NotFoundError
from obstore.store import from_url

from catalog_service.settings import ProductSettings
from ingest.errors import IngestError


class ProductStore(Protocol):
    """Put, remove and locate product files by key."""

    def put(self, key: str, src: Path, content_type: str) -> None: ...

    def staging_path(self) -> Path | None:
        """A fresh path for a file to be put later that ``put`` then moves instead of
        copying (None: this store copies or uploads anyway)."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_folder(self, prefix: str) -> int:
        """Remove every file under ``prefix/`` (a collection's products); returns how
        many there were."""
        ...

    def href(self, key: str) -> str:
        """The href items store for ``key``: absolute on object storage, relative to the
        API's root in the local store (served resolved)."""
        ...

    def describe(self) -> str: ...

    def exists(self, key: str) -> bool: ...

    def keys(self, folder: str, limit: int = ...) -> list[str]:
        """The keys of the files under ``folder/`` (at most ``limit``, MAX_KEYS)."""
        ...

    def fetch(self, key: str, target: Path) -> Path:
        """A local file holding ``key``'s bytes: the store's own file where it is local,
        else ``target`` downloaded."""
        ...


# A folder's keys read at most (one product's folder holds its versions' files).
MAX_KEYS = 10_000
# Where the API serves a local store's files, relative to the API's root: stored so in
# items (as stac-fastapi-pgstac stores relative links) and resolved against each
# request's base URL when served, so hrefs follow the address the API is reached at
# (another host, port or a proxy's path prefix), not the one the ingest used.
LOCAL_FILES_PATH = "products/files"


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise IngestError(f"product key {key!r} leaves the store")
        return path

    def staging_path(self) -> Path:
        staging = self.root / ".staging"
        try:
            staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IngestError(f"product store {self.root}: cannot write ({exc})") from exc
        return staging / uuid.uuid4().hex

    def put(self, key: str, src: Path, content_type: str) -> None:
        final = self._path(key)
        staged = src.parent == self.root / ".staging"  # written there already: moved
        staging = src if staged else self.root / ".staging" / f"{uuid.uuid4().hex}-{final.name}"
        try:
            if not staged:
                staging.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                staging.unlink(missing_ok=True)
            raise IngestError(f"product store {self.root}: cannot write {key} ({exc})") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # leave no empty folders behind
            if parent == self.root.resolve() or any(parent.iterdir()):
                break
            parent.rmdir()

    def delete_folder(self, prefix: str) -> int:
        folder = self._path(prefix)
        if folder == self.root.resolve() or not folder.is_dir():
            return 0
        count = sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def href(self, key: str) -> str:
        return f"{LOCAL_FILES_PATH}/{quote(key)}"

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, folder: str, limit: int = MAX_KEYS) -> list[str]:
        base = self._path(folder)
        if base == self.root.resolve() or not base.is_dir():
            return []
        root = self.root.resolve()
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
                if len(found) >= limit:
                    break
        return sorted(found)

    def fetch(self, key: str, target: Path) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise IngestError(f"product store {self.root}: no file {key}")
        return path

    def describe(self) -> str:
        return str(self.root)


class ObjectStore:
    def __init__(self, url: str, public_url: str, endpoint: str | None, region: str) -> None:
        options = {"allow_http": True} if endpoint and endpoint.startswith("http://") else {}
        config: dict[str, str] = {"region": region}
        if endpoint:
            config["endpoint"] = endpoint
        self.url = url.rstrip("/")
        self.store = from_url(self.url, config=config, client_options=options)  # type: ignore[call-overload]
        self.public_url = public_url.rstrip("/")

    def put(self, key: str, src: Path, content_type: str) -> None:
        try:
            with src.open("rb") as f:
                obstore.put(self.store, key, f, attributes={"Content-Type": content_type})
        except (ObjectStoreError, OSError) as exc:
            raise IngestError(f"product store {self.url}: cannot write {key} ({exc})") from exc

    def staging_path(self) -> None:
        return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self.store, key)

    def delete_folder(self, prefix: str) -> int:
        if not prefix.strip("/"):
            return 0
        count = 0
        try:
            for batch in obstore.list(self.store, prefix=f"{prefix.strip('/')}/", chunk_size=1000):
                paths = [meta["path"] for meta in batch]
                obstore.delete(self.store, paths)
                count += len(paths)
        except ObjectStoreError as exc:
            raise IngestError(f"product store {self.url}: cannot delete {prefix}/ ({exc})") from exc
        return count

    def href(self, key: str) -> str:
        return f"{self.public_url}/{quote(key)}"

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self.store, key)
        except (FileNotFoundError, NotFoundError):
            return False
        except ObjectStoreError as exc:
            raise IngestError(f"product store {self.url}: cannot read {key} ({exc})") from exc
        return True

    def keys(self, folder: str, limit: int = MAX_KEYS) -> list[str]:
        if not folder.strip("/"):
            return []
        found: list[str] = []
        try:
            for batch in obstore.list(self.store, prefix=f"{folder.strip('/')}/", chunk_size=1000):
                found.extend(str(meta["path"]) for meta in batch)
                if len(found) >= limit:
                    break
        except ObjectStoreError as exc:
            raise IngestError(f"product store {self.url}: cannot list {folder}/ ({exc})") from exc
        return sorted(found[:limit])

    def fetch(self, key: str, target: Path) -> Path:
        try:
            answer = obstore.get(self.store, key)
            with target.open("wb") as out:
                for chunk in answer.stream():
                    out.write(chunk)
        except (ObjectStoreError, FileNotFoundError, OSError) as exc:
            raise IngestError(f"product store {self.url}: cannot read {key} ({exc})") from exc
        return target

    def describe(self) -> str:
        return self.url


def open_store(settings: ProductSettings) -> ProductStore:
    """The store the settings name; local products are served by the API at
    ``{api}/products/files/``."""
    local = settings.local_dir()
    if local is not None:
        return LocalStore(local)
    public = settings.public_base()
    assert settings.store is not None and public is not None
    return ObjectStore(settings.store, public, settings.s3_endpoint, settings.s3_region)
