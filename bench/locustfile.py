"""The load bench's users (run by bench/load.py through locust's command line).

Each class is a kind of user of a shared tilekeeper, as it uses the API:
- ``Reader``: STAC Browser and pystac-client: a status-filtered search and its next page,
  a page of the campaign's items, one item, a collection search;
- ``MapViewer``: the campaign map: vector tiles where a tile is, the changes feed;
- ``Dashboard``: counts and the summary, polled;
- ``Worker``: a runner worker: claims tiles, launches them, heartbeats.
Requests are named by kind (``read:search``, ...) so locust's table reads per kind.

Configured from the environment: LOAD_CAMPAIGN, LOAD_TILES (a file of tile ids to
pick from), LOAD_KEY (the workers' API key), LOAD_USERS (which classes, e.g.
``Reader`` for the anchor runs against stock stac-fastapi-pgstac), LOAD_PACE
(``closed``: no pause between requests; ``people``: the pauses of people and programs)."""

from __future__ import annotations

import math
import os
import random
import uuid
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, task

CAMPAIGN = os.environ.get("LOAD_CAMPAIGN", "load")
TILES: list[str] = (
    Path(os.environ["LOAD_TILES"]).read_text().split() if os.environ.get("LOAD_TILES") else []
)
KEY = os.environ.get("LOAD_KEY", "")
WANTED = set(os.environ.get("LOAD_USERS", "Reader,MapViewer,Dashboard,Worker").split(","))
# "closed": each user sends its next request as soon as it has an answer (the most the
# service can serve); "people": users wait as people and programs do between requests.
PEOPLE = os.environ.get("LOAD_PACE", "closed") == "people"


def pace(closed: tuple[float, float], people: tuple[float, float]) -> Any:
    return between(*(people if PEOPLE else closed))


STATUS_FILTER = "status='finished'"


# As STAC Browser and requests-based clients (pystac-client) ask: answers come compressed.
HEADERS = {"Accept-Encoding": "gzip"}


def _tile() -> str:
    return random.choice(TILES)


class Reader(FastHttpUser):
    """STAC Browser and pystac-client reading the campaign."""

    abstract = "Reader" not in WANTED
    default_headers = HEADERS
    weight = 6
    wait_time = pace((0.0, 0.05), (1.0, 3.0))  # a person paging in STAC Browser

    @task(4)
    def status_search(self) -> None:
        with self.client.get(
            "/search",
            params={"collections": CAMPAIGN, "filter": STATUS_FILTER, "limit": 100},
            name="read:search status",
            catch_response=True,
        ) as answer:
            page = answer.json() if answer.status_code == 200 else {}
            if answer.status_code == 200 and len(page.get("features", [])) != 100:
                answer.failure(f"{len(page.get('features', []))} items, not 100")
        following = [link for link in page.get("links", []) if link.get("rel") == "next"]
        if following:
            self.client.get(following[0]["href"], name="read:search next page")

    @task(2)
    def items(self) -> None:
        self.client.get(
            f"/collections/{CAMPAIGN}/items", params={"limit": 100}, name="read:items page"
        )

    @task(4)
    def item(self) -> None:
        self.client.get(f"/collections/{CAMPAIGN}/items/{_tile()}", name="read:item")

    @task(1)
    def collections(self) -> None:
        self.client.get("/collections", params={"limit": 10}, name="read:collection search")


def _tile_xyz(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, min(max(x, 0), n - 1), min(max(y, 0), n - 1)


class MapViewer(FastHttpUser):
    """The campaign map open in a browser: vector tiles as one pans, the changes feed."""

    abstract = "MapViewer" not in WANTED
    default_headers = HEADERS
    weight = 2
    wait_time = pace((0.0, 0.2), (0.5, 2.0))  # panning; the page polls changes every 2 s

    def on_start(self) -> None:
        self.cursor: str | None = None

    @task(3)
    def vector_tile(self) -> None:
        lon, lat = random.uniform(-10, 40), random.uniform(36, 70)
        z, x, y = _tile_xyz(lon, lat, random.choice((9, 10)))
        self.client.get(f"/campaigns/{CAMPAIGN}/tiles/{z}/{x}/{y}.pbf", name="map:vector tile")

    @task(1)
    def changes(self) -> None:
        with self.client.get(
            f"/campaigns/{CAMPAIGN}/map/changes",
            params={"since": self.cursor} if self.cursor else {},
            name="map:changes",
            catch_response=True,
        ) as answer:
            if answer.status_code == 200:
                self.cursor = str(answer.json().get("cursor", self.cursor))


class Dashboard(FastHttpUser):
    """A dashboard polling the campaign's figures."""

    abstract = "Dashboard" not in WANTED
    default_headers = HEADERS
    weight = 1
    wait_time = pace((0.0, 0.5), (3.0, 7.0))  # a dashboard refreshing every few seconds

    @task(3)
    def counts(self) -> None:
        self.client.get(f"/campaigns/{CAMPAIGN}/counts", name="dash:counts")

    @task(1)
    def summary(self) -> None:
        self.client.get(f"/campaigns/{CAMPAIGN}/summary", name="dash:summary")


class Worker(FastHttpUser):
    """A runner worker: claims free tiles, launches them (not_started -> queued with a job
    id), later starts them (queued -> running), and heartbeats its lease."""

    abstract = "Worker" not in WANTED
    default_headers = HEADERS
    weight = 1
    wait_time = pace((0.5, 0.5), (0.5, 1.5))  # a runner round, compressed

    def on_start(self) -> None:
        self.worker = f"load-{uuid.uuid4().hex[:8]}"
        self.queued: list[str] = []
        self.headers = {"Authorization": f"Bearer {KEY}"}

    def _changes(self, changes: list[dict[str, Any]], name: str) -> None:
        self.client.post(
            f"/campaigns/{CAMPAIGN}/jobs/changes",
            json={"actor": self.worker, "worker": self.worker, "changes": changes},
            headers=self.headers,
            name=name,
        )

    @task(2)
    def launch(self) -> None:
        with self.client.post(
            f"/campaigns/{CAMPAIGN}/workers/{self.worker}/claim",
            json={"statuses": ["not_started"], "limit": 10, "lease_s": 120},
            headers=self.headers,
            name="work:claim",
            catch_response=True,
        ) as answer:
            jobs = answer.json().get("jobs", []) if answer.status_code == 200 else []
        tiles = [job["tile"] for job in jobs if job["properties"].get("status") == "not_started"]
        if tiles:
            self._changes(
                [
                    {
                        "tile": tile,
                        "status": "queued",
                        "expect_status": "not_started",
                        "set": {
                            "backend_name": "alpha",
                            "openeo:job_id": f"j-{uuid.uuid4().hex[:12]}",
                        },
                    }
                    for tile in tiles
                ],
                "work:launch changes",
            )
            self.queued.extend(tiles)

    @task(2)
    def run_queued(self) -> None:  # not `start`: that is locust's own User.start
        started, self.queued = self.queued[:10], self.queued[10:]
        if started:
            self._changes(
                [{"tile": t, "status": "running", "expect_status": "queued"} for t in started],
                "work:running changes",
            )

    @task(1)
    def heartbeat(self) -> None:
        self.client.put(
            f"/campaigns/{CAMPAIGN}/workers/{self.worker}",
            json={"lease_s": 120, "info": {"bench": True}},
            headers=self.headers,
            name="work:heartbeat",
        )
