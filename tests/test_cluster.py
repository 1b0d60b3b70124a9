"""The production topology for real on this machine (issue 25, "beyond one machine"):
`scripts/cluster.sh up` on fresh ports and a fresh folder, then a campaign run to the end
by three runner "machines" through nginx over HTTPS, and `down`.

What runs (see scripts/cluster.sh): a PostgreSQL 15 + PostGIS primary of its own (TLS,
scram logins, hostssl only) and a streaming replica made by pg_basebackup that serves the
API's reads; two `tilekeeper serve` processes behind Debian's nginx (TLS, the /tk prefix,
failover); products on moto_server's S3; the two local openEO back-ends; three workers, each
with its own HOME, openEO config and API key. Checked from outside:

- every tile finished, its product registered and its files in the bucket;
- a search through the proxy is answered by the replica: the reader login's statement
  counts grow there (pg_stat_statements of the standby), never on the primary, and the
  replica is in recovery;
- with one API process killed, every request through the proxy is still answered;
- `down` leaves no process of the cluster behind.

Skipped when nginx, PostgreSQL 15 or the local back-end's virtualenv is missing
(scripts/bootstrap.sh installs them)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import requests

from catalog_service.client.campaigns import Campaigns, tile_records
from catalog_service.client.http import HttpSession
from catalog_service.demo.scenario import TEST_AREA, campaign_definition
from catalog_service.ids import campaign_products_id

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "cluster.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
WORKERS = 3
RUN_TIMEOUT_S = 150

pytestmark = [
    pytest.mark.slow,
    pytest.mark.db,
    pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed"),
    pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="PostgreSQL 15 is not installed"),
    pytest.mark.skipif(
        not (ROOT / ".venv-openeo" / "bin" / "python").exists(),
        reason="the local openEO back-end's virtualenv is missing (scripts/bootstrap.sh)",
    ),
]


@dataclass
class Cluster:
    dir: Path
    ports: dict[str, int]
    env: dict[str, str]  # the caller's environment with TILEKEEPER_CLUSTER_DIR

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.ports['PROXY_PORT']}/tk/"

    @property
    def ca(self) -> str:
        return str(self.dir / "tls" / "ca.crt")

    def secret(self, name: str) -> str:
        return (self.dir / "secrets" / name).read_text().strip()

    def script(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"cluster.sh {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def sql(self, port_name: str, query: str) -> Any:
        """One value, as the superuser over TLS verified against the cluster's CA."""
        with psycopg.connect(
            host="127.0.0.1",
            port=self.ports[port_name],
            user="tilekeeper_admin",
            password=self.secret("admin"),
            dbname="tilekeeper",
            sslmode="verify-full",
            sslrootcert=self.ca,
        ) as conn:
            row = conn.execute(query).fetchone()
            assert row is not None
            return row[0]

    def pids(self) -> dict[str, int]:
        """Every process group the cluster started: its services, workers and servers."""
        found = {p.stem: int(p.read_text()) for p in (self.dir / "run").glob("*.pid")}
        for name in ("primary", "replica"):
            pid_file = self.dir / "pg" / name / "postmaster.pid"
            if pid_file.exists():
                found[f"postgres-{name}"] = int(pid_file.read_text().splitlines()[0])
        return found


def _groups_alive(groups: set[int]) -> list[str]:
    """The live (non-zombie) processes whose process group is one of ``groups``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in groups and state != "Z":
            alive.append(f"{stat.parent.name} {text.split(' (', 1)[1].split(')', 1)[0]}")
    return alive


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Under /tmp with mode 0755: the postgres OS user must reach the data folders
    # (pytest's own tmp_path is 0700).
    folder = Path(tempfile.mkdtemp(prefix="tilekeeper-cluster-"))
    folder.chmod(0o755)
    # No bootstrap: the test runs where scripts/bootstrap.sh has run (the skips above).
    env = dict(os.environ, TILEKEEPER_CLUSTER_DIR=str(folder), TILEKEEPER_CLUSTER_BOOTSTRAP="0")
    cluster = Cluster(folder, {}, env)
    started = time.monotonic()
    try:
        print(cluster.script("up"))
        print(f"cluster.sh up took {time.monotonic() - started:.0f} s")
        cluster.ports = {
            name: int(value)
            for name, value in (
                line.split("=") for line in (folder / "ports.env").read_text().split()
            )
        }
        yield cluster
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def _worker_ended(cluster: Cluster, n: int) -> str | None:
    """The last line of worker n's console log once it ended (`exited 0`), else None."""
    pid = int((cluster.dir / "run" / f"worker-w{n}.pid").read_text())
    if _groups_alive({pid}):
        return None
    lines = (cluster.dir / "logs" / f"worker-w{n}.log").read_text().strip().splitlines()
    return lines[-1] if lines else ""


