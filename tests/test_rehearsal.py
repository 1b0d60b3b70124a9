"""The dress rehearsal, CI-sized (issue 27): bench/rehearsal.py on a few hundred tiles and
a fast clock, with its faults: simulated back-ends that fail (job errors, tiles that need
more memory, 429s, failing and slow downloads, expiring results), a worker killed -9, then
PostgreSQL restarted, a back-end killed -9 and started again, two workers killed -9. The
same invariants as the full run must hold; figures are reported, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.browser
def test_a_small_rehearsal_keeps_every_invariant(tmp_path: Path) -> None:
    report_path = tmp_path / "rehearsal.json"
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "rehearsal.py"),
            "--tiles", "150", "--speedup", "900", "--pilot", "8",
            "--fault-scale", "3", "--backend-down", "6", "--db-down", "4",
            "--progress", "20", "--json", str(report_path),
        ],
        capture_output=True, text=True, timeout=1200, cwd=ROOT,
    )  # fmt: skip
    assert report_path.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_path.read_text())
    checks = {c["name"]: c for c in report["findings"]["checks"]}
    assert set(checks) == {
        "every tile finished or failed with a reason",
        "no tile with two live back-end jobs",
        "every finished tile harvested, checksums matching",
        "nothing lost across the restarts",
    }
    failed = [f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"]]
    assert not failed, failed
    assert report["worker_crashes"] == [], report["worker_crashes"]
    assert done.returncode == 0, done.stdout[-4000:]

    # Every fault was injected into the real component, and the run went through it.
    faults = [event["fault"] for event in report["faults_injected"]]
    assert faults == ["worker killed", "PostgreSQL restart", "back-end down", "workers killed"]
    assert not [e for e in report["faults_injected"] if "FAILED" in e["what"]]
    findings = report["findings"]
    assert findings["statuses"].get("finished", 0) > 0.9 * findings["tiles"]
    # Jobs failed on the back-ends and their tiles ran again; memory-hungry tiles (drawn
    # from their ids: the same every run) ran again with more memory.
    assert findings["jobs_by_status"].get("error", 0) > 0
    assert max(int(k) for k in findings["attempts"]) >= 2
    assert findings["escalated"] > 0
    # The figures the report exists for are there.
    run = report["run"]
    for key in ("wall_s", "tiles_per_hour", "capacity_tiles_per_hour", "share_of_capacity"):
        assert run[key] is not None and run[key] > 0, key
    assert report["plan"]["duration_left_s"] and report["plan"]["credits_left"]
    assert report["watch"]["ApiProber"]["overall"]["count"] > 0
    assert report["map_first_paint"]["first_paint_ms"] is not None
    assert report["watch"]["WebhookReceiver"]["by_type"].get("campaign.finished", 0) >= 1
