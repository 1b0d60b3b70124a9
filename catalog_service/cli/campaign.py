"""`tilekeeper campaign ...`: campaigns through the API (the CLI is a client like any other)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from catalog_service.cli.errors import friendly_errors
from catalog_service.cli.progress import progress_bar
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
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
from catalog_service.jobs import status as job_status
from catalog_service.jobs.campaign import JOB_ID_KEY
from catalog_service.planning.pilot import choose_pilot
from catalog_service.planning.pilot import plan as make_plan
from catalog_service.products import campaign_products_id
from catalog_service.settings import ClientSettings, ProductSettings
from ingest.store import ObjectStore, open_store

console = Console()
app = typer.Typer(help="Campaigns: tiled openEO productions tracked as STAC.", no_args_is_help=True)

ApiOption = typer.Option(None, "--api", help="tilekeeper API URL [TILEKEEPER_API_URL].")


def _campaigns(api: str | None) -> Campaigns:
    return Campaigns(HttpSession(api or ClientSettings().api_url))


def _pairs(values: list[str], what: str) -> dict[str, Any]:
    """key=value options; values are JSON when they parse as JSON, else strings."""
    out: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must look like key=value, got {value!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


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


@app.command("preview")
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


@app.command("create")
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
        "backends": _backends(backend, _pairs(backend_auth, "--backend-auth")),
        "job_options": _pairs(job_option, "--job-option"),
        "retry": {"max_attempts": max_attempts, "escalation": _pairs(escalate, "--escalate")},
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
            "parameters": _pairs(param, "--param"),
        }
    campaigns = _campaigns(api)
    campaigns.create({k: v for k, v in definition.items() if v is not None})
    new = _register(campaigns, campaign_id, tiles)
    console.print(f"[green]Campaign {campaign_id}[/]: {new} tiles registered ({grid}).")


@app.command("delete")
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
    campaigns = _campaigns(api)
    campaigns.delete(campaign_id, products=products)
    console.print(f"Deleted campaign {campaign_id}.")
    store = open_store(ProductSettings())
    if products and isinstance(store, ObjectStore):  # local files: the API removed them
        removed = store.delete_folder(campaign_products_id(campaign_id))
        console.print(f"Deleted {removed} product file(s) from {store.describe()}.")


@app.command("register")
@friendly_errors
def register(
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    aoi: str = AoiOption,
    api: str | None = ApiOption,
) -> None:
    """Add the tiles of more area to a campaign (existing tiles stay as they are)."""
    campaigns = _campaigns(api)
    definition = campaigns.definition(campaign_id)
    _, tiles = _cut(aoi, definition.grid or "utm-20km")
    new = _register(campaigns, campaign_id, tiles)
    console.print(f"{new} new tiles, {len(tiles) - new} already registered.")


@app.command("list")
@friendly_errors
def list_campaigns(api: str | None = ApiOption) -> None:
    """List campaigns."""
    table = Table("campaign", "grid", "period", "back-ends")
    for c in _campaigns(api).all():
        period = " .. ".join(c.get("temporal_extent") or [])
        table.add_row(
            c["id"],
            c.get("grid") or "",
            period,
            ", ".join(b["name"] for b in c.get("backends", [])),
        )
    console.print(table)


@app.command("show")
@friendly_errors
def show(campaign_id: str, api: str | None = ApiOption) -> None:
    """Print a campaign's definition (JSON)."""
    console.print_json(json.dumps(_campaigns(api).get(campaign_id)))


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@app.command("status")
@friendly_errors
def status(
    campaign_id: str,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    api: str | None = ApiOption,
) -> None:
    """Counts per status and back-end, runtime, cost, throughput, ETA and projected cost."""
    campaigns = _campaigns(api)
    if as_json:
        console.print_json(json.dumps(campaigns.summary(campaign_id)))
        return
    print_status(campaigns, campaign_id)


