"""Files only their owner may read (passwords, API keys)."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new 0600 file, then rename it over ``path``: there is no moment
    when others may read it, and a reader never sees half a file."""
    staging = path.with_name(path.name + ".new")
    staging.unlink(missing_ok=True)
    with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)
    os.replace(staging, path)
