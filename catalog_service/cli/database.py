"""`tilekeeper db ...`: the catalogue database. ``database_up`` and ``database_down`` are
the commands' work as plain functions, for other commands (the demo) to call."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from catalog_service.cli.errors import friendly_errors
from catalog_service.database import (
    EmbeddedCluster,
    UpReport,
    bring_down,
    bring_up,
    resolve_logins,
)
from catalog_service.database.backup import (
    CatalogueCounts,
    backup_database,
    existing_campaigns,
    restore_database,
)
from catalog_service.errors import ConfigurationError
from catalog_service.settings import DatabaseSettings

console = Console()
app = typer.Typer(
    help="The catalogue database (embedded PostgreSQL + PostGIS + pgstac).", no_args_is_help=True
)


def database_up(settings: DatabaseSettings) -> UpReport:
    """Create (first time), start and migrate the database, saying what was done."""
    where = "external database" if settings.external else f"embedded cluster in {settings.data_dir}"
    with console.status(f"Bringing up the {where}..."):
        report = bring_up(settings)
    if report.admin_key_created:
        console.print(
            f"Admin API key written to {report.admin_key} (mode 0600); the CLI and the "
            "Python API on this machine use it. Make narrower keys with "
            "`tilekeeper auth key create`."
        )
    if not report.changed:
        console.print(
            f"Database already up: {report.logins.writer.redacted()} "
            f"(pgstac {report.schema.pgstac_version})."
        )
        return report
    steps = []
    if report.created:
        steps.append("created the cluster")
    if report.started:
        steps.append("started it")
    if report.schema.database_created:
        steps.append(f"created database {report.logins.admin.dbname}")
    if report.schema.pgstac_before != report.schema.pgstac_version:
        steps.append(f"installed pgstac {report.schema.pgstac_version}")
    console.print(
        f"[green]Database up[/] at {report.logins.writer.redacted()}: {', '.join(steps)}."
    )
    return report


def database_down(settings: DatabaseSettings) -> None:
    """Stop the embedded cluster (its data stays); an external database is left alone."""
    if settings.external:
        console.print("An external database is configured; tilekeeper does not stop it.")
        return
    console.print("Stopped." if bring_down(settings) else "Not running.")


@app.command("up")
@friendly_errors
def up() -> None:
    """Create (first time), start and migrate the database. A second run changes nothing.

    With TILEKEEPER_DB_DSN or PGHOST set, the external database is migrated instead and
    the embedded cluster is not used.
    """
    database_up(DatabaseSettings())


@app.command("down")
@friendly_errors
def down() -> None:
    """Stop the embedded cluster (its data stays)."""
    database_down(DatabaseSettings())


@app.command("status")
@friendly_errors
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show whether the database exists and runs, and where."""
    settings = DatabaseSettings()
    info: dict[str, Any]
    if settings.external:
        info = {"mode": "external", "url": resolve_logins(settings).writer.redacted()}
    else:
        cluster = EmbeddedCluster(settings).status()
        info = {
            "mode": "embedded",
            "data_dir": str(cluster.data_dir),
            "initialized": cluster.initialized,
            "running": cluster.running,
            "pid": cluster.pid,
            "port": cluster.port,
        }
    if as_json:
        console.print_json(json.dumps(info))
        return
    table = Table(show_header=False)
    for key, value in info.items():
        table.add_row(key, str(value))
    console.print(table)
    if info.get("initialized") is False:
        console.print("Run `tilekeeper db up` to create it.")


@app.command("url")
@friendly_errors
def url(
    role: str = typer.Option("writer", help="Which login: writer, reader or admin."),
) -> None:
    """Print a connection URL (with password) for psql or other tools."""
    logins = resolve_logins(DatabaseSettings())
    choices = {"writer": logins.writer, "reader": logins.reader, "admin": logins.admin}
    if role not in choices:
        raise typer.BadParameter(f"role must be one of {', '.join(choices)}")
    print(choices[role].dsn)


class _StepLines(logging.Handler):
    """Each step the backup module logs: a line with the time so far, and the spinner's
    text until the next one."""

    def __init__(self, status: Status) -> None:
        super().__init__(logging.INFO)
        self.status = status
        self.started = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        console.print(f"[dim]{time.monotonic() - self.started:6.1f} s[/] {message}")
        self.status.update(message)


@contextmanager
def _steps(first: str) -> Iterator[None]:
    logger = logging.getLogger("catalog_service.database")
    with console.status(first) as status:
        handler, level = _StepLines(status), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _counted(counts: CatalogueCounts) -> str:
    return (
        f"{counts.campaigns} campaigns, {counts.collections} collections, {counts.items} "
        f"items, {counts.history_rows} job history rows"
    )


@app.command("backup")
@friendly_errors
def backup(
    file: Path = typer.Argument(..., help="The archive to write (pg_dump custom format)."),
) -> None:
    """Back up the catalogue (campaigns, tile jobs, their history, product records, API
    keys) to FILE while the service runs: one consistent snapshot. Not the product files:
    back up the product store as well (docs/operations.md, Backups)."""
    with _steps(f"Backing up the catalogue to {file}..."):
        report = backup_database(DatabaseSettings(), file)
    console.print(
        f"[green]Backed up[/] {_counted(report.counts)} (pgstac {report.pgstac_version}) to "
        f"{report.path}: {report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s."
    )


@app.command("restore")
@friendly_errors
def restore(
    file: Path = typer.Argument(..., help="A backup made by `tilekeeper db backup`."),
    yes: bool = typer.Option(
        False, "--yes", help="Replace the catalogue even when it holds campaigns."
    ),
) -> None:
    """Replace the catalogue by the backup FILE, all or nothing: a failed restore leaves
    the catalogue as it was. The database (or embedded cluster) is made when missing.
    Stop runners first: what they write meanwhile is lost."""
    settings = DatabaseSettings()
    campaigns = existing_campaigns(settings)
    if campaigns and not yes:
        shown = ", ".join(campaigns[:5]) + (", ..." if len(campaigns) > 5 else "")
        raise ConfigurationError(
            f"The catalogue holds {len(campaigns)} campaigns ({shown}); a restore replaces "
            "them all. Back it up first (`tilekeeper db backup FILE`), then run again with --yes."
        )
    with _steps(f"Restoring the catalogue from {file}..."):
        report = restore_database(settings, file)
    console.print(
        f"[green]Restored[/] {_counted(report.counts)} (pgstac {report.pgstac_version}) from "
        f"{report.source} in {report.seconds:.1f} s; it replaced {_counted(report.replaced)}."
    )
    if report.admin_key:
        console.print(
            f"The backup did not know this machine's admin API key: a new one is in "
            f"{report.admin_key}."
        )
