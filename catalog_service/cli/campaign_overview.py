"""`tilekeeper campaign overview`: bring a campaign's overview (raster/overview.py) up to
date now, or build it again from all its products, instead of waiting for the API to
take the new products in. Runs where the API keeps its overviews, with the database's
logins (like `tilekeeper db`)."""

from __future__ import annotations

import time

import psycopg
import typer
from rich.console import Console

from catalog_service.cli.errors import friendly_errors
from catalog_service.database import resolve_logins
from catalog_service.errors import TilekeeperError
from catalog_service.ids import campaign_products_id
from catalog_service.settings import DatabaseSettings, ProductSettings, RasterSettings

console = Console(stderr=True)
WAIT_S = 2.0


@friendly_errors
def overview_command(
    campaign_id: str,
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Forget the overview and build it again from every product."
    ),
) -> None:
    """Take a campaign's new products into its overview now (the low zooms of its
    mosaic); with --rebuild, build the overview again from all of them."""
    # Lazy: the raster stack (rio-tiler) costs every other command half a second to load.
    from catalog_service.raster import overview
    from catalog_service.raster.hrefs import ReadableHrefs

    database = DatabaseSettings()
    collection = campaign_products_id(campaign_id)
    folder = RasterSettings().folder(database.data_dir)
    hrefs = ReadableHrefs.of(ProductSettings())
    started = time.monotonic()
    pasted = 0
    with psycopg.connect(resolve_logins(database).writer.dsn, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pgstac.collections WHERE id = %s", [collection])
        if found.fetchone() is None:
            raise TilekeeperError(
                f"campaign {campaign_id} has no products yet ({collection} does not exist): "
                "nothing to draw"
            )
        if rebuild:
            queued = overview.rebuild(conn, collection, folder)
            console.print(f"{collection}: {queued} products queued again")
        while True:
            for progress in overview.update_all(conn, collection, hrefs, folder):
                pasted += progress.pasted
                console.print(
                    f"{collection}: {pasted} products taken in ({progress.skipped} skipped in "
                    f"the last batch), {progress.remaining} to go, "
                    f"{time.monotonic() - started:.1f} s"
                )
            if not overview.queued(conn, collection):
                break
            # An API process holds the collection's overview: it is taking them in.
            console.print(f"{collection}: another process is taking products in; waiting")
            time.sleep(WAIT_S)
        pyramid = overview.load(conn, collection, folder)
    if pyramid is None:
        console.print(f"{collection}: no overview (no product the service may read)")
        return
    console.print(
        f"{collection}: overview of zooms {pyramid.low}-{pyramid.high} in {pyramid.folder}, "
        f"{pasted} products taken in, {time.monotonic() - started:.1f} s"
    )
