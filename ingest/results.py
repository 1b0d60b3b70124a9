"""Results documents of openEO batch jobs, and STAC items and collections fetched by URL,
parsed strictly at the edge: they come from a back-end or from anywhere on the web.

Only what tilekeeper uses is kept, each checked: assets (a mapping of objects with an
http(s) href, a bounded type and title, a date, ``file:size`` and ``file:checksum``),
item links, the document's id, type, properties (their date and ``processing:*``
fields) and providers. Anything else in the document is ignored; anything that does not
parse is a DocumentError with a short reason and the path of the value, never the
value itself in full."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from catalog_service.remote_text import inert
from ingest.errors import IngestError

MAX_ASSETS = 1000
MAX_LINKS = 10_000
MAX_ITEM_LINKS = 1000
MAX_PROVIDERS = 100
MAX_KEY_CHARS = 200
MAX_HREF_CHARS = 4096
MAX_TITLE_CHARS = 500
MAX_TYPE_CHARS = 200
MAX_DATE_CHARS = 64
MAX_ID_CHARS = 200
# processing:* fields are copied into product items: a few kB in practice.
MAX_PROVENANCE_BYTES = 64 * 1024
MAX_FILE_SIZE = (1 << 63) - 1
# A multihash in hex: sha2-256 is 68 digits, sha2-512 132.
CHECKSUM = re.compile(r"^[0-9a-fA-F]{8,256}$")
SCHEMES = ("http", "https")
DATE_FIELDS = ("datetime", "start_datetime")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_.~-]+")


class DocumentError(IngestError):
    """A document that does not parse; the message says where and why."""


@dataclass(frozen=True)
class Asset:
    """One asset of a document, as tilekeeper reads it."""

    key: str
    href: str  # absolute http(s)
    type: str | None = None
    title: str | None = None
    datetime: str | None = None
    start_datetime: str | None = None
    file_size: int | None = None
    file_checksum: str | None = None

    def metadata(self) -> dict[str, Any]:
        """The asset's fields under their STAC names (what ingest.sources reads)."""
        fields = {
            "href": self.href,
            "type": self.type,
            "title": self.title,
            "datetime": self.datetime,
            "start_datetime": self.start_datetime,
            "file:size": self.file_size,
            "file:checksum": self.file_checksum,
        }
        return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class Document:
    """A results document or a STAC item or collection, checked."""

    type: str | None
    id: str | None
    assets: list[Asset]
    item_links: list[str]  # absolute http(s) hrefs of rel="item" links
    properties: dict[str, Any] = field(default_factory=dict)  # dates and processing:* only
    providers: list[dict[str, Any]] = field(default_factory=list)  # processing:* only

    def as_stac(self) -> dict[str, Any]:
        """What is kept, as a STAC document (without links)."""
        doc: dict[str, Any] = {
            "assets": {a.key: a.metadata() for a in self.assets},
            "properties": dict(self.properties),
            "providers": [dict(p) for p in self.providers],
            "links": [],
        }
        if self.type is not None:
            doc["type"] = self.type
        if self.id is not None:
            doc["id"] = self.id
        return doc


def raster_key(key: str) -> str:
    """The name a document's asset key gives a product's raster: the key's stem with
    only letters, digits and _ . ~ - (it becomes a file name and a store key)."""
    stem = Path(key.replace("\\", "/")).stem
    safe = _UNSAFE_KEY.sub("_", stem).strip("._~-")[:100]
    return safe or "data"


def _fail(what: str, where: str, problem: str) -> DocumentError:
    return DocumentError(f"{what}: {inert(where, 120)}: {problem}")


def _text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit


def _href(value: Any, base: str | None) -> str | None:
    """The absolute http(s) URL an href names (relative ones against ``base``), or None."""
    if not _text(value, MAX_HREF_CHARS) or not value:
        return None
    try:
        absolute: str = urljoin(base, value) if base else value
        parts = urlsplit(absolute)
    except ValueError:
        return None
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        return None
    return absolute


