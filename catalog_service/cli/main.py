"""The `tilekeeper` command. It parses arguments, calls the domain or the Python API and
renders the result; errors become one red line that says what to do."""

from __future__ import annotations

import os

import typer
from rich.console import Console

from catalog_service.cli import ingest as ingest_cli
from catalog_service.cli.auth import app as auth_app
from catalog_service.cli.campaign import app as campaign_app
from catalog_service.cli.database import app as db_app
from catalog_service.cli.demo import demo
from catalog_service.cli.errors import friendly_errors
from catalog_service.database import resolve_logins
from catalog_service.settings import ApiSettings, AuthSettings, DatabaseSettings, ProductSettings

console = Console()

app = typer.Typer(
    help="tilekeeper: a STAC catalogue and job tracker for openEO production campaigns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
    # Lazy: the service's stack takes ~0.4 s to import; the other commands need none of it.
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
