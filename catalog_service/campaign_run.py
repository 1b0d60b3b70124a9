"""A campaign run as tilekeeper starts it: the runner (catalog_service/runner/) with
the harvest of ingest/ composed in, so that finished tiles become products during the
run. The runner knows the harvest only as a protocol (runner/harvest.py); this module
is where both packages meet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Unpack

import requests
from openeo.rest.connection import Connection

from catalog_service.client.http import HttpSession
from catalog_service.runner import wiring
from catalog_service.runner.harvest import Harvest, HarvestFactory
from catalog_service.runner.loop import CampaignJobManager
from catalog_service.runner.report import RunReport
from catalog_service.runner.wiring import WorkerOptions
from catalog_service.settings import ProductSettings
from ingest.harvest import Harvester
from ingest.store import open_store


def product_harvest(root_url: str, auth: requests.auth.AuthBase | None) -> HarvestFactory:
    """Makes ingest's Harvester for a campaign of the catalogue at ``root_url``, into the
    configured product store."""

    def make(campaign_id: str, connection_for: Callable[[str], Connection]) -> Harvest:
        store = open_store(ProductSettings())
        return Harvester(HttpSession(root_url, auth=auth), campaign_id, store, connection_for)

    return make


def build_manager(
    root_url: str,
    campaign_id: str,
    *,
    harvest: bool = True,
    **options: Unpack[WorkerOptions],
) -> CampaignJobManager:
    """One worker of the campaign; with ``harvest``, finished tiles become products."""
    products = product_harvest(root_url, options.get("auth")) if harvest else None
    return wiring.build_manager(root_url, campaign_id, harvest=products, **options)


def run_campaign(
    root_url: str,
    campaign_id: str,
    *,
    harvest: bool = True,
    **options: Unpack[WorkerOptions],
) -> RunReport:
    """Run (or resume) a campaign until no tile waits or is active."""
    return build_manager(root_url, campaign_id, harvest=harvest, **options).run()
