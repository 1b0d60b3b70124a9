"""Whether a back-end can run a campaign's process, checked before it gets any tile.

A federated platform can use the collections of one back-end per job: a back-end that
lacks the process (or UDP) or an input collection would fail every tile given to it.
The input collections are the ``load_collection`` ids of the process graph, read from the
back-end's UDP, or from the UDP document a URL namespace names (fetched through the
egress policy: a namespace it refuses is not read, and the process is not checked)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from openeo.rest import OpenEoApiError
from openeo.rest.connection import Connection

from catalog_service.jobs.campaign import ProcessSpec
from catalog_service.runner.namespaces import NamespaceUnreadable, read_namespace

logger = logging.getLogger(__name__)

# Tile properties that pin a tile to some back-ends or keep it off others (a list of
# back-end names, or a comma-separated string as a CSV attribute gives it).
ONLY_BACKENDS = "only_backends"
EXCLUDE_BACKENDS = "exclude_backends"


def loaded_collections(graph: Any, parameters: dict[str, Any] | None = None) -> set[str]:
    """The collection ids a process graph loads, callbacks included; an id given by a
    parameter is looked up in ``parameters`` (the campaign's values, then defaults)."""
    found: set[str] = set()

    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if node.get("process_id") == "load_collection":
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for node in walk(graph):
        collection = (node.get("arguments") or {}).get("id")
        if isinstance(collection, dict) and "from_parameter" in collection:
            collection = (parameters or {}).get(collection["from_parameter"])
        if isinstance(collection, str):
            found.add(collection)
    return found


def _defaults(document: dict[str, Any], process: ProcessSpec) -> dict[str, Any]:
    """The process's parameter values: the campaign's, else the declared defaults."""
    values = {
        p["name"]: p["default"]
        for p in document.get("parameters") or []
        if isinstance(p, dict) and "name" in p and "default" in p
    }
    return {**values, **process.parameters}


def _process(
    connection: Connection, process: ProcessSpec
) -> tuple[dict[str, Any] | None, str | None]:
    """(process document or None when unknown, reason the back-end cannot run it)."""
    namespace = process.namespace
    if namespace and namespace.startswith(("http://", "https://")):
        try:
            return read_namespace(namespace), None
        except NamespaceUnreadable as exc:
            logger.warning("not checking the process: %s", exc)
            return None, None
    if namespace:
        return None, None  # a back-end namespace: the back-end resolves it, unchecked here
    try:
        return connection.user_defined_process(process.process_id).describe(), None
    except OpenEoApiError as exc:
        if exc.http_status_code not in (400, 404):
            raise
    predefined = {p.get("id") for p in connection.list_processes()}
    if process.process_id in predefined:
        return None, None
    return None, f"it has no process or UDP {process.process_id!r}"


def unfit_reason(connection: Connection, process: ProcessSpec) -> str | None:
    """Why the back-end cannot run ``process``, or None when it can (or it cannot be told)."""
    document, reason = _process(connection, process)
    if reason:
        return reason
    if document is None:
        return None
    needed = loaded_collections(document.get("process_graph"), _defaults(document, process))
    if not needed:
        return None
    missing = sorted(needed - set(connection.list_collection_ids()))
    if missing:
        return f"it lacks the input collection(s) {', '.join(missing)}"
    return None


def _names(value: Any) -> set[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return {v.strip() for v in value.replace(";", ",").split(",") if v.strip()}
    if isinstance(value, list):
        return {str(v) for v in value}
    return None


def allowed_backends(properties: dict[str, Any], backends: list[str]) -> list[str]:
    """The back-ends a tile may run on, in the campaign's order."""
    only = _names(properties.get(ONLY_BACKENDS))
    excluded = _names(properties.get(EXCLUDE_BACKENDS)) or set()
    return [b for b in backends if (only is None or b in only) and b not in excluded]
