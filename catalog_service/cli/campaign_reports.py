"""The campaign reports: status, budget line, harvest state and the plan."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from catalog_service.cli.campaign_options import ApiOption, campaigns_at
from catalog_service.cli.errors import friendly_errors
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.planning.pilot import plan as make_plan

console = Console()


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@friendly_errors
def status(
    campaign_id: str,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    api: str | None = ApiOption,
) -> None:
    """Counts per status and back-end, runtime, cost, throughput, ETA and projected cost."""
    campaigns = campaigns_at(api)
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
    console.print(budget_line(summary["budget"]), soft_wrap=True)
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


def budget_line(figures: dict[str, Any]) -> str:
    if figures["credits"] is None:
        return f"credits spent {_money(figures['spent'])} (no budget)"
    line = (
        f"budget {_money(figures['credits'])}: spent {_money(figures['spent'])}, "
        f"committed with {figures['active_jobs']} active job(s) {_money(figures['committed'])}"
    )
    if figures["reached"]:
        line += " [red]- reached: no new job starts[/]"
    return line


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


def _interval(value: dict[str, float] | None, show: Any) -> str:
    if value is None:
        return "-"
    return f"{show(value['mean'])} (90%: {show(value['low'])} - {show(value['high'])})"


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
    campaigns = campaigns_at(api)
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
