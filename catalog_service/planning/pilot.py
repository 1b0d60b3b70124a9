"""The pilot and the plan, through the API: which tiles to run first, and what the
tiles that ran say about the whole campaign."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from catalog_service.client.campaigns import Campaigns
from catalog_service.errors import TilekeeperError
from catalog_service.grids.geometry import transformer
from catalog_service.jobs import status
from catalog_service.planning.projection import Plan, project
from catalog_service.planning.sample import Candidate, stratified


def candidates(
    campaigns: Campaigns, campaign_id: str, attribute: str | None = None
) -> list[Candidate]:
    """The campaign's not_started tiles with their centres in lon/lat (from each tile's
    native bbox and CRS) and the named attribute. Read in large pages, keeping only those
    fields: a million tiles' full properties would take gigabytes."""
    tiles: list[str] = []
    values: list[Any] = []
    codes: list[str] = []
    boxes: list[list[float]] = []
    for job in campaigns.iter_jobs(campaign_id, [status.NOT_STARTED], page_size=10_000):
        properties = job["properties"]
        tiles.append(job["tile"])
        values.append(properties.get(attribute) if attribute else None)
        codes.append(str(properties.get("proj:code") or "EPSG:4326"))
        boxes.append(properties.get("proj:bbox") or [0, 0, 0, 0])
    if attribute and all(value is None for value in values):
        raise TilekeeperError(f"no tile of {campaign_id} has the attribute {attribute!r}")
    by_crs: dict[str, list[int]] = defaultdict(list)
    for n, code in enumerate(codes):
        by_crs[code].append(n)
    lon = np.zeros(len(tiles))
    lat = np.zeros(len(tiles))
    for code, rows in by_crs.items():
        box = np.array([boxes[n] for n in rows], dtype=float)
        x, y = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
        epsg = int(code.split(":")[-1])
        lon[rows], lat[rows] = transformer(epsg, 4326).transform(x, y) if epsg != 4326 else (x, y)
    return [
        Candidate(tile, float(lon[n]), float(lat[n]), values[n]) for n, tile in enumerate(tiles)
    ]


def choose_pilot(
    campaigns: Campaigns, campaign_id: str, count: int, attribute: str | None = None
) -> list[str]:
    """The campaign's pilot tiles: the ones chosen before while any of them is not done
    (a pilot resumes), else a new stratified sample of its not_started tiles, stored in
    the campaign."""
    definition = campaigns.definition(campaign_id)
    if definition.pilot_tiles:
        jobs = campaigns.jobs_by_tile(campaign_id, definition.pilot_tiles)
        if any(j["properties"]["status"] not in status.TERMINAL for j in jobs):
            return list(definition.pilot_tiles)
    chosen = stratified(candidates(campaigns, campaign_id, attribute), count, bool(attribute))
    if not chosen:
        raise TilekeeperError(f"campaign {campaign_id} has no not_started tile for a pilot")
    campaigns.update(campaign_id, pilot_tiles=chosen)
    return chosen


def plan(campaigns: Campaigns, campaign_id: str, parallel: int | None = None) -> Plan:
    """The projection for the whole campaign from its pilot's finished tiles, or from
    every finished tile when there is no pilot (or when more have finished since)."""
    definition = campaigns.definition(campaign_id)
    summary = campaigns.summary(campaign_id)
    terminal = sorted(status.TERMINAL)
    pilot: list[dict[str, Any]] = []
    if definition.pilot_tiles:
        pilot = [j["properties"] for j in campaigns.jobs_by_tile(campaign_id, definition.pilot_tiles)]  # fmt: skip
        pilot = [p for p in pilot if p.get("status") in status.TERMINAL]
    finished = summary["finished"]["count"]
    if pilot and len(pilot) >= finished:
        sample, source = pilot, "pilot"
    else:
        sample = [j["properties"] for j in campaigns.iter_jobs(campaign_id, terminal)]
        source = "finished tiles"
    if not any(p.get("status") == status.FINISHED for p in sample):
        raise TilekeeperError(
            f"campaign {campaign_id} has no finished tile to project from: run a pilot "
            f"first (`tilekeeper campaign pilot {campaign_id} --tiles 8`)"
        )
    slots = parallel or sum(b.parallel_jobs for b in definition.backends) or 1
    return project(
        campaign_id,
        sample,
        source=source,
        tiles=summary["tiles"],
        tiles_left=summary["tiles"] - summary["by_status"].get(status.FINISHED, 0),
        parallel=slots,
        campaign_job_options=definition.job_options,
    )
