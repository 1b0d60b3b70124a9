"""Putting one worker of a campaign together: its job store, its logins to the
back-ends (those the egress policy refuses or that cannot run the process get no
tiles), and the harvest its caller gives it."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict, Unpack

import requests
from openeo.rest.connection import Connection

from catalog_service.egress import EgressRefused, check_url
from catalog_service.errors import TilekeeperError
from catalog_service.jobs.campaign import Backend, CampaignDefinition
from catalog_service.runner.creator import CampaignJobCreator
from catalog_service.runner.faults import error_message
from catalog_service.runner.fitness import unfit_reason
from catalog_service.runner.harvest import HarvestFactory
from catalog_service.runner.jobdb import WorkerJobDatabase
from catalog_service.runner.logins import BackendDown, BackendLink, login
from catalog_service.runner.loop import CampaignJobManager
from catalog_service.runner.report import RunReport
from catalog_service.settings import RunnerSettings

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def build_manager(
    root_url: str,
    campaign_id: str,
    *,
    harvest: HarvestFactory | None,
    worker: str | None = None,
    poll_sleep: float = 60,
    lease_s: float | None = None,
    root_dir: str | Path | None = None,
    connect: Callable[[Backend], Connection] = login,
    auth: requests.auth.AuthBase | None = None,
    only_tiles: list[str] | None = None,
) -> CampaignJobManager:
    """One worker of the campaign at ``root_url``; ``harvest`` makes the harvest of its
    finished tiles (None: they are left to `tilekeeper ingest --campaign`)."""
    lease = lease_s or max(60.0, 4 * poll_sleep)
    job_db = WorkerJobDatabase(
        campaign_id, root_url, worker=worker or default_worker_id(), lease_s=lease, auth=auth
    )
    job_db.only_tiles = only_tiles
    definition = job_db.campaigns.definition(campaign_id)
    if not definition.backends:
        raise TilekeeperError(
            f"campaign {definition.id} has no back-ends: give them at creation "
            "(`--backend name=URL[@parallel_jobs]`)"
        )
    CampaignJobCreator(definition)  # fails early when the campaign has no process
    settings = RunnerSettings()
    links = {b.name: BackendLink.configured(b, connect, settings) for b in definition.backends}
    refused = refused_backends(definition.backends)
    for name, link in links.items():
        if name not in refused:
            with contextlib.suppress(BackendDown):
                link.get()  # a missing login fails now, with what to do; a down one waits
    unfit = check_fitness(definition, links, refused)
    return CampaignJobManager(
        definition,
        job_db,
        links,
        unfit=unfit,
        harvest=harvest(campaign_id, lambda name: links[name].get()) if harvest else None,
        poll_sleep=poll_sleep,
        root_dir=root_dir,
    )


class WorkerOptions(TypedDict, total=False):
    """``build_manager``'s options, for callers that pass them on."""

    worker: str | None
    poll_sleep: float
    lease_s: float | None
    root_dir: str | Path | None
    connect: Callable[[Backend], Connection]
    auth: requests.auth.AuthBase | None
    only_tiles: list[str] | None


def run_campaign(
    root_url: str,
    campaign_id: str,
    *,
    harvest: HarvestFactory | None,
    **options: Unpack[WorkerOptions],
) -> RunReport:
    """Run (or resume) a campaign until no tile waits or is active."""
    return build_manager(root_url, campaign_id, harvest=harvest, **options).run()


def refused_backends(backends: list[Backend]) -> dict[str, str]:
    """Back-ends whose URL the egress policy refuses (catalog_service/egress.py), with why."""
    refused: dict[str, str] = {}
    for backend in backends:
        try:
            check_url(backend.url)
        except EgressRefused as exc:
            refused[backend.name] = str(exc)
    return refused


def check_fitness(
    definition: CampaignDefinition,
    links: dict[str, BackendLink],
    refused: dict[str, str] | None = None,
) -> dict[str, str]:
    """Back-ends that cannot run the campaign's process, or that the egress policy
    ``refused``, with why; each is logged. A back-end that cannot be asked now (down)
    is not held against it."""
    unfit = dict(refused or {})
    for name, why in unfit.items():
        logger.warning("back-end %s gets no tiles: %s", name, why)
    for name, link in links.items():
        if definition.process is None or name in unfit:
            continue
        try:
            reason = unfit_reason(link.get(), definition.process)
        except Exception as exc:  # down, or answering garbage: not held against it now
            logger.warning(
                "back-end %s: its fitness could not be checked (%s)", name, error_message(exc)
            )
            continue
        if reason:
            unfit[name] = reason
            logger.warning("back-end %s gets no tiles: %s", name, reason)
    if unfit and len(unfit) == len(links):
        raise TilekeeperError(
            "no back-end of the campaign can run it: "
            + "; ".join(f"{name}: {reason}" for name, reason in unfit.items())
        )
    return unfit
