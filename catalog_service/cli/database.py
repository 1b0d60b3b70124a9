"""`tilekeeper db ...`: the catalogue database. ``database_up`` and ``database_down`` are
the commands' work as plain functions, for other commands (the demo) to call."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from catalog_service.cli.errors import friendly_errors
from catalog_service.database import (
    EmbeddedCluster,
    UpReport,
    bring_down,
    bring_up,
    resolve_logins,
)
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
