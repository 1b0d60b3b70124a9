"""Offline STAC validation: the core schema and every declared extension, resolved from
the schemas shipped in ``ingest/schemas`` (a URL-mirroring layout), never the network."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from catalog_service.errors import TilekeeperError

SCHEMAS = Path(__file__).parent / "schemas"
CORE = {
    "Feature": "https://schemas.stacspec.org/v{version}/item-spec/json-schema/item.json",
    "Collection": "https://schemas.stacspec.org/v{version}/collection-spec/json-schema/collection.json",
}


class InvalidStac(TilekeeperError):
    """A STAC object its own schemas refuse."""


def _path(url: str) -> Path:
    for prefix in ("https://", "http://"):
        if url.startswith(prefix):
            return SCHEMAS / url.removeprefix(prefix).split("#")[0]
    raise NoSuchResource(url)


def _retrieve(url: str) -> Resource[Any]:
    path = _path(url)
    if not path.is_file():
        raise NoSuchResource(url)
    return Resource.from_contents(json.loads(path.read_text()))


@cache
def _registry() -> Registry[Any]:
    """Every shipped schema, loaded and crawled once: a registry that had to retrieve and
    crawl them on each validation spent ~50 ms per item doing it."""
    resources = [
        (
            f"https://{path.relative_to(SCHEMAS).as_posix()}",
            Resource.from_contents(json.loads(path.read_text())),
        )
        for path in SCHEMAS.rglob("*.json")
    ]
    registry: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]
    return registry.with_resources(resources).crawl()


@cache
def _validator(url: str) -> Draft7Validator:
    path = _path(url)
    if not path.is_file():
        raise InvalidStac(f"schema {url} is not available offline (not in {SCHEMAS})")
    return Draft7Validator(json.loads(path.read_text()), registry=_registry())


def schema_urls(obj: dict[str, Any]) -> list[str]:
    kind = obj.get("type")
    if kind not in CORE:
        raise InvalidStac(f"not a STAC item or collection (type {kind!r})")
    return [CORE[kind].format(version=obj.get("stac_version", "")), *obj.get("stac_extensions", [])]


def _name(url: str) -> str:
    host, *parts = url.removeprefix("https://").split("/")
    return "core" if host == "schemas.stacspec.org" else f"{parts[0]} {parts[1]}"


def _shipped_or_open(uri: str) -> Any:
    """The Rust validator resolves every reference up front, also those only optional
    fields use (PROJJSON for `proj:projjson`, not shipped): those accept anything."""
    path = _path(uri)
    return json.loads(path.read_text()) if path.is_file() else {}


@cache
def _fast(url: str) -> jsonschema_rs.Validator:
    _validator(url)  # the same refusal of a schema that is not shipped
    return jsonschema_rs.validator_for(
        _shipped_or_open(url), retriever=_shipped_or_open, base_uri=url
    )


# Links whose hrefs are URI templates by their extension's definition (web-map-links:
# `{z}/{x}/{y}`): validated as the URIs they expand to, since the core schema's
# iri-reference format has no braces.
TEMPLATED_RELS = frozenset({"xyz", "wmts", "wms", "tilejson"})


def _expanded(obj: dict[str, Any]) -> dict[str, Any]:
    links = obj.get("links")
    if not isinstance(links, list) or not any(
        isinstance(link, dict) and link.get("rel") in TEMPLATED_RELS for link in links
    ):
        return obj
    expanded = [
        {**link, "href": str(link.get("href")).replace("{", "%7B").replace("}", "%7D")}
        if isinstance(link, dict) and link.get("rel") in TEMPLATED_RELS
        else link
        for link in links
    ]
    return {**obj, "links": expanded}


def validate(obj: dict[str, Any]) -> None:
    """Raise InvalidStac naming the first problem per schema; return when all pass.

    jsonschema-rs decides (~0.05 ms an item); only an invalid object goes through the
    Python validator (~25 ms), whose errors say best where the problem is."""
    urls = schema_urls(obj)
    obj = _expanded(obj)
    if all(_fast(url).is_valid(obj) for url in urls):
        return
    problems = []
    for url in urls:
        error = best_match(_validator(url).iter_errors(obj))
        while error is not None and error.context:  # into oneOf/anyOf: the deepest cause
            error = max(error.context, key=lambda e: len(e.absolute_path))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            problems.append(f"{_name(url)}: {where}: {error.message[:300]}")
    if not problems:  # the validators disagree: say what the fast one found
        problems = [
            f"{_name(url)}: {error.message[:300]}"
            for url in urls
            for error in list(_fast(url).iter_errors(obj))[:1]
        ]
    if problems:
        raise InvalidStac(
            f"{obj.get('type')} {obj.get('id')!r} is not valid STAC: " + "; ".join(problems)
        )
