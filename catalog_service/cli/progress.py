"""The commands' progress bar: what is being done, a bar, how many of how many, any
extra columns, and the time elapsed (or left)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console, *extra: ProgressColumn, time_left: bool = False) -> Progress:
    """A progress bar on ``console``, with the ``extra`` columns before the time: the time
    left when ``time_left``, else the time elapsed."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeRemainingColumn() if time_left else TimeElapsedColumn(),
        console=console,
    )
