"""The demo campaign: a cloud-free NDVI composite per 10 km UTM tile, computed by two
local openEO back-ends from a synthetic Sentinel-2 sample, tracked in the catalogue.

The pieces the ``tilekeeper demo`` command and the integration test share: where the
tiles are, the campaign definition, installing the UDP on the back-ends, and running
(MBJM in a thread, progress read back from the catalogue's summary)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openeo.rest.auth.config import AuthConfig
from openeo.rest.connection import Connection
from pyproj import Transformer
from shapely.geometry import shape

from catalog_service.campaign_run import run_campaign
from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.demo.backends import DEMO_PASSWORD, DEMO_USER, SampleSpec, demo_udp
from catalog_service.grids import TileSet, tiles_for
from catalog_service.jobs.campaign import Backend
from catalog_service.runner.logins import login
from catalog_service.runner.report import RunReport

GRID = "utm-10km"
EPSG = 32631
DATES = ("2024-05-01", "2024-06-15", "2024-08-01")
PERIOD = ("2024-04-01", "2024-09-30")
PROCESS_ID = "cloudfree_ndvi"


@dataclass(frozen=True)
class DemoArea:
    """A box of whole utm-10km tiles in EPSG:32631 (UTM 31N, central Belgium)."""

    west: float
    south: float
    east: float
    north: float

    def sample(self) -> SampleSpec:
        return SampleSpec(EPSG, (self.west, self.south, self.east, self.north), DATES)

    def aoi(self, inset_m: float = 500.0) -> dict[str, Any]:
        """The area as a WGS84 polygon, inset so that only its own tiles intersect."""
        to_wgs84 = Transformer.from_crs(EPSG, 4326, always_xy=True)
        w, s, e, n = (
            self.west + inset_m,
            self.south + inset_m,
            self.east - inset_m,
            self.north - inset_m,
        )
        xs = [w, e, e, w, w]
        ys = [s, s, n, n, s]
        lon, lat = to_wgs84.transform(xs, ys)
        return {
            "type": "Polygon",
            "coordinates": [[[x, y] for x, y in zip(lon, lat, strict=True)]],
        }

    def tiles(self) -> TileSet:
        return tiles_for(GRID, shape(self.aoi()))


# 4 x 4 tiles for the demo; 2 x 2 for the integration test.
DEMO_AREA = DemoArea(600_000, 5_640_000, 640_000, 5_680_000)
TEST_AREA = DemoArea(600_000, 5_640_000, 620_000, 5_660_000)


def store_login(urls: Sequence[str]) -> Path:
    """Keep the demo login where openEO users keep theirs, the openEO client's auth
    config (what `openeo-auth add-basic URL` does), so that `tilekeeper campaign run`
    logs in to the local back-ends like to any other. Returns the config file."""
    config = AuthConfig()
    for url in urls:
        config.set_basic_auth(url, DEMO_USER, DEMO_PASSWORD)
    return Path(config.path)


def connect(url: str) -> Connection:
    """A connection to a local back-end, logged in from the openEO auth config."""
    return login(Backend(name="local", url=url, auth="basic"))


def install_udp(urls: Sequence[str]) -> None:
    """Store the demo process as the demo user's UDP on each back-end (what a user does
    once with ``connection.save_user_defined_process``)."""
    udp = demo_udp()
    for url in urls:
        connect(url).save_user_defined_process(
            udp["id"],
            udp["process_graph"],
            parameters=udp["parameters"],
            summary=udp.get("summary"),
            description=udp.get("description"),
            returns=udp.get("returns"),
        )


def campaign_definition(
    campaign_id: str, area: DemoArea, backends: Sequence[tuple[str, str]], parallel_jobs: int = 2
) -> dict[str, Any]:
    return {
        "id": campaign_id,
        "title": "Demo: cloud-free NDVI composite, summer 2024",
        "description": "A cloud-free NDVI composite per 10 km UTM tile from a synthetic "
        "Sentinel-2 L2A sample, computed by two local openEO back-ends.",
        "grid": GRID,
        "aoi": area.aoi(),
        "temporal_extent": list(PERIOD),
        "process": {"process_id": PROCESS_ID},
        "backends": [
            {"name": name, "url": url, "parallel_jobs": parallel_jobs, "auth": "basic"}
            for name, url in backends
        ],
        "retry": {"max_attempts": 3},
    }


def ensure_campaign(
    campaigns: Campaigns, definition: dict[str, Any], tiles: TileSet
) -> tuple[bool, int]:
    """Create and register the campaign unless it exists; returns (created, new tiles).
    Registering again adds nothing, so an interrupted first run is completed here."""
    created = not campaigns.exists(definition["id"])
    if created:
        campaigns.create(definition)
    new = campaigns.register(definition["id"], tile_records(tiles))
    return created, new


def run_with_progress(
    api_url: str,
    campaigns: Campaigns,
    campaign_id: str,
    on_summary: Callable[[dict[str, Any]], None],
    root_dir: Path,
    poll_sleep: int = 2,
    refresh_s: float = 1.0,
) -> RunReport:
    """Run (or resume) the campaign with MBJM in a thread; ``on_summary`` gets the
    campaign summary from the catalogue every ``refresh_s`` until the run ends.
    ``root_dir`` takes what MBJM writes (error logs of failed jobs)."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["report"] = run_campaign(
                api_url, campaign_id, poll_sleep=poll_sleep, root_dir=root_dir
            )
        except BaseException as exc:  # reported in the caller's thread
            outcome["error"] = exc

    # A daemon thread: Ctrl-C ends the command and leaves a resumable campaign.
    thread = threading.Thread(target=work, name="campaign-run", daemon=True)
    thread.start()
    while thread.is_alive():
        on_summary(campaigns.summary(campaign_id))
        thread.join(refresh_s)
    on_summary(campaigns.summary(campaign_id))
    if "error" in outcome:
        raise outcome["error"]
    report: RunReport = outcome["report"]
    return report
