"""API keys: ``tk_<id>.<secret>``, shown once; the catalogue keeps only the token's
sha2-256, with the key's name, scopes, expiry and revocation. A random 256-bit secret
needs no slow hash: nothing can be guessed from its digest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

from catalog_service.private_files import write_private
from catalog_service.settings import DatabaseSettings

# What a key may write. ``admin`` is every scope.
SCOPES = ("stac:write", "campaigns:write", "products:write", "admin")
PREFIX = "tk_"
ADMIN_KEY_NAME = "admin"


class KeyRefused(Exception):
    """A key that cannot be made as asked (unknown scope)."""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    scopes: list[str]
    created: datetime
    expires: datetime | None
    revoked: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": self.scopes,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "revoked": self.revoked.isoformat() if self.revoked else None,
        }


@dataclass(frozen=True)
class Identity:
    """Who a request comes from, as the history records it."""

    name: str
    key_id: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(
    conn: psycopg.Connection[Any], name: str, scopes: list[str], expires: datetime | None
) -> tuple[KeyInfo, str]:
    """A new key; returns it and its token (the only time the token is seen)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise KeyRefused(
            f"scopes must be among {', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})"
        )
    key_id = secrets.token_hex(4)
    token = f"{PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
    row = conn.execute(
        "INSERT INTO tilekeeper.api_keys (id, name, secret_sha256, scopes, expires) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING created",
        [key_id, name, digest(token), sorted(set(scopes)), expires],
    ).fetchone()
    assert row is not None
    return KeyInfo(key_id, name, sorted(set(scopes)), row[0], expires, None), token


def list_keys(conn: psycopg.Connection[Any]) -> list[KeyInfo]:
    rows = conn.execute(
        "SELECT id, name, scopes, created, expires, revoked FROM tilekeeper.api_keys "
        "ORDER BY created"
    ).fetchall()
    return [KeyInfo(r[0], r[1], list(r[2]), r[3], r[4], r[5]) for r in rows]


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> bool:
    """Revoke a key now; False when there is no such (unrevoked) key."""
    row = conn.execute(
        "UPDATE tilekeeper.api_keys SET revoked = now() WHERE id = %s AND revoked IS NULL "
        "RETURNING id",
        [key_id],
    ).fetchone()
    return row is not None


_VALID = (
    "SELECT 1 FROM tilekeeper.api_keys WHERE secret_sha256 = %s AND revoked IS NULL "
    "AND (expires IS NULL OR expires > now())"
)


def admin_key_path(settings: DatabaseSettings) -> Path | None:
    """Where `tilekeeper db up` keeps the installation's admin key (mode 0600), for the
    CLI and the Python API on this machine; None for an external database unless
    configured (the embedded data directory is not used then)."""
    if settings.admin_key_file is not None:
        return settings.admin_key_file
    return None if settings.external else settings.data_dir / "admin-key"


def ensure_admin_key(conn: psycopg.Connection[Any], path: Path) -> bool:
    """Keep a valid admin key in ``path``: a new one when the file is missing or its key
    was revoked or expired. Returns True when a key was made."""
    if path.is_file():
        token = path.read_text().strip()
        if conn.execute(_VALID, [digest(token)]).fetchone() is not None:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    _, token = create_key(conn, ADMIN_KEY_NAME, ["admin"], None)
    write_private(path, token + "\n")
    return True


_IDENTIFY = """
SELECT id, name, scopes FROM tilekeeper.api_keys
WHERE secret_sha256 = $1 AND revoked IS NULL AND (expires IS NULL OR expires > now())
"""


async def identify(conn: asyncpg.Connection, token: str) -> Identity | None:
    """The identity of a valid (known, unexpired, unrevoked) token, else None."""
    if not token.startswith(PREFIX):
        return None
    row = await conn.fetchrow(_IDENTIFY, digest(token))
    if row is None:
        return None
    return Identity(f"key:{row['name']}", row["id"], frozenset(row["scopes"]))
