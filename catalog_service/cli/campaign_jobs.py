"""Running a campaign's jobs: run, pilot, retry, cancel, logs and history."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from catalog_service.cli.campaign_options import ApiOption, campaigns_at, pairs
from catalog_service.cli.campaign_reports import print_plan, print_status
from catalog_service.cli.errors import friendly_errors
from catalog_service.errors import TilekeeperError
from catalog_service.jobs import status as job_status
from catalog_service.jobs.campaign import JOB_ID_KEY
from catalog_service.planning.pilot import choose_pilot
from catalog_service.settings import ClientSettings

console = Console()


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
    # Lazy: the runner loads openeo, pandas and the raster stack; every other command of
    # `tilekeeper` starts without them.
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
    print_status(campaigns_at(url), campaign_id)


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
    # Lazy: the runner loads openeo, pandas and the raster stack; every other command of
    # `tilekeeper` starts without them.
    from catalog_service.campaign_run import run_campaign
    from catalog_service.logs import configure_logging

    configure_logging(log_level, log_file)
    url = api or ClientSettings().api_url
    campaigns = campaigns_at(url)
    chosen = choose_pilot(campaigns, campaign_id, tiles, by)
    console.print(f"Pilot of {len(chosen)} tiles: {', '.join(chosen)}")
    report = run_campaign(url, campaign_id, poll_sleep=poll_sleep, only_tiles=chosen)
    console.print(f"Pilot done: {report.counts}")
    print_plan(campaigns, campaign_id, parallel=None)


def _tiles(value: str | None) -> list[str] | None:
    return [t for t in value.split(",") if t] if value else None


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
    campaigns = campaigns_at(api)
    options = pairs(escalate, "--escalate")
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


@friendly_errors
def cancel(
    campaign_id: str,
    tiles: str | None = typer.Option(None, help="Only these tiles (comma-separated)."),
    api: str | None = ApiOption,
) -> None:
    """Stop active jobs on their back-ends and cancel waiting tiles. A tile is marked
    canceled only when its job stopped (or never reached a back-end); the others are
    listed and the command exits 1."""
    from catalog_service.runner import cancel_tiles  # lazy: the runner loads openeo

    report = cancel_tiles(campaigns_at(api), campaign_id, _tiles(tiles))
    console.print(
        f"{len(report.canceled)} tiles canceled; {len(report.stopped)} jobs stopped on their back-ends."
    )
    if report.not_canceled:
        table = Table("tile", "not canceled because", title="not canceled")
        for tile, reason in sorted(report.not_canceled.items()):
            table.add_row(tile, reason)
        console.print(table)
        raise typer.Exit(1)


@friendly_errors
def logs(
    campaign_id: str,
    tile_id: str,
    level: str = typer.Option("info", help="Lowest log level: debug, info, warning, error."),
    api: str | None = ApiOption,
) -> None:
    """The back-end's logs of a tile's current job."""
    from catalog_service.runner.logins import login  # lazy: the runner loads openeo

    campaigns = campaigns_at(api)
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


@friendly_errors
def history(campaign_id: str, tile_id: str, api: str | None = ApiOption) -> None:
    """A tile's status history."""
    table = Table("when", "from", "to", "by", "details")
    for h in campaigns_at(api).history(campaign_id, tile_id):
        table.add_row(h["at"], h["from"] or "", h["to"], h["by"], json.dumps(h["details"]))
    console.print(table)
