"""`tilekeeper ingest` and `tilekeeper export`: argument parsing, progress and output;
the work is done by ``ingest.engine``, ``ingest.harvest`` and ``ingest.export``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from catalog_service.cli.errors import friendly_errors
from catalog_service.cli.progress import progress_bar
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.errors import TilekeeperError
from catalog_service.ids import campaign_products_id
from catalog_service.remote_text import inert
from catalog_service.settings import ClientSettings, ProductSettings
from ingest.download import shown_url
from ingest.engine import INGEST_WORKERS, Ingester, Outcome
from ingest.errors import IngestError
from ingest.export import export_collection
from ingest.harvest import Harvester
from ingest.mosaic import DEFAULT_MAX_PIXELS
from ingest.sources import Product, from_path, from_url
from ingest.store import ProductStore, open_store

console = Console()
err_console = Console(stderr=True)


def _report(outcomes: list[Outcome], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps([o.as_dict() for o in outcomes]))
    else:
        table = Table("source", "product", "result", "version")
        for o in outcomes:
            colour = "red" if o.failed else "green"
            table.add_row(
                escape(o.source),
                escape(o.product or "-"),
                f"[{colour}]{o.result}[/]",
                str(o.version or ""),
            )
        console.print(table)
    failed = [o for o in outcomes if o.failed]
    for o in failed:
        # Errors hold remote text: escaped, so brackets in it are not taken for markup.
        err_console.print(
            f"[bold red]failed:[/] {escape(o.source)}: {escape(str(o.error))}", highlight=False
        )
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    err_console.print(
        ", ".join(f"{n} {result}" for result, n in sorted(counts.items())) or "nothing to do"
    )
    if failed:
        err_console.print(
            f"{len(failed)} input(s) failed, each for the reason above; the others are in. "
            "Fix or leave out the failed ones and run the same command again: what is "
            "already in stays unchanged.",
            highlight=False,
        )
        raise typer.Exit(1)


def _shown(source: str) -> str:
    """A source for the report: a URL without its query (signed URLs carry secrets)."""
    if source.startswith(("http://", "https://")):
        return shown_url(source)
    return source


@friendly_errors
def ingest(
    sources: list[str] = typer.Argument(
        None,
        help="GeoTIFF/COG files or folders, STAC item/collection JSON files, MBJM job folders.",
    ),
    collection: str | None = typer.Option(
        None, "--collection", help="Product collection (created when missing)."
    ),
    campaign: str | None = typer.Option(
        None,
        "--campaign",
        help="The campaign the products belong to; without SOURCES, harvest every finished "
        "tile of it not yet ingested.",
    ),
    tile: str | None = typer.Option(
        None, "--tile", help="The campaign tile the sources belong to."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and describe; write nothing."),
    workers: int = typer.Option(
        INGEST_WORKERS, "--workers", min=1, help="Products ingested at once."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outcomes as JSON."),
    api: str | None = typer.Option(None, "--api", help="tilekeeper API URL [TILEKEEPER_API_URL]."),
) -> None:
    """Ingest results as COG products with provenance: files into the product store
    [TILEKEEPER_PRODUCTS_STORE], items into the catalogue. The same input twice changes
    nothing; a changed one becomes a new version. Exits 1 when any input failed."""
    http = HttpSession(api or ClientSettings().api_url)
    store = open_store(ProductSettings())
    if not sources:
        if not campaign:
            raise TilekeeperError("give SOURCES to ingest, or --campaign to harvest a campaign")
        _harvest(http, campaign, store, as_json, dry_run)
        return
    target = collection or (campaign_products_id(campaign) if campaign else None)
    if not target:
        raise TilekeeperError("say where the products go: --collection C (or --campaign X)")
    ingester = Ingester(http, store, target, campaign=campaign, dry_run=dry_run)
    products: list[Product] = []
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="tilekeeper-ingest-") as downloads:
        for source in sources:
            try:
                if source.startswith(("http://", "https://")):
                    found = from_url(source, Path(downloads), tile=tile)
                else:
                    found = list(from_path(Path(source), tile=tile))
            except IngestError as exc:
                outcomes.append(Outcome(_shown(source), None, "failed", error=inert(exc)))
                continue
            except Exception as exc:  # one bad source fails alone; the others go on
                error = inert(f"{type(exc).__name__}: {exc}")
                outcomes.append(Outcome(_shown(source), None, "failed", error=error))
                continue
            for product in found:
                if campaign and product.tile:
                    product.job_item = f"collections/{campaign}/items/{product.tile}"
            products += found
        work = [(p, (campaign, p.tile) if campaign and p.tile else None) for p in products]
        with progress_bar(err_console) as progress:
            task = progress.add_task("ingesting", total=len(products))
            outcomes += ingester.ingest_all(work, workers, lambda _: progress.advance(task))
    _report(outcomes, as_json)


def _harvest(
    http: HttpSession, campaign: str, store: ProductStore, as_json: bool, dry_run: bool
) -> None:
    # Imported here, not for every command: importing the runner takes ~0.1 s (geopandas).
    from catalog_service.runner.logins import login

    definition = Campaigns(http).definition(campaign)
    backends = {b.name: b for b in definition.backends}
    harvester = Harvester(http, campaign, store, lambda name: login(backends[name]))
    tiles = harvester.tiles(["missing", "pending", "failed"])
    if dry_run:
        console.print(f"{len(tiles)} finished tile(s) of {campaign} to harvest")
        return
    with progress_bar(err_console) as progress:
        task = progress.add_task(f"harvesting {campaign}", total=len(tiles))
        for tile in tiles:
            harvester.submit(tile["tile"], tile["properties"])
        outcomes = harvester.wait(lambda _: progress.advance(task))
    harvester.close()
    _report(outcomes, as_json)


@friendly_errors
def export(
    collection: str = typer.Argument(
        ..., help="The collection to export (mosaic: a campaign or its product collection)."
    ),
    dest: Path = typer.Argument(
        ..., help="Folder (static) or file (geoparquet, ndjson; mosaic: the .tif)."
    ),
    format: Literal["static", "geoparquet", "ndjson", "mosaic"] = typer.Option(
        "static",
        "--format",
        help="static catalog, stac-geoparquet, newline-delimited items, or mosaic: the "
        "campaign's products as one Cloud-Optimized GeoTIFF with a STAC item of its "
        "provenance (DEST with .json).",
    ),
    with_assets: bool = typer.Option(
        False, "--with-assets", help="static: copy the asset files in (relative hrefs)."
    ),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS,
        "--max-pixels",
        min=1,
        help="mosaic: above this many pixels, no single COG: a VRT over the inputs (DEST "
        "with .vrt, inputs in DEST_inputs/) and a COG of its overview (DEST with .overview.tif).",
    ),
    asset: str | None = typer.Option(
        None, "--asset", help="mosaic: the COG asset to mosaic, when products have several."
    ),
    api: str | None = typer.Option(None, "--api", help="tilekeeper API URL [TILEKEEPER_API_URL]."),
) -> None:
    """Export a collection for dissemination: a self-contained static catalog, a
    stac-geoparquet file or an ndjson item collection; or a campaign's products as one
    mosaic COG (--format mosaic; files read through the API with your key, or from the
    local product store [TILEKEEPER_PRODUCTS_STORE] when it holds them)."""
    http = HttpSession(api or ClientSettings().api_url)
    if format == "mosaic":
        from ingest.mosaic import export_mosaic

        def say(message: str) -> None:
            err_console.print(escape(message), highlight=False)

        result = export_mosaic(
            http, collection, dest, max_pixels=max_pixels, asset=asset,
            local_store=ProductSettings().local_dir(), report=say,
        )  # fmt: skip
        what = (
            f"a VRT {result.path} and its overview COG {result.overview} (too large for one COG)"
            if result.as_vrt
            else f"the COG {result.path}"
        )
        err_console.print(
            escape(
                f"exported {result.inputs} product file(s) of {result.collection} as {what}, "
                f"STAC item {result.item_path}, in {result.seconds:.1f} s"
            ),
            highlight=False,
        )
        return
    count = export_collection(http, collection, dest, format, with_assets=with_assets)
    err_console.print(f"exported {count} item(s) of {collection} to {dest} ({format})")
