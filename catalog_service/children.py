"""Child processes the CLI, the benches and the tests start (API, local back-ends)."""

from __future__ import annotations

import subprocess


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
