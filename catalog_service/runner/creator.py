"""How a tile's openEO job is created: the campaign's process, parameters and options."""

from __future__ import annotations

from typing import Any

import pandas as pd
from openeo.extra.job_management.process_based import ProcessBasedJobCreator
from openeo.internal.processes.parse import Process
from openeo.rest.connection import Connection
from openeo.rest.job import BatchJob

from catalog_service.errors import TilekeeperError
from catalog_service.jobs.campaign import CampaignDefinition
from catalog_service.runner.namespaces import process_in, read_namespace

JOB_OPTIONS_PROPERTY = "job_options"


def job_title(campaign_id: str, tile_id: str) -> str:
    """Every back-end job's title names its campaign and tile: how the runner finds a
    job whose creation a crash interrupted."""
    return f"{campaign_id} {tile_id}"


class _JobOptionsConnection:
    """A connection whose ``create_job`` adds the campaign's job options.

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
    ``temporal_extent`` from the campaign, job options (campaign-wide, escalated per
    tile on retry) and the title ``{campaign} {tile}``. It only creates the job; the
    runner starts it."""

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
        self._remote: Process | None = None

    def _get_process_definition(self, connection: Connection) -> Process:
        # A namespace URL is read our way (egress policy, deadline, size cap), once.
        namespace = self.definition.process.namespace if self.definition.process else None
        if not namespace or not namespace.startswith(("http://", "https://")):
            return super()._get_process_definition(connection)
        if self._remote is None:
            process_id = self.definition.process.process_id  # type: ignore[union-attr]
            document = process_in(read_namespace(namespace), process_id, namespace)
            self._remote = Process.from_dict(document)
        return self._remote

    def start_job(self, row: pd.Series, connection: Connection, **kwargs: Any) -> BatchJob:
        options = dict(self.definition.job_options)
        tile_options = row.get(JOB_OPTIONS_PROPERTY)
        if isinstance(tile_options, dict):
            options.update(tile_options)
        row = row.copy()
        row["title"] = job_title(self.definition.id, str(row.get("item_id", row.name)))
        wrapped = _JobOptionsConnection(connection, options)
        job: BatchJob = super().start_job(row=row, connection=wrapped, **kwargs)  # type: ignore[arg-type]
        return job
