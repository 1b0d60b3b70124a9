"""tilekeeper's Python API: talks to the service over HTTP only, never to SQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import requests

from catalog_service.client.http import ApiError, HttpSession, ServiceUnreachable

__all__ = ["ApiError", "Catalog", "ServiceUnreachable"]


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Catalog:
    """A tilekeeper STAC API."""

    def __init__(self, root_url: str, auth: requests.auth.AuthBase | None = None) -> None:
        self.http = HttpSession(root_url, auth=auth)

    @property
    def root_url(self) -> str:
        return self.http.root_url

    def collection_exists(self, collection_id: str) -> bool:
        return self.http.exists(f"collections/{collection_id}")

    def upsert_collection(self, collection: dict[str, Any]) -> None:
        """Create the collection, or replace its definition if it exists."""
        if self.collection_exists(collection["id"]):
            self.http.put(f"collections/{collection['id']}", json=collection)
        else:
            self.http.post("collections", json=collection)

    def upsert_items(
        self, collection_id: str, items: Iterable[dict[str, Any]], batch_size: int = 500
    ) -> Iterator[int]:
        """Write items in all-or-nothing batches; yields the count written per batch."""
        for batch in _chunks(items, batch_size):
            result = self.http.post(
                f"collections/{collection_id}/bulk_items",
                json={"method": "upsert", "items": {item["id"]: item for item in batch}},
            )
            yield int(result["success"])

    def aggregate(
        self,
        aggregations: list[str],
        collection_id: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Aggregations by name: exact counts computed by the service."""
        body: dict[str, Any] = {"aggregations": aggregations}
        if filter is not None:
            body["filter"] = filter
            body["filter-lang"] = "cql2-json"
        path = f"collections/{collection_id}/aggregate" if collection_id else "aggregate"
        result = self.http.post(path, json=body)
        return {agg["name"]: agg for agg in result["aggregations"]}

    def count_by(
        self, prop: str, collection_id: str | None = None, filter: dict[str, Any] | None = None
    ) -> dict[str, int]:
        """Counts per value of a registered string property (e.g. ``status``)."""
        name = f"{prop}_frequency"
        agg = self.aggregate([name], collection_id, filter)[name]
        return {bucket["key"]: int(bucket["frequency"]) for bucket in agg.get("buckets", [])}