def print_status(campaigns: Campaigns, campaign_id: str) -> None:
    """What `campaign status` prints: counts per status and back-end, runtime, cost,
    throughput, ETA and projected cost, the live workers, and the products not harvested."""
    summary = campaigns.summary(campaign_id)
    backends = sorted(summary["by_backend"])
    table = Table("status", "tiles", *backends, title=f"{campaign_id}: {summary['tiles']} tiles")
    for name, count in summary["by_status"].items():
        table.add_row(
            name, str(count), *(str(summary["by_backend"][b].get(name, "")) for b in backends)
        )
    console.print(table)
    finished = summary["finished"]
    console.print(
        f"progress {summary['done']}/{summary['tiles']}"
        f" | mean runtime {_duration(finished['mean_runtime_s'])}"
        f" | mean cost {_money(finished['mean_costs'])}"
        f" | throughput {_money(summary['throughput_per_hour'])}/h"
        f" | ETA {_duration(summary['eta_s'])} (by parallelism {_duration(summary['eta_by_parallelism_s'])})"
        f" | projected cost {_money(summary['projected_costs'])}"
    )
    console.print(_budget_line(summary["budget"]), soft_wrap=True)
    workers = summary.get("workers") or []
    if workers:
        table = Table("worker", "host", "pid", "since", "last seen", title="live runner workers")
        for w in workers:
            info = w.get("info") or {}
            table.add_row(
                w["worker"],
                str(info.get("host", "")),
                str(info.get("pid", "")),
                w["started"],
                w["seen"],
            )
        console.print(table)
    else:
        console.print("no runner worker is live")
    _harvest_status(campaigns.http, campaign_id)


def _budget_line(figures: dict[str, Any]) -> str:
    if figures["credits"] is None:
        return f"credits spent {_money(figures['spent'])} (no budget)"
    line = (
        f"budget {_money(figures['credits'])}: spent {_money(figures['spent'])}, "
        f"committed with {figures['active_jobs']} active job(s) {_money(figures['committed'])}"
    )
    if figures["reached"]:
        line += " [red]- reached: no new job starts[/]"
    return line


@app.command("budget")
@friendly_errors
def set_budget(
    campaign_id: str,
    credits: float = typer.Argument(..., min=0.000001, help="Credits the campaign may spend."),
    api: str | None = ApiOption,
) -> None:
    """Set a campaign's credit budget; running workers apply it from their next round."""
    campaigns = _campaigns(api)
    campaigns.update(campaign_id, budget=credits)
    console.print(_budget_line(campaigns.summary(campaign_id)["budget"]), soft_wrap=True)


def _harvest_status(http: HttpSession, campaign_id: str) -> None:
    """Finished tiles whose product is not in the catalogue yet, and why."""
    waiting = http.get(
        f"campaigns/{campaign_id}/harvest",
        params={"state": ["missing", "pending", "failed"], "limit": 10_000},
    )["tiles"]
    failed = [
        t
        for t in waiting
        if (t["properties"].get("tilekeeper:product") or {}).get("state") == "failed"
    ]
    if not waiting:
        console.print("products: every finished tile is harvested")
        return
    console.print(
        f"products: {len(waiting)} finished tile(s) not harvested yet, {len(failed)} failed "
        f"(retried by the next run, or `tilekeeper ingest --campaign {campaign_id}`)"
    )
    for tile in failed[:20]:
        console.print(f"  {tile['tile']}: {tile['properties']['tilekeeper:product'].get('error')}")


@app.command("run")
@friendly_errors
def run(
    campaign_id: str,
    poll_sleep: float = typer.Option(60, help="Seconds between rounds of polling the back-ends."),
    worker: str | None = typer.Option(
        None,
        help="This worker's id, unique among the campaign's workers (default host-pid). "
        "Reusing a dead worker's id takes its tiles over at once.",
    ),
    lease: float | None = typer.Option(
        None, help="Seconds a dead worker's tiles stay held (default max(60, 4 x poll-sleep))."
    ),
    log_file: Path | None = typer.Option(None, help="Also write the log to this file."),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR."),
    api: str | None = ApiOption,
) -> None:
    """Run the campaign until no tile waits or runs: one worker; start more (here or on
    other machines) to share the campaign. Logs in to each back-end as the campaign says
    (openEO client auth config / refresh tokens / OPENEO_AUTH_* variables). Kill it at any
    moment and run it again: it resumes without creating a job twice."""
    from catalog_service.campaign_run import run_campaign
    from catalog_service.logs import configure_logging

    configure_logging(log_level, log_file)
    url = api or ClientSettings().api_url
    console.print(
        f"Running {campaign_id}; follow it with `tilekeeper campaign status {campaign_id}`."
    )
    report = run_campaign(url, campaign_id, poll_sleep=poll_sleep, worker=worker, lease_s=lease)
    console.print(f"Done: {report.counts}")
    if report.stopped_by_budget:
        console.print(
            f"[red]Stopped at the budget[/]: tiles are left not started. Raise it with "
            f"`tilekeeper campaign budget {campaign_id} CREDITS` and run again."
        )
    print_status(_campaigns(url), campaign_id)


