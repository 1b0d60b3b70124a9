"""`tilekeeper campaign recover`: after a restore of an older catalogue backup, the
product files the catalogue no longer knows, registered again where their tile is
finished (ingest/orphans.py, ingest/reuse.py). Lost jobs are the runner's to adopt
(catalog_service/runner/adoption.py): every `campaign run` does so before creating any
job."""

from __future__ import annotations

import collections
import json

import typer
from rich.console import Console
from rich.table import Table

from catalog_service.cli.campaign_options import ApiOption
from catalog_service.cli.errors import friendly_errors
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.ids import campaign_products_id
from catalog_service.jobs import status as job_status
from catalog_service.settings import ClientSettings, ProductSettings

console = Console()
SHOWN = 50  # files listed one by one; the rest are counted


def _why(tile_status: str | None, product_state: str | None) -> str:
    if tile_status is None:
        return "no tile of the campaign: left in place"
    if tile_status != job_status.FINISHED:
        return f"tile {tile_status}: `campaign run` adopts its lost job, then registers it"
    if product_state == "ingested":
        return "not the tile's product (an earlier result's file): left in place"
    return "not registered (see the log for why)"


@friendly_errors
def recover(
    campaign_id: str,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only list the files the catalogue does not know."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the files left as JSON."),
    api: str | None = ApiOption,
) -> None:
    """Register again the product files the catalogue lost (restored from an older backup).

    Lists the campaign's product files that no product item points to (after restoring an
    older backup of the catalogue, or a harvest killed midway) and registers those of
    finished tiles again: a file is used only when its checksum matches the back-end's
    results, and nothing is downloaded twice. Files of tiles not finished are registered
    by the next `campaign run`, which first adopts the jobs the catalogue lost. No file is
    deleted."""
    # Lazy: ingest loads the raster stack; the runner's logins load openeo.
    from catalog_service.runner.logins import login
    from ingest.harvest import Harvester
    from ingest.orphans import orphans
    from ingest.store import open_store

    http = HttpSession(api or ClientSettings().api_url)
    campaigns = Campaigns(http)
    definition = campaigns.definition(campaign_id)
    products = campaign_products_id(campaign_id)
    store = open_store(ProductSettings())
    jobs = {
        j["tile"]: j["properties"] for j in campaigns.iter_jobs(campaign_id, sorted(job_status.ALL))
    }
    found = orphans(http, store, products, set(jobs))
    console.print(f"{len(found)} file(s) of {products} in {store.describe()} with no item")
    registered: collections.Counter[str] = collections.Counter()
    if found and not dry_run:
        backends = {b.name: b for b in definition.backends}
        harvester = Harvester(http, campaign_id, store, lambda name: login(backends[name]))
        waiting = {t["tile"]: t for t in harvester.tiles(["missing", "pending", "failed"])}
        for tile in sorted({o.tile for o in found} & set(waiting)):
            harvester.submit(tile, waiting[tile]["properties"])
        registered.update(o.result for o in harvester.wait())
        harvester.close()
        console.print(
            f"registered again: {harvester.stored.reused} file(s); downloaded: "
            f"{harvester.downloads}; products: {dict(registered) or 'none'}"
        )
        jobs.update(
            {j["tile"]: j["properties"] for j in campaigns.jobs_by_tile(campaign_id, waiting)}
        )
        found = orphans(http, store, products, set(jobs))
    left = [
        {"file": o.key, "tile": o.tile,
         "why": _why(jobs.get(o.tile, {}).get("status"),
                     (jobs.get(o.tile, {}).get("tilekeeper:product") or {}).get("state"))}
        for o in found
    ]  # fmt: skip
    if as_json:
        print(json.dumps(left, indent=2))
        return
    if not left:
        console.print("Every product file has its item.")
        return
    table = Table("file", "tile", "what happens")
    for row in left[:SHOWN]:
        table.add_row(row["file"], row["tile"], row["why"])
    console.print(table)
    if len(left) > SHOWN:
        console.print(f"... and {len(left) - SHOWN} more (--json lists them all)")
