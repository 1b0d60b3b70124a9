"""Campaigns for tests, made over HTTP as a user makes them: created with defaults a test
overrides, tiles from a grid over an AOI or given whole, registered and checked."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from catalog_service.client.campaigns import tile_records
from catalog_service.grids import load_aoi, tiles_for

# A small AOI near Brussels: a few dozen utm-20km tiles.
AOI = "4.0,50.5,4.8,51.0"


def create_campaign(http: httpx.Client, prefix: str = "camp", **fields: Any) -> str:
    """A new campaign (utm-20km, 2024) with ``fields`` over the defaults; its id."""
    campaign = f"{prefix}-{uuid.uuid4().hex[:8]}"
    body = {"id": campaign, "grid": "utm-20km", "temporal_extent": ["2024-01-01", "2024-12-31"]}
    answer = http.post("/campaigns", json={**body, **fields})
    assert answer.status_code == 201, answer.text
    return campaign


def grid_tiles(aoi: str = AOI, grid: str = "utm-20km") -> list[dict[str, Any]]:
    """The tiles of ``grid`` over ``aoi`` as a registration sends them."""
    return list(tile_records(tiles_for(grid, load_aoi(aoi))))


def register_tiles(
    http: httpx.Client, campaign: str, tiles: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Registers ``tiles`` (all new) and returns them."""
    answer = http.post(f"/campaigns/{campaign}/tiles", json={"tiles": tiles})
    assert answer.status_code == 200, answer.text
    assert answer.json()["registered"] == len(tiles), answer.text
    return tiles
