"""User-defined processes (``/process_graphs``) kept on disk per user."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from openeo_driver.backend import (
    UserDefinedProcesses,
    UserDefinedProcessesListing,
    UserDefinedProcessMetadata,
)

_SAFE = re.compile(r"^[A-Za-z0-9_\-]+$")


class DiskUserDefinedProcesses(UserDefinedProcesses):  # type: ignore[misc]
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, user_id: str, process_id: str | None = None) -> Path:
        user = "".join(c if c.isalnum() else "_" for c in user_id)
        folder = self.root / user
        if process_id is None:
            return folder
        if not _SAFE.match(process_id):
            raise ValueError(f"process id {process_id!r}: letters, digits, _ and - only")
        return folder / f"{process_id}.json"

    def definitions(self, user_id: str) -> dict[str, dict[str, Any]]:
        """Every UDP of the user as its full openEO process definition."""
        folder = self._path(user_id)
        return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}

    def get(self, user_id: str, process_id: str) -> UserDefinedProcessMetadata | None:
        path = self._path(user_id, process_id)
        if not path.exists():
            return None
        return UserDefinedProcessMetadata.from_dict(json.loads(path.read_text()))

    def get_for_user(self, user_id: str) -> list[UserDefinedProcessMetadata]:
        return [UserDefinedProcessMetadata.from_dict(d) for d in self.definitions(user_id).values()]

    def list_for_user(self, user_id: str) -> UserDefinedProcessesListing:
        return UserDefinedProcessesListing(udps=self.get_for_user(user_id))

    def save(self, user_id: str, process_id: str, spec: dict[str, Any]) -> None:
        path = self._path(user_id, process_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**spec, "id": process_id}, indent=1))
        os.replace(tmp, path)

    def delete(self, user_id: str, process_id: str) -> None:
        self._path(user_id, process_id).unlink(missing_ok=True)
