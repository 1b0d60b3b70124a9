"""The `tilekeeper` command line run in-process (typer's CliRunner)."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from catalog_service.cli.main import app

runner = CliRunner()


def ingest(*args: str) -> Any:
    """`tilekeeper ingest ARGS` (wide enough that messages are not wrapped)."""
    return runner.invoke(app, ["ingest", *args], env={"COLUMNS": "1000"})
