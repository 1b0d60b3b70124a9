"""`tilekeeper campaign ...`: campaigns through the API (the CLI is a client like any other)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from catalog_service.cli.campaign_jobs import cancel, history, logs, pilot, retry, run
from catalog_service.cli.campaign_options import ApiOption, campaigns_at, pairs
from catalog_service.cli.campaign_overview import overview_command
from catalog_service.cli.campaign_recover import recover
from catalog_service.cli.campaign_reports import budget_line, plan, status
from catalog_service.cli.errors import friendly_errors
from catalog_service.cli.progress import progress_bar
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.errors import TilekeeperError
from catalog_service.grids import (
    FittedArea,
    TileSet,
    fit_area,
    join_attributes,
    order_tiles,
    tiles_for,
)
from catalog_service.grids.aoi import read_table
from catalog_service.grids.preview import preview_png
from catalog_service.ids import campaign_products_id
from catalog_service.settings import ProductSettings
from ingest.store import ObjectStore, open_store

console = Console()
app = typer.Typer(help="Campaigns: tiled openEO productions tracked as STAC.", no_args_is_help=True)


def _backends(values: list[str], auth: dict[str, Any]) -> list[dict[str, Any]]:
    backends = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep:
            raise typer.BadParameter(f"--backend must be name=URL[@parallel_jobs], got {value!r}")
        url, _, parallel = rest.rpartition("@") if "@" in rest else (rest, "", "")
        backend: dict[str, Any] = {"name": name, "url": url}
        if parallel:
            backend["parallel_jobs"] = int(parallel)
        if name in auth:
            backend["auth"] = auth[name]
        backends.append(backend)
    unknown = set(auth) - {b["name"] for b in backends}
    if unknown:
        raise typer.BadParameter(f"--backend-auth names unknown back-end(s): {sorted(unknown)}")
    return backends


def _register(campaigns: Campaigns, campaign_id: str, tiles: TileSet) -> int:
    with progress_bar(console, time_left=True) as progress:
        task = progress.add_task("Registering tiles", total=len(tiles))
        return campaigns.register(
            campaign_id, tile_records(tiles), progress=lambda n: progress.advance(task, n)
        )


AoiOption = typer.Option(
    ...,
    help="Vector file (anything GDAL reads), GeoJSON text, west,south,east,north, or a "
    "named area: eu27, country:BE,NL (ISO 3166-1 codes).",
)


GridOption = typer.Option(
    "utm-20km", help="utm-10km|utm-20km|utm-100km|eea-10km|eea-20km|eea-100km"
)


PictureOption = typer.Option(
    None, "--png", help="Write a picture of the tiles over the AOI's outlines here."
)


def _cut(aoi: str, grid: str) -> tuple[FittedArea, TileSet]:
    """The AOI fitted for the grid, and its tiles; says what was repaired or dropped."""
    with console.status(f"Cutting the AOI into {grid} tiles..."):
        fitted = fit_area(grid, aoi)
        tiles = tiles_for(grid, fitted.geometry)
    for line in fitted.notes(grid):
        console.print(f"[yellow]{line}[/]", soft_wrap=True)
    if not len(tiles):
        raise TilekeeperError(f"no tile of {grid} intersects the AOI")
    return fitted, tiles


def _report_cut(fitted: FittedArea, tiles: TileSet, grid: str, picture: Path | None) -> None:
    console.print(
        f"{len(tiles):,} tiles of {grid} cover the AOI of {fitted.area_km2():,.0f} km² "
        f"({fitted.parts:,} parts; {len(fitted.dropped)} dropped, {len(fitted.clipped)} clipped, "
        f"{len(fitted.repaired)} repaired)."
    )
    if picture is not None:
        picture.write_bytes(preview_png(tiles, fitted.geometry))
        console.print(f"Picture of the tiles: {picture}")


@friendly_errors
def preview(
    aoi: str = AoiOption,
    grid: str = GridOption,
    picture: Path | None = PictureOption,
) -> None:
    """How many tiles an AOI makes on a grid, over how much area, and what had to be
    repaired or dropped, before anything is stored (no service needed)."""
    fitted, tiles = _cut(aoi, grid)
    _report_cut(fitted, tiles, grid, picture)


@friendly_errors
def create(
    campaign_id: str = typer.Argument(..., help="Campaign (collection) id."),
    grid: str = GridOption,
    aoi: str = AoiOption,
    start: str = typer.Option(..., help="Start of the temporal extent (YYYY-MM-DD)."),
    end: str = typer.Option(..., help="End of the temporal extent (YYYY-MM-DD)."),
    process_id: str | None = typer.Option(None, help="Process each tile job runs (a UDP id)."),
    namespace: str | None = typer.Option(None, help="UDP namespace or URL of its definition."),
    param: list[str] = typer.Option([], help="Constant process parameter key=value (repeatable)."),
    backend: list[str] = typer.Option([], help="Back-end name=URL\\[@parallel_jobs] (repeatable)."),
    backend_auth: list[str] = typer.Option(
        [],
        help="How the runner logs in to a back-end: name=oidc|basic|none (default oidc; "
        "credentials come from the openEO client's config, never from the catalogue).",
    ),
    job_option: list[str] = typer.Option([], help="Job option key=value (repeatable)."),
    attributes: Path | None = typer.Option(None, help="CSV/Parquet table of per-tile attributes."),
    attributes_key: str = typer.Option("tile_id", help="Column of the table holding tile ids."),
    order_by: str | None = typer.Option(None, help="Attribute to process by (-name: descending)."),
    max_attempts: int = typer.Option(
        3, help="Attempts per tile before giving up; the runner retries failed tiles itself."
    ),
    escalate: list[str] = typer.Option(
        [], help="Job option key=value for retries, e.g. executor-memory=8g (repeatable)."
    ),
    title: str | None = typer.Option(None, help="Human title."),
    budget: float | None = typer.Option(
        None, help="Credits the campaign may spend; the runner starts no job beyond them."
    ),
    webhook: list[str] = typer.Option(
        [],
        help="URL told of campaign events by JSON POSTs (finished, failure rate, budget "
        "reached, back-end unreachable); repeatable. Its owners and admins see it; other "
        "readers see only its host.",
    ),
    private: bool = typer.Option(
        False, "--private", help="Only its owners (you, and --owner) and admin keys see it."
    ),
    owner: list[str] = typer.Option(
        [], help="Identity that may see a private campaign, e.g. key:alice (repeatable)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only say what would be created (see `campaign preview`)."
    ),
    picture: Path | None = PictureOption,
    api: str | None = ApiOption,
) -> None:
    """Create a campaign and register every tile of the grid that intersects the AOI.
    Invalid outlines are repaired part by part; parts the grid cannot represent are
    dropped, and named."""
    fitted, tiles = _cut(aoi, grid)
    if attributes:
        tiles = join_attributes(tiles, read_table(attributes), attributes_key)
    tiles = order_tiles(tiles, order_by)
    _report_cut(fitted, tiles, grid, picture)
    if dry_run:
        console.print("Dry run: nothing was stored.")
        return
    area = fitted.geometry
    definition: dict[str, Any] = {
        "id": campaign_id,
        "title": title,
        "grid": grid,
        "aoi": area.__geo_interface__,
        "temporal_extent": [
            date.fromisoformat(start).isoformat(),
            date.fromisoformat(end).isoformat(),
        ],
        "backends": _backends(backend, pairs(backend_auth, "--backend-auth")),
        "job_options": pairs(job_option, "--job-option"),
        "retry": {"max_attempts": max_attempts, "escalation": pairs(escalate, "--escalate")},
        "order_by": order_by,
        "budget": budget,
        "notify": {"webhooks": webhook} if webhook else None,
        "visibility": "private" if private else "public",
        "owners": owner,
    }
    if process_id:
        definition["process"] = {
            "process_id": process_id,
            "namespace": namespace,
            "parameters": pairs(param, "--param"),
        }
    campaigns = campaigns_at(api)
    campaigns.create({k: v for k, v in definition.items() if v is not None})
    new = _register(campaigns, campaign_id, tiles)
    console.print(f"[green]Campaign {campaign_id}[/]: {new} tiles registered ({grid}).")


@friendly_errors
def delete(
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    products: bool = typer.Option(
        False,
        "--products",
        help="Also delete its products: their records, and their files in the product store "
        "(TILEKEEPER_PRODUCTS_STORE; object storage with this machine's credentials).",
    ),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    api: str | None = ApiOption,
) -> None:
    """Delete a campaign with its tile jobs and their history."""
    if not yes:
        typer.confirm(f"Delete campaign {campaign_id} and all its tile jobs?", abort=True)
    campaigns = campaigns_at(api)
    campaigns.delete(campaign_id, products=products)
    console.print(f"Deleted campaign {campaign_id}.")
    store = open_store(ProductSettings())
    if products and isinstance(store, ObjectStore):  # local files: the API removed them
        removed = store.delete_folder(campaign_products_id(campaign_id))
        console.print(f"Deleted {removed} product file(s) from {store.describe()}.")


@friendly_errors
def register(
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    aoi: str = AoiOption,
    api: str | None = ApiOption,
) -> None:
    """Add the tiles of more area to a campaign (existing tiles stay as they are)."""
    campaigns = campaigns_at(api)
    definition = campaigns.definition(campaign_id)
    _, tiles = _cut(aoi, definition.grid or "utm-20km")
    new = _register(campaigns, campaign_id, tiles)
    console.print(f"{new} new tiles, {len(tiles) - new} already registered.")


@friendly_errors
def list_campaigns(api: str | None = ApiOption) -> None:
    """List campaigns."""
    table = Table("campaign", "grid", "period", "back-ends")
    for c in campaigns_at(api).all():
        period = " .. ".join(c.get("temporal_extent") or [])
        table.add_row(
            c["id"],
            c.get("grid") or "",
            period,
            ", ".join(b["name"] for b in c.get("backends", [])),
        )
    console.print(table)


@friendly_errors
def show(campaign_id: str, api: str | None = ApiOption) -> None:
    """Print a campaign's definition (JSON)."""
    console.print_json(json.dumps(campaigns_at(api).get(campaign_id)))


@friendly_errors
def set_budget(
    campaign_id: str,
    credits: float = typer.Argument(..., min=0.000001, help="Credits the campaign may spend."),
    api: str | None = ApiOption,
) -> None:
    """Set a campaign's credit budget; running workers apply it from their next round."""
    campaigns = campaigns_at(api)
    campaigns.update(campaign_id, budget=credits)
    console.print(budget_line(campaigns.summary(campaign_id)["budget"]), soft_wrap=True)


# The commands in the order `--help` lists them; reports and runs live in their own
# modules (cli/campaign_reports.py, cli/campaign_jobs.py).
app.command("preview")(preview)
app.command("create")(create)
app.command("delete")(delete)
app.command("register")(register)
app.command("list")(list_campaigns)
app.command("show")(show)
app.command("status")(status)
app.command("budget")(set_budget)
app.command("run")(run)
app.command("pilot")(pilot)
app.command("plan")(plan)
app.command("retry")(retry)
app.command("cancel")(cancel)
app.command("logs")(logs)
app.command("history")(history)
app.command("recover")(recover)
app.command("overview")(overview_command)
