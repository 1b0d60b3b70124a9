"""Running a campaign: MultiBackendJobManager over the campaign's back-ends, with the
CampaignJobDatabase and a job creator built from the campaign's process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from openeo.extra.job_management import MultiBackendJobManager
from openeo.extra.job_management.process_based import ProcessBasedJobCreator
from openeo.rest.connection import Connection
from openeo.rest.connection import connect as openeo_connect
from openeo.rest.job import BatchJob

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.jobdb import CampaignJobDatabase
from catalog_service.errors import TilekeeperError
from catalog_service.jobs import status
from catalog_service.jobs.campaign import CampaignDefinition

logger = logging.getLogger(__name__)
JOB_OPTIONS_PROPERTY = "job_options"


class _JobOptionsConnection:
    """A connection whose ``create_job`` adds the campaign's job options and title.

    ProcessBasedJobCreator builds the process graph and parameters; job options are the
    one thing it cannot pass, so they are added where the job is created."""

    def __init__(self, connection: Connection, job_options: dict[str, Any]) -> None:
        self._connection = connection
        self._job_options = job_options

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def create_job(self, *args: Any, **kwargs: Any) -> BatchJob:
        if self._job_options:
            kwargs["job_options"] = {**self._job_options, **(kwargs.get("job_options") or {})}
        job: BatchJob = self._connection.create_job(*args, **kwargs)
        return job


class CampaignJobCreator(ProcessBasedJobCreator):
    """``start_job`` for a campaign: its process with constant parameters, per-tile
    parameters from tile properties of the same name (or the campaign's parameter_map),
    ``temporal_extent`` from the campaign, and job options (campaign-wide, escalated per
    tile on retry)."""

    def __init__(self, definition: CampaignDefinition) -> None:
        if definition.process is None:
            raise TilekeeperError(
                f"campaign {definition.id} has no process: give one at creation "
                "(`tilekeeper campaign create --process-id ... [--namespace URL]`)"
            )
        defaults = dict(definition.process.parameters)
        if definition.temporal_extent:
            defaults.setdefault(
                "temporal_extent", [d.isoformat() for d in definition.temporal_extent]
            )
        super().__init__(
            process_id=definition.process.process_id,
            namespace=definition.process.namespace,
            parameter_defaults=defaults,
            parameter_column_map=definition.process.parameter_map or None,
        )
        self.definition = definition

    def start_job(self, row: pd.Series, connection: Connection, **kwargs: Any) -> BatchJob:
        options = dict(self.definition.job_options)
        tile_options = row.get(JOB_OPTIONS_PROPERTY)
        if isinstance(tile_options, dict):
            options.update(tile_options)
        if "title" not in row.index or row.get("title") is None:
            row = row.copy()
            row["title"] = f"{self.definition.id} {row.get('item_id', row.name)}"
        wrapped = _JobOptionsConnection(connection, options)
        job: BatchJob = super().start_job(row=row, connection=wrapped, **kwargs)  # type: ignore[arg-type]
        return job


class CampaignJobManager(MultiBackendJobManager):
    """MultiBackendJobManager that records results links and error messages on the tiles,
    and survives a back-end connection error while tracking (upstream crashes there
    with UnboundLocalError, defect N4)."""

    def __init__(self, job_db: CampaignJobDatabase, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_db = job_db

    def _track_statuses(self, job_db: Any, stats: dict[str, int] | None = None) -> Any:
        try:
            return super()._track_statuses(job_db, stats=stats)
        except requests.ConnectionError as exc:
            logger.warning("tracking skipped this round, back-end unreachable: %s", exc)
            return [], [], []

    def _record(self, row: pd.Series, links: list[dict[str, Any]], props: dict[str, Any]) -> None:
        tile = row.get("item_id")
        if not tile:
            return
        change = {"tile": str(tile), "set": props, "links": links}
        try:
            self.job_db.campaigns.change(self.job_db.collection_id, [change], self.job_db.actor)
        except TilekeeperError as exc:  # a bookkeeping extra must not stop the campaign
            logger.warning("could not record results of tile %s: %s", tile, exc)

    def on_job_done(self, job: BatchJob, row: pd.Series) -> None:
        super().on_job_done(job, row)
        url = f"{job.connection.root_url.rstrip('/')}/jobs/{job.job_id}/results"
        self._record(
            row,
            [
                {
                    "rel": "results",
                    "href": url,
                    "type": "application/json",
                    "title": "openEO job results",
                }
            ],
            {},
        )

    def on_job_error(self, job: BatchJob, row: pd.Series) -> None:
        message = None
        try:
            logs = job.logs(level="error")
            if logs:
                message = str(logs[-1].get("message"))[:2000]
        except Exception as exc:  # the back-end may not serve logs
            logger.info("no error logs for job %s: %s", job.job_id, exc)
        self._record(row, [], {"last_error": message or "job ended in error (no log message)"})


def build_manager(
    definition: CampaignDefinition,
    job_db: CampaignJobDatabase,
    *,
    poll_sleep: int = 60,
    root_dir: str | Path | None = None,
    connect: Callable[[str], Connection] | None = None,
) -> CampaignJobManager:
    if not definition.backends:
        raise TilekeeperError(
            f"campaign {definition.id} has no back-ends: give them at creation "
            "(`--backend name=URL[:parallel_jobs]`)"
        )
    manager = CampaignJobManager(
        job_db,
        poll_sleep=poll_sleep,
        root_dir=root_dir,
        download_results=False,
    )
    connect = connect or openeo_connect
    for backend in definition.backends:
        manager.add_backend(
            backend.name, connection=connect(backend.url), parallel_jobs=backend.parallel_jobs
        )
    return manager


def run_campaign(
    root_url: str,
    campaign_id: str,
    *,
    poll_sleep: int = 60,
    root_dir: str | Path | None = None,
    connect: Callable[[str], Connection] | None = None,
    auth: requests.auth.AuthBase | None = None,
) -> dict[str, int]:
    """Run (or resume) a campaign until no tile is waiting or active. Returns MBJM stats."""
    job_db = CampaignJobDatabase(campaign_id, root_url, auth=auth)
    definition = Campaigns(job_db.http).definition(campaign_id)
    manager = build_manager(
        definition, job_db, poll_sleep=poll_sleep, root_dir=root_dir, connect=connect
    )
    stats: dict[str, int] = manager.run_jobs(
        job_db=job_db, start_job=CampaignJobCreator(definition)
    )
    return stats


def cancel_campaign(
    campaigns: Campaigns,
    campaign_id: str,
    *,
    connect: Callable[[str], Connection] | None = None,
    actor: str = "tilekeeper-cancel",
) -> dict[str, int]:
    """Stop every active job on its back-end and mark it canceled; waiting tiles are
    canceled too. ``retry --status canceled`` resumes them."""
    definition = campaigns.definition(campaign_id)
    urls = {b.name: b.url for b in definition.backends}
    connect = connect or openeo_connect
    connections: dict[str, Connection] = {}
    stopped = failed = 0
    changes = []
    for job in campaigns.iter_jobs(campaign_id, sorted(status.ACTIVE)):
        props = job["properties"]
        backend, job_id = props.get("backend_name"), props.get("id")
        if backend in urls and job_id:
            try:
                if backend not in connections:
                    connections[backend] = connect(urls[backend])
                connections[backend].job(job_id).stop()
                stopped += 1
            except Exception as exc:
                failed += 1
                logger.warning("could not stop job %s on %s: %s", job_id, backend, exc)
        changes.append(
            {"tile": job["tile"], "status": status.CANCELED, "expect_status": props["status"]}
        )
    for job in campaigns.iter_jobs(campaign_id, [status.NOT_STARTED]):
        changes.append(
            {"tile": job["tile"], "status": status.CANCELED, "expect_status": status.NOT_STARTED}
        )
    result = campaigns.change(campaign_id, changes, actor=actor) if changes else {"applied": []}
    return {"canceled": len(result["applied"]), "stopped": stopped, "stop_failed": failed}