def test_the_production_topology_runs_a_campaign_and_stops_clean(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cluster.ca)  # the clients check the proxy's TLS
    admin_key = cluster.secret("admin-key")
    http = HttpSession(cluster.url, api_key=admin_key)
    campaigns = Campaigns(http)

    # A campaign of 4 tiles on the two back-ends, created through the proxy over HTTPS;
    # the workers' keys (worker-w1..3) are among its owners, or they may not run it.
    campaign = f"cluster-{uuid.uuid4().hex[:6]}"
    backends = [
        (name, f"http://127.0.0.1:{cluster.ports[port]}/openeo/1.2/")
        for name, port in (("alpha", "ALPHA_PORT"), ("beta", "BETA_PORT"))
    ]
    definition = campaign_definition(campaign, TEST_AREA, backends, parallel_jobs=2)
    definition["owners"] = [f"key:worker-w{n}" for n in range(1, WORKERS + 1)]
    campaigns.create(definition)
    tiles = TEST_AREA.tiles()
    assert campaigns.register(campaign, tile_records(tiles)) == len(tiles) == 4

    # Three runner machines, run to the end.
    started = time.monotonic()
    cluster.script("workers", campaign, "1")
    deadline = started + RUN_TIMEOUT_S
    ended: dict[int, str | None] = {}
    while time.monotonic() < deadline:
        ended = {n: _worker_ended(cluster, n) for n in range(1, WORKERS + 1)}
        if all(line is not None for line in ended.values()):
            break
        time.sleep(1)
    print(f"the workers ran the campaign in {time.monotonic() - started:.0f} s")
    logs = {
        n: (cluster.dir / "workers" / f"w{n}" / "run.log").read_text()
        for n in range(1, WORKERS + 1)
    }
    assert ended == dict.fromkeys(range(1, WORKERS + 1), "exited 0"), logs
    for n, log in logs.items():  # each ran as its own worker, through the proxy
        assert f"worker w{n} runs campaign {campaign}" in log, log

    summary = campaigns.summary(campaign)
    assert summary["by_status"] == {"finished": 4}, summary
    products_id = campaign_products_id(campaign)
    items = http.get(f"collections/{products_id}/items?limit=100")["features"]
    assert sorted(item["properties"]["tilekeeper:tile"] for item in items) == sorted(
        str(tile) for tile in tiles.ids
    )

    # Products: in the bucket, where their hrefs say.
    s3_url = f"http://127.0.0.1:{cluster.ports['S3_PORT']}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="tilekeeper",
        aws_secret_access_key=cluster.secret("s3"),
    )
    listed = s3.list_objects_v2(Bucket="tilekeeper-products", Prefix=f"products/{products_id}/")
    keys = {entry["Key"] for entry in listed.get("Contents", [])}
    prefix = f"{s3_url}/tilekeeper-products/"
    for item in items:
        for asset in item["assets"].values():
            assert asset["href"].startswith(prefix), asset["href"]
            assert asset["href"].removeprefix(prefix) in keys, (asset["href"], keys)

    # Reads are served by the replica: the reader login's search statements are counted on
    # the standby (and never on the primary, which the reader login does not reach).
    counted = (
        "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_statements s "
        "JOIN pg_roles r ON r.oid = s.userid "
        "WHERE r.rolname = 'tilekeeper_reader' AND s.query ILIKE '%search%'"
    )
    assert cluster.sql("REPLICA_PORT", "SELECT pg_is_in_recovery()") is True
    assert cluster.sql("PG_PORT", "SELECT pg_is_in_recovery()") is False
    streaming = "SELECT count(*)::int FROM pg_stat_replication WHERE state = 'streaming'"
    assert cluster.sql("PG_PORT", streaming) == 1
    before = cluster.sql("REPLICA_PORT", counted)
    assert isinstance(before, int)
    for _ in range(3):
        found = http.post("search", json={"collections": [campaign], "limit": 10})
        assert len(found["features"]) == 4
    assert cluster.sql("REPLICA_PORT", counted) >= before + 3
    assert cluster.sql("PG_PORT", counted) == 0

    # Every login is over TLS: the APIs' pools are encrypted, a plain connection is refused.
    encrypted = (
        "SELECT count(*)::int FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
        "WHERE a.usename = '{}' AND s.ssl"
    )
    assert cluster.sql("PG_PORT", encrypted.format("tilekeeper_writer")) >= 2
    assert cluster.sql("REPLICA_PORT", encrypted.format("tilekeeper_reader")) >= 2
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(
            host="127.0.0.1",
            port=cluster.ports["PG_PORT"],
            user="tilekeeper_writer",
            password=cluster.secret("writer"),
            dbname="tilekeeper",
            sslmode="disable",
        )

    # Failover: with one API process killed, every request through the proxy is answered.
    api_1 = cluster.pids()["api-1"]
    os.killpg(api_1, signal.SIGKILL)
    answers = [
        requests.get(f"{cluster.url}collections/{campaign}", timeout=10).status_code
        for _ in range(20)
    ]
    assert answers == [200] * 20, answers
    assert http.post("search", json={"collections": [campaign], "limit": 1})["features"]

    # `down` stops everything, nothing left behind.
    groups = set(cluster.pids().values())
    assert len(groups) >= 8 + WORKERS  # 2 PostgreSQL, s3, 2 APIs, nginx, 2 back-ends, workers
    cluster.script("down", timeout=120)
    assert not _groups_alive(groups)
    assert not list((cluster.dir / "run").glob("*.pid"))
    status = subprocess.run(
        ["bash", str(SCRIPT), "status"], env=cluster.env, capture_output=True, text=True
    )
    assert status.returncode == 1, status.stdout  # parts are down
    assert not [line for line in status.stdout.splitlines() if " up " in line], status.stdout
