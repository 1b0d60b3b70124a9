"""The `tilekeeper` command. It parses arguments, calls the domain or the Python API and
renders the result; errors become one red line that says what to do."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from catalog_service.cli.auth import app as auth_app
from catalog_service.cli.campaign import app as campaign_app
from catalog_service.cli.demo import demo
from catalog_service.cli.errors import friendly_errors
from catalog_service.database import (
    EmbeddedCluster,
    UpReport,
    bring_down,
    bring_up,
    resolve_logins,
)
from catalog_service.settings import ApiSettings, AuthSettings, DatabaseSettings, ProductSettings
from ingest import cli as ingest_cli

console = Console()

app = typer.Typer(
    help="tilekeeper: a STAC catalogue and job tracker for openEO production campaigns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="The catalogue database (embedded PostgreSQL + PostGIS + pgstac).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(campaign_app, name="campaign")
app.add_typer(auth_app, name="auth")
app.command("ingest")(ingest_cli.ingest)
app.command("export")(ingest_cli.export)


@app.callback()
def main(
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        help="API key (or OIDC / openEO bearer token) to send [TILEKEEPER_API_KEY]; "
        "default: the admin key of `tilekeeper db up`, for a service on this machine.",
        show_default=False,
    ),
) -> None:
    """tilekeeper: a STAC catalogue and job tracker for openEO production campaigns."""
    if api_key:
        # The environment carries it to every client, including runner children.
        os.environ["TILEKEEPER_API_KEY"] = api_key


@db_app.command("up")
@friendly_errors
def db_up() -> UpReport:
    """Create (first time), start and migrate the database. A second run changes nothing.

    With TILEKEEPER_DB_DSN or PGHOST set, the external database is migrated instead and
    the embedded cluster is not used.
    """
    settings = DatabaseSettings()
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


@db_app.command("down")
@friendly_errors
def db_down() -> None:
    """Stop the embedded cluster (its data stays)."""
    settings = DatabaseSettings()
    if settings.external:
        console.print("An external database is configured; tilekeeper does not stop it.")
        return
    console.print("Stopped." if bring_down(settings) else "Not running.")


@db_app.command("status")
@friendly_errors
def db_status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show whether the database exists and runs, and where."""
    settings = DatabaseSettings()
    info: dict[str, Any]
    if settings.external:
        info = {"mode": "external", "url": resolve_logins(settings).writer.redacted()}
    else:
        status = EmbeddedCluster(settings).status()
        info = {
            "mode": "embedded",
            "data_dir": str(status.data_dir),
            "initialized": status.initialized,
            "running": status.running,
            "pid": status.pid,
            "port": status.port,
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


@db_app.command("url")
@friendly_errors
def db_url(
    role: str = typer.Option("writer", help="Which login: writer, reader or admin."),
) -> None:
    """Print a connection URL (with password) for psql or other tools."""
    logins = resolve_logins(DatabaseSettings())
    choices = {"writer": logins.writer, "reader": logins.reader, "admin": logins.admin}
    if role not in choices:
        raise typer.BadParameter(f"role must be one of {', '.join(choices)}")
    print(choices[role].dsn)


@app.command("serve")
@friendly_errors
def serve(
    host: str | None = typer.Option(None, help="Address to bind [TILEKEEPER_API_HOST]."),
    port: int | None = typer.Option(None, help="Port to bind [TILEKEEPER_API_PORT]."),
    workers: int | None = typer.Option(
        None,
        min=1,
        help="Worker processes [TILEKEEPER_API_WORKERS; default: the cores this process "
        "may use]. Each has its own database pools.",
    ),
) -> None:
    """Serve the STAC API (the database may still be coming up; it connects when it can).

    The workers run under a supervisor that replaces one that dies
    (a crash, kill -9, the OOM killer) or hangs, while the others keep
    serving. SIGTERM or Ctrl-C stops them all; SIGHUP replaces them one
    by one."""
    from catalog_service.api.supervisor import serve as supervise

    settings = ApiSettings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    if workers:
        settings.workers = workers
    # Settings the workers will read, checked once here: a mistake is one clear line
    # instead of every worker failing.
    resolve_logins(DatabaseSettings())
    AuthSettings()
    ProductSettings()
    console.print(
        f"Serving the tilekeeper STAC API on http://{settings.host}:{settings.port}/ "
        f"with {settings.workers} worker{'s' if settings.workers != 1 else ''}"
    )
    supervise(settings)


app.command("demo")(friendly_errors(demo))
