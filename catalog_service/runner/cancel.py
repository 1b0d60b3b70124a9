"""Canceling tiles: a tile is marked canceled only when its job was stopped, or when
no job of it ever reached a back-end; the rest is reported, not hidden."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from openeo.rest import OpenEoApiError
from openeo.rest.connection import Connection

from catalog_service.client.campaigns import Campaigns
from catalog_service.errors import TilekeeperError
from catalog_service.jobs import status
from catalog_service.jobs.campaign import JOB_ID_KEY, Backend
from catalog_service.runner.creator import job_title
from catalog_service.runner.logins import UNREACHABLE, login

logger = logging.getLogger(__name__)


@dataclass
class CancelReport:
    canceled: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    # tile -> why it was not canceled
    not_canceled: dict[str, str] = field(default_factory=dict)


def cancel_tiles(
    campaigns: Campaigns,
    campaign_id: str,
    tiles: Sequence[str] | None = None,
    *,
    connect: Callable[[Backend], Connection] = login,
    actor: str = "tilekeeper-cancel",
) -> CancelReport:
    """Cancel the campaign's waiting and active tiles (or only ``tiles``)."""
    definition = campaigns.definition(campaign_id)
    backends = {b.name: b for b in definition.backends}
    wanted = sorted(status.ACTIVE | {status.NOT_STARTED})
    report = CancelReport()
    if tiles:
        jobs = campaigns.jobs_by_tile(campaign_id, tiles)
        for missing in sorted(set(tiles) - {j["tile"] for j in jobs}):
            report.not_canceled[missing] = "no such tile"
    else:
        jobs = list(campaigns.iter_jobs(campaign_id, wanted))
    connections: dict[str, Connection | None] = {}

    def connection(name: str) -> Connection | None:
        if name not in connections:
            try:
                connections[name] = connect(backends[name])
            except (TilekeeperError, *UNREACHABLE) as exc:
                logger.warning("cannot reach back-end %s: %s", name, exc)
                connections[name] = None
        return connections[name]

    changes = []
    for job in jobs:
        tile, props = job["tile"], job["properties"]
        current = props.get("status")
        if current not in wanted:
            report.not_canceled[tile] = f"it is {current}, not waiting or active"
            continue
        backend, job_id = props.get("backend_name"), props.get(JOB_ID_KEY)
        if current != status.NOT_STARTED:
            if backend not in backends:
                report.not_canceled[tile] = f"unknown back-end {backend!r}"
                continue
            con = connection(str(backend))
            if con is None:
                report.not_canceled[tile] = f"back-end {backend} unreachable"
                continue
            try:
                ids = [str(job_id)] if job_id else _jobs_titled(con, job_title(campaign_id, tile))
                for one in ids:
                    con.job(one).stop()
                    report.stopped.append(one)
            except (OpenEoApiError, *UNREACHABLE) as exc:
                report.not_canceled[tile] = f"stopping its job failed: {exc}"
                continue
        changes.append({"tile": tile, "status": status.CANCELED, "expect_status": current})
    if changes:
        result = campaigns.change(campaign_id, changes, actor=actor, partial=True)
        report.canceled = [a["tile"] for a in result["applied"]]
        for conflict in result["conflicts"]:
            report.not_canceled[conflict["tile"]] = conflict["reason"]
    return report


def _jobs_titled(connection: Connection, title: str) -> list[str]:
    """A `creating` tile's job, if its creation reached the back-end."""
    return [str(j["id"]) for j in connection.list_jobs(limit=None) if j.get("title") == title]
