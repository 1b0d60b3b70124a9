"""Child processes the CLI, the benches and the tests start (API, local back-ends)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from catalog_service.errors import TilekeeperError


def start(
    command: list[str],
    env: dict[str, str],
    ready: Callable[[], bool],
    what: str,
    *,
    log_path: Path | None = None,
    detach: bool = False,
    timeout_s: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Start ``command`` and wait until ``ready()``. Output goes to ``log_path``, else
    stdout nowhere and stderr to an unnamed temporary file (kept to report an early
    exit; never a pipe, which blocks the child once full and nobody reads it).
    ``detach`` puts it in a session of its own, so it keeps running after this process
    ends (the demo's services)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    errors = None if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(
        command,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if log_path else errors,
        start_new_session=detach,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = f"see {log_path}"
            if errors is not None:
                errors.seek(0)
                detail = errors.read().decode(errors="replace")[-2000:]
            raise TilekeeperError(f"{what} exited with {process.returncode}: {detail}")
        if ready():
            return process
        time.sleep(0.2)
    terminate(process)
    raise TilekeeperError(f"{what} was not ready within {timeout_s:.0f} s")


def terminate(process: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """Stop a child politely (SIGTERM), then firmly (SIGKILL) if it does not go."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
