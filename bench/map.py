"""The campaign map at scale, in headless Chromium (Debian's, driven by playwright).

Registers a campaign of N utm-10km tiles (default 100,000) on a throwaway cluster with
the API as its own process, then measures:

- first paint: from navigation to the first complete render with tiles drawn (zoomed out
  to the whole campaign, they come as cells: vector tiles of squares a few pixels wide,
  one per cell in its most frequent status; footprints from the zoom where a tile is a
  few pixels wide);
- the cells against the footprints: the cell tiles the map loaded zoomed out (below
  that zoom), and the footprint vector tiles of the same z/x/y, each fetched again in
  the same run, one after the other (time and size);
- an incremental update: 100 tiles change status; from the poll that fetches them to the
  re-rendered map (the poll interval itself not counted);
- the anchor: fetching the same tiles as GeoJSON from /collections/{id}/items (what a
  map without vector tiles would load), in the same run.

    .venv/bin/python bench/map.py [--tiles 100000]
"""

from __future__ import annotations

import argparse
import shutil
import time
import uuid
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright
from rich.console import Console
from rich.table import Table
from throwaway import throwaway_stack

from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.grids import load_aoi, tiles_for

console = Console()
AREA = "-10,35,45,71"  # utm-10km: 145,800 tiles; the first N are taken


def geojson_seconds(http: HttpSession, campaign: str, n: int) -> float:
    start = time.perf_counter()
    got = 0
    page = http.get(f"collections/{campaign}/items", params={"limit": 10_000})
    while True:
        got += len(page["features"])
        nxt = next((lk["href"] for lk in page["links"] if lk["rel"] == "next"), None)
        if not nxt or got >= n:
            break
        page = http.session.get(nxt, timeout=120).json()
    return time.perf_counter() - start


def fetch_seconds(session: requests.Session, url: str, rounds: int = 3) -> tuple[float, int]:
    """The best of a few fetches of one tile (seconds), and its size."""
    best, size = float("inf"), 0
    for _ in range(rounds):
        start = time.perf_counter()
        response = session.get(url, timeout=120)
        best = min(best, time.perf_counter() - start)
        response.raise_for_status()
        size = len(response.content)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--no-anchor", action="store_true", help="skip the (slow) GeoJSON anchor")
    parser.add_argument("--screenshot", type=Path, help="save the first view as this PNG")
    args = parser.parse_args()
    with throwaway_stack() as stack:
        server_url = stack.url
        http = HttpSession(server_url)
        campaigns = Campaigns(http)
        campaign = f"map-{uuid.uuid4().hex[:6]}"
        campaigns.create({"id": campaign, "grid": "utm-10km", "temporal_extent": ["2024-01-01", "2024-12-31"]})  # fmt: skip
        tiles = tiles_for("utm-10km", load_aoi(AREA)).take(slice(0, args.tiles))  # type: ignore[arg-type]
        with console.status(f"registering {len(tiles):,} tiles"):
            campaigns.register(campaign, tile_records(tiles))
        ids = [str(t) for t in tiles.ids]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server_url}/campaigns/{campaign}/map")
            page.wait_for_function("() => window.tilekeeperMap && window.tilekeeperMap.firstPaintMs !== null", timeout=120_000)  # fmt: skip
            first_paint = page.evaluate("window.tilekeeperMap.firstPaintMs") / 1000
            if args.screenshot:
                page.screenshot(path=str(args.screenshot))
            drawn = page.evaluate("window.tilekeeperMap.seen.size")
            cell_tiles = page.evaluate("window.tilekeeperMap.cellTilesLoaded")
            zoom = page.evaluate("window.tilekeeperMap.map.getView().getZoom()")
            vector_min_zoom = page.evaluate("window.tilekeeperMap.vectorMinZoom")
            fetches = page.evaluate(
                "performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('.pbf'))"
                ".map(e => [e.name.split('/campaigns/')[1], e.duration, e.transferSize])"
            )
            if not cell_tiles:  # a first view with footprints: zoom out to the cells
                page.evaluate(
                    "z => window.tilekeeperMap.map.getView().setZoom(z)", vector_min_zoom - 1
                )
                page.wait_for_function("() => window.tilekeeperMap.cellTilesLoaded > 0", timeout=120_000)  # fmt: skip
            cell_paths = page.evaluate(
                "performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('/cells/'))"
                ".map(e => e.name.split('/cells/')[1].split('?')[0])"
            )
            changes = [
                {"tile": t, "status": "running", "set": {"backend_name": "alpha"}}
                for t in ids[:100]
            ]
            campaigns.change(campaign, changes)
            page.wait_for_function(
                f"() => window.tilekeeperMap.colorOf({ids[99]!r}) === 'navy' && window.tilekeeperMap.lastUpdateMs !== null",
                timeout=30_000,
            )  # fmt: skip
            update = page.evaluate("window.tilekeeperMap.lastUpdateMs") / 1000
            browser.close()
        # The same z/x/y as cells and as footprints, fetched here one after the other.
        session = requests.Session()
        totals = {"cells": [0.0, 0], "tiles": [0.0, 0]}  # seconds, bytes
        for path in sorted(set(cell_paths)):
            for kind, total in totals.items():
                seconds, size = fetch_seconds(session, f"{server_url}/campaigns/{campaign}/{kind}/{path}")  # fmt: skip
                total[0] += seconds
                total[1] += size
        cells, footprints = totals["cells"], totals["tiles"]
        geojson = float("nan") if args.no_anchor else geojson_seconds(http, campaign, len(ids))
        for name, ms, size in fetches:
            console.print(f"  {name}: {ms:.0f} ms, {size / 1e3:.0f} kB")
        shown = (
            f"{drawn:,} vector footprints"
            if drawn
            else f"{cell_tiles} cell tiles at zoom {zoom:.1f}; footprints from {vector_min_zoom}"
        )
        table = Table(title=f"Campaign map, {len(ids):,} tiles ({shown} at first view)")
        table.add_column("")
        table.add_column("seconds", justify="right")
        table.add_column("target", justify="right")
        table.add_row("first paint", f"{first_paint:.2f}", "< 2")
        table.add_row("incremental update (100 tiles)", f"{update:.3f}", "< 0.2")
        table.add_row(
            f"{len(set(cell_paths))} cell tiles ({cells[1] / 1e3:.0f} kB)", f"{cells[0]:.3f}", ""
        )
        table.add_row(
            f"the same z/x/y as footprint tiles ({footprints[1] / 1e3:.0f} kB)",
            f"{footprints[0]:.3f}",
            "",
        )
        table.add_row("anchor: the same tiles as GeoJSON items", f"{geojson:.2f}", "")
        console.print(table)
        console.print(
            f"cells = {cells[0] / footprints[0]:.0%} of the footprint tiles' time, "
            f"{cells[1] / max(footprints[1], 1):.0%} of their bytes"
        )
        console.print(f"first paint = {first_paint / geojson:.0%} of loading the tiles as GeoJSON")


if __name__ == "__main__":
    main()