@app.command("pilot")
@friendly_errors
def pilot(
    campaign_id: str,
    tiles: int = typer.Option(8, "--tiles", min=1, help="How many tiles the pilot runs."),
    by: str | None = typer.Option(
        None, help="Also spread the sample over this tile attribute (e.g. a crop-mask share)."
    ),
    poll_sleep: float = typer.Option(60, help="Seconds between rounds of polling the back-ends."),
    log_file: Path | None = typer.Option(None, help="Also write the log to this file."),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR."),
    api: str | None = ApiOption,
) -> None:
    """Run a pilot: a sample of tiles spread over the area (and over --by), before the
    whole campaign; then print the plan it gives. Run again to resume an interrupted
    pilot, or, once it is done, to run a new sample."""
    from catalog_service.campaign_run import run_campaign
    from catalog_service.logs import configure_logging

    configure_logging(log_level, log_file)
    url = api or ClientSettings().api_url
    campaigns = _campaigns(url)
    chosen = choose_pilot(campaigns, campaign_id, tiles, by)
    console.print(f"Pilot of {len(chosen)} tiles: {', '.join(chosen)}")
    report = run_campaign(url, campaign_id, poll_sleep=poll_sleep, only_tiles=chosen)
    console.print(f"Pilot done: {report.counts}")
    print_plan(campaigns, campaign_id, parallel=None)


def _interval(value: dict[str, float] | None, show: Any) -> str:
    if value is None:
        return "-"
    return f"{show(value['mean'])} (90%: {show(value['low'])} - {show(value['high'])})"


