"""The fault drills, CI-sized (issue 25, "broken on purpose, under load"): bench/drills.py
brings up scripts/cluster.sh on a fresh folder and fresh ports, loads it (locust readers
over HTTPS with the cluster's CA, and writers sending job changes through the proxy with
the Python client), runs two drills briefly and destroys the cluster:

- ``api``: one API process killed -9 (its process group): the proxy fails over;
- ``replica``: the streaming replica stopped for a while, then started again: reads fall
  back to the primary and return to the replica.

Checked from the figures it writes: no acknowledged job change lost or applied twice (each
is in tilekeeper.job_history exactly once), every read answered 2xx while the replica was
down, reads back on the replica after it started, and requests succeeding again after each
fault. The other drills (the primary restarted, a runner machine lost, the object store
lost during harvest) run in the bench: docs/benchmarks.md#fault-drills.

Skipped when nginx, PostgreSQL 15 or the local back-end's virtualenv is missing
(scripts/bootstrap.sh installs them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

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


def test_an_api_process_and_the_replica_fail_under_load_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    figures_file = tmp_path / "drills.json"
    command = [sys.executable, str(ROOT / "bench" / "drills.py"), "--drills", "api,replica"]
    # Brief: 600 tiles, 8 locust users, 4 s of load before each fault, 12 s after it.
    command += ["--tiles", "600", "--users", "8", "--writers", "2", "--baseline", "4"]
    command += ["--observe", "12", "--replica-down", "12", "--json", str(figures_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=420)
    output = done.stdout + done.stderr
    assert figures_file.exists(), output
    figures: dict[str, dict[str, Any]] = {
        drill["drill"]: drill for drill in json.loads(figures_file.read_text())
    }
    assert set(figures) == {"api", "replica"}, output
    for name, drill in figures.items():
        # Writes went on through each fault, and none acknowledged was lost or doubled.
        assert drill["writes"] > 0 and drill["reads"] > 0, (name, drill)
        assert drill["lost"] == 0 and drill["twice"] == 0, (name, drill)
        # Requests succeed again after the fault (recover_s None: none failed at all).
        assert drill["recover_s"] is None or drill["recover_s"] < 60, (name, drill)
    replica = figures["replica"]
    assert replica["checks"] == {"reads served": True, "back on replica": True, "load ran": True}, (
        output
    )
    assert done.returncode == 0, output
