"""`tilekeeper auth key create|list|revoke`: API keys, managed with the database's admin
login (the API never hands out keys)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from catalog_service.auth import keys
from catalog_service.cli.errors import friendly_errors
from catalog_service.database import resolve_logins
from catalog_service.settings import DatabaseSettings

console = Console()
app = typer.Typer(help="Who may write: API keys with scopes.", no_args_is_help=True)
key_app = typer.Typer(help="API keys (stored hashed; a key is shown once).", no_args_is_help=True)
app.add_typer(key_app, name="key")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(resolve_logins(DatabaseSettings()).admin.dsn, autocommit=True)


@key_app.command("create")
@friendly_errors
def create(
    name: str = typer.Argument(..., help="Who or what uses the key (recorded in the history)."),
    scope: list[str] = typer.Option(
        ..., "--scope", help=f"Repeatable: {', '.join(keys.SCOPES)} (admin: all)."
    ),
    expires_days: float | None = typer.Option(None, help="Days until the key expires."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Make a key and print its token: the only time it is shown."""
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    try:
        with _admin() as conn:
            info, token = keys.create_key(conn, name, scope, expires)
    except keys.KeyRefused as exc:
        raise typer.BadParameter(str(exc)) from exc
    if as_json:
        print(json.dumps({**info.as_dict(), "token": token}))
        return
    console.print(f"key {info.id} for {name}, scopes {', '.join(info.scopes)}")
    print(token)
    console.print(
        "Shown once: pass it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
        style="dim",
    )


@key_app.command("list")
@friendly_errors
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every key: id, name, scopes, created, expires, revoked (never the token)."""
    with _admin() as conn:
        found = keys.list_keys(conn)
    if as_json:
        print(json.dumps([k.as_dict() for k in found]))
        return
    table = Table("id", "name", "scopes", "created", "expires", "revoked")
    for k in found:
        row = k.as_dict()
        table.add_row(k.id, k.name, ", ".join(k.scopes), row["created"][:19],
                      (row["expires"] or "")[:19], (row["revoked"] or "")[:19])  # fmt: skip
    console.print(table)


@key_app.command("revoke")
@friendly_errors
def revoke(key_id: str = typer.Argument(..., help="The key's id (from `auth key list`).")) -> None:
    """Revoke a key now: its next request is refused (401)."""
    with _admin() as conn:
        if not keys.revoke_key(conn, key_id):
            console.print(f"[red]no key {key_id} to revoke[/red] (see `tilekeeper auth key list`)")
            raise typer.Exit(1)
    console.print(f"key {key_id} revoked")