def _date(value: Any) -> bool:
    if not _text(value, MAX_DATE_CHARS):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _asset(what: str, key: Any, value: Any, base: str | None) -> Asset:
    where = f"assets.{key}"
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise _fail(what, "assets", f"an asset key must be 1 to {MAX_KEY_CHARS} characters")
    if not isinstance(value, dict):
        raise _fail(what, where, "an asset must be an object")
    href = _href(value.get("href"), base)
    if href is None:
        absolute = "" if base else "an absolute "
        raise _fail(what, f"{where}.href", f"must be {absolute}http(s) URL")
    for name, limit in (("type", MAX_TYPE_CHARS), ("title", MAX_TITLE_CHARS)):
        if value.get(name) is not None and not _text(value[name], limit):
            raise _fail(what, f"{where}.{name}", f"must be a string of at most {limit} characters")
    for name in DATE_FIELDS:
        if value.get(name) is not None and not _date(value[name]):
            raise _fail(what, f"{where}.{name}", "must be an RFC 3339 date and time")
    size = value.get("file:size")
    if size is not None and (
        not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE
    ):
        raise _fail(what, f"{where}.file:size", "must be a non-negative integer")
    checksum = value.get("file:checksum")
    if checksum is not None and not (isinstance(checksum, str) and CHECKSUM.match(checksum)):
        raise _fail(what, f"{where}.file:checksum", "must be a multihash of 8 to 256 hex digits")
    return Asset(
        key=key,
        href=href,
        type=value.get("type"),
        title=value.get("title"),
        datetime=value.get("datetime"),
        start_datetime=value.get("start_datetime"),
        file_size=size,
        file_checksum=checksum,
    )


def _processing(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if isinstance(k, str) and k.startswith("processing:")}


def parse_document(doc: Any, what: str, base_url: str | None = None) -> Document:
    """``doc`` checked (``what`` names it in messages). Hrefs must be absolute http(s)
    URLs, or, with ``base_url``, may be relative to it."""
    if not isinstance(doc, dict):
        raise DocumentError(f"{what}: not a JSON object")
    kind = doc.get("type")
    if kind is not None and not _text(kind, MAX_TYPE_CHARS):
        raise _fail(what, "type", "must be a string")
    doc_id = doc.get("id")
    if doc_id is not None and not _text(doc_id, MAX_ID_CHARS):
        raise _fail(what, "id", f"must be a string of at most {MAX_ID_CHARS} characters")

    raw_assets = doc.get("assets")
    if raw_assets is None:
        raw_assets = {}
    if not isinstance(raw_assets, dict):
        raise _fail(what, "assets", "must be an object mapping keys to assets")
    if len(raw_assets) > MAX_ASSETS:
        raise _fail(what, "assets", f"{len(raw_assets):,} of them, more than {MAX_ASSETS:,}")
    assets = [_asset(what, k, v, base_url) for k, v in raw_assets.items()]

    links = doc.get("links")
    if links is None:
        links = []
    if not isinstance(links, list) or len(links) > MAX_LINKS:
        raise _fail(what, "links", f"must be a list of at most {MAX_LINKS:,} links")
    item_links: list[str] = []
    for n, link in enumerate(links):
        if not isinstance(link, dict):
            raise _fail(what, f"links[{n}]", "a link must be an object")
        rel = link.get("rel")
        if rel is not None and not _text(rel, MAX_TYPE_CHARS):
            raise _fail(what, f"links[{n}].rel", "must be a string")
        if rel != "item":
            continue
        href = _href(link.get("href"), base_url)
        if href is None:
            absolute = "" if base_url else "an absolute "
            raise _fail(what, f"links[{n}].href", f"must be {absolute}http(s) URL")
        item_links.append(href)
    if len(item_links) > MAX_ITEM_LINKS:
        raise _fail(what, "links", f"{len(item_links):,} item links, more than {MAX_ITEM_LINKS:,}")

    properties = doc.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise _fail(what, "properties", "must be an object")
    kept = _processing(properties)
    for name in DATE_FIELDS:
        if properties.get(name) is not None:
            if not _date(properties[name]):
                raise _fail(what, f"properties.{name}", "must be an RFC 3339 date and time")
            kept[name] = properties[name]

    providers = doc.get("providers")
    if providers is None:
        providers = []
    if not isinstance(providers, list) or len(providers) > MAX_PROVIDERS:
        raise _fail(what, "providers", f"must be a list of at most {MAX_PROVIDERS} objects")
    kept_providers = []
    for n, provider in enumerate(providers):
        if not isinstance(provider, dict):
            raise _fail(what, f"providers[{n}]", "a provider must be an object")
        kept_providers.append(_processing(provider))

    size = len(json.dumps([kept, *kept_providers]))
    if size > MAX_PROVENANCE_BYTES:
        raise _fail(
            what, "processing:*", f"{size:,} bytes of them, more than {MAX_PROVENANCE_BYTES:,}"
        )
    return Document(kind, doc_id, assets, item_links, kept, kept_providers)
