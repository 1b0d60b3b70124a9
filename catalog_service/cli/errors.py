"""Errors in the CLI: one red line that says what to do, not a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from catalog_service.errors import TilekeeperError
from catalog_service.grids.aoi import AoiError

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Show tilekeeper's own errors, unreadable AOIs and invalid settings as a message."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (TilekeeperError, AoiError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from None
        except ValidationError as exc:
            if not exc.title.endswith("Settings"):
                raise
            for problem in exc.errors():
                name = ".".join(str(part) for part in problem["loc"])
                err_console.print(
                    f"[bold red]error:[/] setting {name} of {exc.title}: {problem['msg']} "
                    "(see docs/configuration.md)"
                )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
