"""openEO back-ends built from the client's DummyBackend (requests-mock), a user-defined
process for them, and the jobs the catalogue records."""

from __future__ import annotations

import re
from typing import Any

import requests_mock
from openeo.rest._testing import DummyBackend

from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession

UDP_URL = "https://udp.test/ndvi_tile.json"
UDP = {
    "id": "ndvi_tile",
    "parameters": [
        {"name": "spatial_extent", "description": "tile extent", "schema": {"type": "object"}},
        {"name": "temporal_extent", "description": "period", "schema": {"type": "array"}},
        {"name": "bands", "description": "bands", "schema": {"type": "array"}, "optional": True},
    ],
    "process_graph": {
        "load": {
            "process_id": "load_collection",
            "arguments": {
                "id": "SENTINEL2_L2A",
                "spatial_extent": {"from_parameter": "spatial_extent"},
                "temporal_extent": {"from_parameter": "temporal_extent"},
            },
            "result": True,
        }
    },
}


def dummy_backends(mocker: requests_mock.Mocker, errors: int = 3) -> dict[str, DummyBackend]:
    """Two back-ends: jobs go queued -> running -> finished, a few end in error, and
    one start fails on each."""
    backends = {}
    # Anything a dummy back-end does not serve answers 404 at once (registered first, so
    # the back-ends' own routes take precedence), instead of a DNS failure retried 50x.
    mocker.register_uri(
        requests_mock.ANY,
        re.compile(r"https://[a-z]+\.test/.*"),
        status_code=404,
        json={"code": "NotFound", "message": "not served by the dummy back-end"},
    )
    for name in ("alpha", "beta"):
        dummy = DummyBackend.at_url(f"https://{name}.test/", requests_mock=mocker)
        dummy.setup_collection("S2")
        dummy.setup_file_format("GTiff")
        dummy.setup_simple_job_status_flow(
            queued=1,
            running=2,
            final_per_job={f"job-{n:03d}": "error" for n in range(5, 5 + errors)},
        )
        dummy.setup_job_start_failure(job_id="job-002", status_code=400)
        backends[name] = dummy
    return backends


def catalogue_jobs(api: str, campaign: str) -> dict[str, dict[str, Any]]:
    session = HttpSession(api)
    return {
        j["tile"]: j["properties"]
        for j in Campaigns(session).iter_jobs(campaign, sorted(_all_statuses()))
    }


def _all_statuses() -> set[str]:
    from catalog_service.jobs import status

    return set(status.ALL)
