"""`tilekeeper demo`: the whole chain on this machine, no account needed."""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.console import Console
from rich.progress import TextColumn

from catalog_service.auth.keys import admin_key_path
from catalog_service.cli.campaign_reports import print_status
from catalog_service.cli.database import database_down, database_up
from catalog_service.cli.progress import progress_bar
from catalog_service.client import Catalog
from catalog_service.client.campaigns import Campaigns
from catalog_service.demo.backends import load_sample
from catalog_service.ids import campaign_products_id
from catalog_service.settings import ApiSettings, DatabaseSettings

console = Console()

CAMPAIGN_ID = "demo-ndvi-2024"
SMALL_CAMPAIGN_ID = "demo-ndvi-2024-small"


def _progress_line(summary: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in summary["by_status"].items())
    return counts or "registering"


def demo(
    port: int | None = typer.Option(None, help="API port [TILEKEEPER_API_PORT, 8080]."),
    backend_ports: str = typer.Option(
        "8081,8082", help="Ports of the two local openEO back-ends (alpha,beta)."
    ),
    small: bool = typer.Option(False, "--small", help="4 tiles instead of 16 (a quicker run)."),
    min_runtime: float = typer.Option(
        3.0, help="Seconds each job lasts at least on the local back-ends (realism)."
    ),
    down: bool = typer.Option(False, "--down", help="Stop everything the demo started."),
) -> None:
    """Run the demo campaign end to end: database, API, synthetic Sentinel-2 sample, two
    local openEO back-ends, a cloud-free NDVI composite per 10 km tile (one tile fails
    once and is retried), then a summary and the URLs to open.

    The services stay up for browsing. Re-running resumes (or does nothing when all is
    done); Ctrl-C leaves a resumable campaign; `--down` stops what the demo started."""
    # Imported here, not for every command: they load the API server and the runner.
    from catalog_service.demo.scenario import (
        DEMO_AREA,
        TEST_AREA,
        campaign_definition,
        ensure_campaign,
        install_udp,
        run_with_progress,
        store_login,
    )
    from catalog_service.demo.services import DemoServices

    database = DatabaseSettings()
    api = ApiSettings()
    if port:
        api.port = port
    ports = tuple(int(p) for p in backend_ports.split(","))
    if len(ports) != 2:
        raise typer.BadParameter("two ports, comma-separated", param_hint="--backend-ports")
    services = DemoServices(database, api, (ports[0], ports[1]))

    if down:
        database_started = bool(services.state().get("database_started"))
        stopped = services.down()
        console.print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running."))
        if database_started:  # only a database the demo itself started
            database_down(database)
        return

    # The demo's back-ends are on this machine: its API (started below, with this
    # environment) and runner may reach 127.0.0.1, which the egress policy refuses by default.
    os.environ["TILEKEEPER_EGRESS_ALLOW_LOOPBACK"] = "true"
    area = TEST_AREA if small else DEMO_AREA
    campaign_id = SMALL_CAMPAIGN_ID if small else CAMPAIGN_ID
    tiles = area.tiles()
    failing = str(tiles.ids[len(tiles) // 2])

    if database_up(database).started:
        services.remember(database_started=True)
    url, started = services.up_api()
    console.print(f"API {'started' if started else 'already up'} at {url}/")
    catalog = Catalog(url)
    catalog.http.wait_ready()
    with console.status("Synthetic Sentinel-2 sample (generated once, then cached)..."):
        collection, items = load_sample(catalog, area.sample(), services.dir / "sample")
    console.print(f"Sample: {items} scenes in {collection}")
    with console.status("Local openEO back-ends..."):
        backends = services.up_backends(f"{url}/", [failing], min_runtime)
        auth_config = store_login(list(backends.values()))
        install_udp(list(backends.values()))
    for name, backend_url in backends.items():
        console.print(f"Back-end {name}: {backend_url}")
    console.print(f"Their login is in the openEO client's auth config: {auth_config}")

    campaigns = Campaigns(catalog.http)
    definition = campaign_definition(campaign_id, area, list(backends.items()))
    created, new = ensure_campaign(campaigns, definition, tiles)
    console.print(
        f"Campaign {campaign_id}: "
        + (f"created with {new} tiles" if created else f"resumed ({new} new tiles)")
        + f"; tile {failing} is set to fail once."
    )

    def run(label: str) -> None:
        with progress_bar(console, TextColumn("{task.fields[counts]}")) as progress:
            task = progress.add_task(label, total=len(tiles), counts="")

            def show(summary: dict[str, Any]) -> None:
                progress.update(task, completed=summary["done"], counts=_progress_line(summary))

            run_with_progress(url, campaigns, campaign_id, show, root_dir=services.dir / "runs")

    try:
        run("Running")  # the failed tile is retried by the runner (max_attempts 3)
    except KeyboardInterrupt:
        console.print(
            "[yellow]Interrupted.[/] The campaign is resumable: run `tilekeeper demo` again "
            "(`tilekeeper demo --down` stops the services)."
        )
        raise typer.Exit(130) from None

    print_status(campaigns, campaign_id)
    console.print(f"STAC API:        {url}/")
    console.print(f"STAC Browser:    {url}/browser/")
    console.print(f"Campaign:        {url}/campaigns/{campaign_id}")
    console.print(f"Campaign map:    {url}/campaigns/{campaign_id}/map")
    console.print(f"Summary:         {url}/campaigns/{campaign_id}/summary")
    console.print(f"Tile jobs:       {url}/collections/{campaign_id}/items")
    console.print(
        f"Counts:          {url}/collections/{campaign_id}/aggregate"
        "?aggregations=status_frequency,backend_name_frequency"
    )
    products = campaign_products_id(campaign_id)
    console.print(f"Products (COG):  {url}/collections/{products}/items")
    console.print(f"Input sample:    {url}/collections/{collection}/items")
    for name, backend_url in backends.items():
        console.print(f"Back-end {name}:  {backend_url}  (login tilekeeper / tilekeeper)")
    console.print(f"API docs:        {url}/api.html")
    key_file = admin_key_path(database)
    if key_file is not None:
        console.print(f"Admin API key:   {key_file}  (mode 0600)")
    console.print("Stop everything: tilekeeper demo --down")