@app.command("plan")
@friendly_errors
def plan(
    campaign_id: str,
    parallel: int | None = typer.Option(
        None, min=1, help="Jobs at once over all back-ends (default: the campaign's slots)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    api: str | None = ApiOption,
) -> None:
    """Project the campaign's duration and credits from its pilot (or finished tiles),
    with a 90% interval; say which job options ran and how much memory headroom the jobs
    had where the back-end reports their peak memory."""
    campaigns = _campaigns(api)
    if as_json:
        console.print_json(json.dumps(make_plan(campaigns, campaign_id, parallel).to_dict()))
        return
    print_plan(campaigns, campaign_id, parallel)


def print_plan(campaigns: Campaigns, campaign_id: str, parallel: int | None) -> None:
    """What `campaign plan` prints: the projected duration and credits with their 90%
    intervals, the job options that ran and the jobs' memory headroom."""
    figures = make_plan(campaigns, campaign_id, parallel).to_dict()
    table = Table("", "per tile", "whole campaign", "tiles left", title=(
        f"{campaign_id}: plan from {figures['sample']} {figures['source']} tile(s), "
        f"{figures['parallel']} jobs at once"
    ))  # fmt: skip
    table.add_row(
        "duration",
        _interval(figures["runtime_s"], _duration),
        _interval(figures["duration_s"], _duration),
        _interval(figures["duration_left_s"], _duration),
    )
    table.add_row(
        "credits",
        _interval(figures["costs"], _money),
        _interval(figures["credits"], _money),
        _interval(figures["credits_left"], _money),
    )
    console.print(table)
    console.print(
        f"{figures['tiles']:,} tiles, {figures['tiles_left']:,} left; "
        f"{figures['attempts_per_tile']:.2f} attempts per tile; runtime from "
        f"{figures['runtime_from'] or '-'}; mean wait in the back-ends' queues "
        f"{_duration(figures['queue_s'])}"
    )
    console.print(f"job options: {json.dumps(figures['job_options'])}")
    memory = figures["memory"]
    if memory["peak_gb"] is None:
        console.print("memory: the back-ends report no peak memory")
    else:
        line = f"memory: peak {memory['peak_gb']:.2f} GiB"
        if memory["requested_gb"]:
            line += (
                f" of {memory['requested_gb']:.2f} GiB asked ({memory['headroom']:.0%} headroom)"
            )
        console.print(line)


def _tiles(value: str | None) -> list[str] | None:
    return [t for t in value.split(",") if t] if value else None


@app.command("retry")
@friendly_errors
def retry(
    campaign_id: str,
    status_: str = typer.Option(
        ",".join(sorted(job_status.FAILED)), "--status", help="Statuses to retry."
    ),
    tiles: str | None = typer.Option(None, help="Only these tiles (comma-separated)."),
    escalate: list[str] = typer.Option(
        [], help="Job option key=value for the retries (repeatable)."
    ),
    api: str | None = ApiOption,
) -> None:
    """Reset failed tiles to not_started (optionally with more resources); `run` picks them up."""
    campaigns = _campaigns(api)
    options = _pairs(escalate, "--escalate")
    if not options:
        options = campaigns.definition(campaign_id).retry.escalation
    props = {"job_options": options} if options else {}
    count = campaigns.reset(
        campaign_id,
        [s for s in status_.split(",") if s],
        props,
        actor="tilekeeper-cli",
        tiles=_tiles(tiles),
    )
    console.print(
        f"{count} tiles reset to not_started"
        + (f" with job options {options}" if options else "")
        + "."
    )


@app.command("cancel")
@friendly_errors
def cancel(
    campaign_id: str,
    tiles: str | None = typer.Option(None, help="Only these tiles (comma-separated)."),
    api: str | None = ApiOption,
) -> None:
    """Stop active jobs on their back-ends and cancel waiting tiles. A tile is marked
    canceled only when its job stopped (or never reached a back-end); the others are
    listed and the command exits 1."""
    from catalog_service.runner import cancel_tiles

    report = cancel_tiles(_campaigns(api), campaign_id, _tiles(tiles))
    console.print(
        f"{len(report.canceled)} tiles canceled; {len(report.stopped)} jobs stopped on their back-ends."
    )
    if report.not_canceled:
        table = Table("tile", "not canceled because", title="not canceled")
        for tile, reason in sorted(report.not_canceled.items()):
            table.add_row(tile, reason)
        console.print(table)
        raise typer.Exit(1)


@app.command("logs")
@friendly_errors
def logs(
    campaign_id: str,
    tile_id: str,
    level: str = typer.Option("info", help="Lowest log level: debug, info, warning, error."),
    api: str | None = ApiOption,
) -> None:
    """The back-end's logs of a tile's current job."""
    from catalog_service.runner.logins import login

    campaigns = _campaigns(api)
    definition = campaigns.definition(campaign_id)
    jobs = campaigns.jobs_by_tile(campaign_id, [tile_id])
    if not jobs:
        raise TilekeeperError(f"campaign {campaign_id} has no tile {tile_id}")
    props = jobs[0]["properties"]
    backends = {b.name: b for b in definition.backends}
    if not props.get(JOB_ID_KEY) or props.get("backend_name") not in backends:
        raise TilekeeperError(
            f"tile {tile_id} has no job on a back-end (it is {props.get('status')}); "
            f"see `tilekeeper campaign history {campaign_id} {tile_id}`"
        )
    connection = login(backends[props["backend_name"]])
    entries = connection.job(props[JOB_ID_KEY]).logs(level=level)
    table = Table(
        "time",
        "level",
        "message",
        title=f"{tile_id}: job {props[JOB_ID_KEY]} on {props['backend_name']}",
    )
    for entry in entries:
        table.add_row(
            str(entry.get("time", "")), str(entry.get("level", "")), str(entry.get("message", ""))
        )
    console.print(table)


@app.command("history")
@friendly_errors
def history(campaign_id: str, tile_id: str, api: str | None = ApiOption) -> None:
    """A tile's status history."""
    table = Table("when", "from", "to", "by", "details")
    for h in _campaigns(api).history(campaign_id, tile_id):
        table.add_row(h["at"], h["from"] or "", h["to"], h["by"], json.dumps(h["details"]))
    console.print(table)
