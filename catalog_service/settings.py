"""Settings, one pydantic-settings class per concern, all under the ``TILEKEEPER_`` prefix.

Longer than 400 lines on purpose: eight small classes of declarations, kept in one place
so that every setting is found here and docs/configuration.md is generated from one
module (scripts/settings_doc.py)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[Sequence[str], BeforeValidator(_split_commas), NoDecode]


def _root_path(value: Any) -> str:
    """``/stac``: a leading slash, no trailing one (``/stac/`` redirected ``/stac/`` to
    ``/stac//`` forever and every route answered 404), plain path segments only."""
    text = str(value or "").strip().strip("/")
    if not text:
        return ""
    for segment in text.split("/"):
        if segment in ("", ".", "..") or not all(c.isalnum() or c in "-._~" for c in segment):
            raise ValueError(
                f"root_path {value!r} must be a plain path such as /stac "
                "(letters, digits, '-', '.', '_', '~' between slashes; no . or .. segments)"
            )
    return f"/{text}"


RootPath = Annotated[str, BeforeValidator(_root_path)]
# Docker and Kubernetes secrets: a file per setting, named like its variable
# (e.g. /run/secrets/tilekeeper_db_writer_password), read where the folder exists.
SECRETS_DIR = "/run/secrets" if Path("/run/secrets").is_dir() else None


def default_data_dir() -> Path:
    """Where the embedded cluster lives unless configured.

    As root the server runs as another OS user, which cannot enter /root, so root's
    default is a system path; everybody else gets an XDG per-user path.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/tilekeeper")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "tilekeeper"


def default_workers() -> int:
    """The cores this process may use: its CPU affinity (cpusets, taskset), capped by a
    cgroup CPU quota (a container's ``--cpus``), which os.cpu_count() does not see."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores or 1, math.ceil(quota))
    return max(1, cores or 1)


def _cgroup_cpu_quota() -> float | None:
    """CPUs the cgroup's quota allows (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


class DatabaseSettings(BaseSettings):
    """Where the catalogue's PostgreSQL is: the embedded cluster, or an external one.

    Setting ``TILEKEEPER_DB_DSN`` (or the standard ``PGHOST``) selects an external
    PostgreSQL with PostGIS; the embedded cluster is then never touched.
    """

    model_config = SettingsConfigDict(
        env_prefix="TILEKEEPER_DB_", extra="ignore", secrets_dir=SECRETS_DIR
    )

    dsn: str | None = Field(
        default=None,
        description="External PostgreSQL DSN with write rights (and, for `db up`, admin rights).",
    )
    read_dsn: str | None = Field(
        default=None, description="External DSN for the read pool; defaults to `dsn`."
    )
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Embedded cluster directory."
    )
    host: str = Field(default="127.0.0.1", description="Address the embedded cluster listens on.")
    port: int = Field(default=55432, description="Port of the embedded cluster.")
    name: str = Field(default="tilekeeper", description="Database name.")
    os_user: str = Field(
        default="postgres",
        description="OS user that runs the embedded server when tilekeeper runs as root.",
    )
    pg_bin: Path | None = Field(
        default=None, description="PostgreSQL binaries; found automatically when unset."
    )
    shared_buffers: str = Field(default="256MB", description="Embedded server shared_buffers.")
    writer_password: SecretStr | None = Field(
        default=None,
        description="External database: `db up` creates (or updates) the tilekeeper_writer "
        "login with this password, for the API to connect as instead of the superuser.",
    )
    reader_password: SecretStr | None = Field(
        default=None, description="External database: the same for the tilekeeper_reader login."
    )
    admin_key_file: Path | None = Field(
        default=None,
        description="Where `db up` keeps an admin API key (mode 0600). Default: "
        "`<data_dir>/admin-key` for the embedded cluster; none for an external database.",
    )

    @property
    def external(self) -> bool:
        """True when an external PostgreSQL is configured (DSN or PG* variables)."""
        return bool(self.dsn) or bool(os.environ.get("PGHOST"))


class ApiSettings(BaseSettings):
    """The HTTP service."""

    model_config = SettingsConfigDict(env_prefix="TILEKEEPER_API_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address `tilekeeper serve` binds.")
    port: int = Field(default=8080, description="Port `tilekeeper serve` binds.")
    workers: int = Field(
        default_factory=default_workers,
        ge=1,
        description="Worker processes of `tilekeeper serve`, each with its own pools; a "
        "supervisor replaces one that dies. Default: the cores this process may use.",
    )
    require_keys: bool = Field(
        default=True,
        description="Writes need a credential with the route's scope (one presented is "
        "always checked). Off only for a throw-away service on a trusted machine.",
    )
    title: str = Field(default="tilekeeper", description="Landing page title.")
    description: str = Field(
        default="STAC catalogue and job tracking for openEO production campaigns",
        description="Landing page description.",
    )
    root_path: RootPath = Field(
        default="", description="Path prefix when served behind a reverse proxy (e.g. /stac)."
    )
    cors_origins: CommaList = Field(
        default=("*",), description="Origins allowed to read (and, with auth, write)."
    )
    cors_methods: CommaList = Field(
        default=("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"),
        description="Methods allowed cross-origin.",
    )
    cors_headers: CommaList = Field(
        default=("Content-Type", "Authorization", "X-API-Key", "If-Match"),
        description="Request headers allowed cross-origin.",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Addresses of the reverse proxies whose Forwarded and X-Forwarded-* "
        "headers are trusted (comma list of IPs or networks, or *); empty: nobody's, the "
        "headers are dropped.",
    )
    browser_dir: Path | None = Field(
        default=None,
        description="STAC Browser's build, served at /browser/ (default: web/stac-browser/dist "
        "of the checkout, made by scripts/build_web.sh).",
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest request body (413 above it): 100,000 tiles of a registration "
        "are ~35 MB.",
    )
    max_string_chars: int = Field(
        default=100_000,
        ge=1_000,
        description="Longest string (description, property, ...) a write may store.",
    )
    max_ids: int = Field(default=10_000, ge=1, description="Most ids one search may list.")
    max_filter_terms: int = Field(
        default=1_000, ge=10, description="Most terms (JSON nodes) of one CQL2 filter."
    )
    max_expression_chars: int = Field(
        default=20_000,
        ge=100,
        description="Longest expression parameter of a GET (filter, intersects, sortby, "
        "fields, ids, ...); longer searches go by POST.",
    )
    max_expression_depth: int = Field(
        default=40,
        ge=4,
        le=200,
        description="Deepest nesting of brackets in a filter, geometry or other expression, "
        "checked before it is parsed (a parser that recurses must never see thousands).",
    )
    max_sort_fields: int = Field(default=10, ge=1, description="Most sortby fields of a search.")
    max_fields: int = Field(default=100, ge=1, description="Most entries of a search's fields.")
    max_geometry_values: int = Field(
        default=200_000,
        ge=100,
        description="Most JSON values (numbers, arrays, keys) of a search's intersects "
        "geometry (100,000 vertices); a million pushed PostgreSQL past its jsonb limit.",
    )
    pool_size: int = Field(default=8, description="Connections per pool (read and write).")
    statement_timeout_ms: int = Field(
        default=20_000, description="Per-statement timeout (503 at once when exceeded)."
    )
    lock_timeout_ms: int = Field(default=10_000, description="Per-statement lock wait limit.")
    retry_attempts: int = Field(
        default=6, description="Tries for a request that hits a transient database error."
    )
    retry_after_s: int = Field(default=2, description="Retry-After sent with a 503.")
    connect_retry_s: float = Field(
        default=1.0, description="Pause between attempts to reach the database at start-up."
    )


class AuthSettings(BaseSettings):
    """Who may call the service besides API keys: OIDC bearer tokens (JWTs) of one
    issuer, also as the openEO bearer ``oidc/<provider>/<token>`` of an openEO session."""

    model_config = SettingsConfigDict(
        env_prefix="TILEKEEPER_AUTH_", extra="ignore", secrets_dir=SECRETS_DIR
    )

    oidc_issuer: str | None = Field(
        default=None,
        description="Issuer whose tokens are accepted (its `iss`), e.g. "
        "https://identity.dataspace.copernicus.eu/auth/realms/CDSE. Unset: no OIDC.",
    )
    oidc_jwks_url: str | None = Field(
        default=None,
        description="The issuer's key set; default: `jwks_uri` of its "
        "/.well-known/openid-configuration.",
    )
    oidc_audiences: CommaList = Field(
        default=(), description="Accepted `aud` values (required with an issuer)."
    )
    oidc_scope_claims: CommaList = Field(
        default=("scope", "roles", "realm_access.roles", "groups"),
        description="Claims (dotted paths) whose values grant scopes: a value equal to a "
        "scope, or to the prefix + a scope.",
    )
    oidc_scope_prefix: str = Field(
        default="tilekeeper:", description="Prefix of scope values in those claims."
    )
    oidc_name_claim: str = Field(
        default="sub", description="Claim naming the identity (history: `oidc:<value>`)."
    )
    oidc_leeway_s: int = Field(default=60, ge=0, description="Clock skew allowed on exp/nbf.")
    oidc_algorithms: CommaList = Field(
        default=("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"),
        description="Signature algorithms accepted (never `none` or HMAC).",
    )


class ClientSettings(BaseSettings):
    """Where the CLI and the Python API find the service."""

    model_config = SettingsConfigDict(env_prefix="TILEKEEPER_", extra="ignore")

    api_url: str = Field(
        default="http://127.0.0.1:8080/", description="The tilekeeper API the CLI talks to."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The API key (or OIDC / openEO bearer token) the CLI and the Python API "
        "send. Default: the admin key of `tilekeeper db up`, for a service on this machine.",
    )
    api_key_file: Path | None = Field(
        default=None, description="A file holding that key, read when TILEKEEPER_API_KEY is unset."
    )


class ProductSettings(BaseSettings):
    """Where products (COGs and previews) are stored, for the ingest engine that writes
    them and the API that serves the local store."""

    model_config = SettingsConfigDict(env_prefix="TILEKEEPER_PRODUCTS_", extra="ignore")

    store: str | None = Field(
        default=None,
        description="A local directory, or s3://bucket/prefix for S3-compatible object "
        "storage (credentials from the AWS_* variables). Default: <database data_dir>/products.",
    )
    s3_endpoint: str | None = Field(
        default=None, description="Endpoint of an S3-compatible server (MinIO, Ceph, ...)."
    )
    s3_region: str = Field(default="us-east-1", description="Region of the bucket.")
    public_url: str | None = Field(
        default=None,
        description="Base URL under which the object store's products are readable; "
        "default: the endpoint's path-style URL of the bucket.",
    )

    def local_dir(self) -> Path | None:
        """The local store's directory, or None for object storage."""
        if self.store and "://" in self.store:
            return None
        return Path(self.store) if self.store else DatabaseSettings().data_dir / "products"

    def public_base(self) -> str | None:
        """The base URL of the object store's product hrefs (None for the local store,
        whose files the API serves)."""
        if not self.store or "://" not in self.store:
            return None
        bucket_path = self.store.split("://", 1)[1]
        if self.public_url:
            return self.public_url
        if self.s3_endpoint:
            return f"{self.s3_endpoint.rstrip('/')}/{bucket_path}"
        bucket, _, prefix = bucket_path.partition("/")
        return f"https://{bucket}.s3.{self.s3_region}.amazonaws.com/{prefix}".rstrip("/")


class RasterSettings(BaseSettings):
    """The raster service's campaign overviews: a pyramid per product collection that
    answers the zooms where one map tile would open dozens of products (raster/overview.py)."""

    model_config = SettingsConfigDict(env_prefix="TILEKEEPER_RASTER_", extra="ignore")

    overviews: bool = Field(
        default=True,
        description="Answer low zooms from the collections' overviews and keep these up to "
        "date as products land (false: every zoom reads the products, as titiler-pgstac does).",
    )
    overview_dir: Path | None = Field(
        default=None,
        description="Where the overviews are kept (the API's own disk, or one every API "
        "process shares). Default: <database data_dir>/overviews.",
    )
    overview_interval_s: float = Field(
        default=20.0,
        gt=0,
        description="How often the API looks for products its overviews have not taken in yet.",
    )

    def folder(self, data_dir: Path | None = None) -> Path:
        """The overview folder: as set, else beside the database's data."""
        return self.overview_dir or (data_dir or DatabaseSettings().data_dir) / "overviews"


class EgressSettings(BaseSettings):
    """What tilekeeper may fetch at URLs it is given (webhooks, back-ends, process
    namespaces, documents and files to ingest or harvest): http(s) only, never a
    link-local, cloud metadata, unspecified, multicast, broadcast or reserved address;
    this machine and private networks only when allowed here (see catalog_service/egress.py).
    """

    model_config = SettingsConfigDict(env_prefix="TILEKEEPER_EGRESS_", extra="ignore")

    allow_loopback: bool = Field(
        default=False,
        description="Let URLs lead to this machine (127.0.0.0/8, ::1, localhost): local openEO "
        "back-ends and webhook receivers, as the demo and the tests have.",
    )
    allow_private: bool = Field(
        default=False,
        description="Let URLs lead to private networks: 10/8, 172.16/12, 192.168/16, "
        "100.64/10, fc00::/7 and every other address that is not globally routable.",
    )
    allow_hosts: CommaList = Field(
        default=(),
        description="Host names or addresses (as written in the URL) that may lead to this "
        "machine or a private network although the two settings above are off, e.g. an "
        "internal openEO back-end. Never to the addresses refused always.",
    )
    max_redirects: int = Field(
        default=5,
        ge=0,
        le=30,
        description="Redirects followed per request, each hop checked again; webhooks follow none.",
    )


class RunnerSettings(BaseSettings):
    """How the runner talks to openEO back-ends, whose every answer is untrusted input
    (see catalog_service/runner/answers.py)."""

    model_config = SettingsConfigDict(env_prefix="TILEKEEPER_RUNNER_", extra="ignore")

    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a back-end to accept a connection."
    )
    request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds one request to a back-end may take in all (connecting, waiting and "
        "reading the whole answer); a slower answer counts as a fault of that back-end.",
    )
    max_answer_bytes: int = Field(
        default=16 << 20,
        gt=0,
        description="Largest answer read from a back-end's API (job lists, logs, results "
        "documents); a larger one counts as a fault. Result files have their own limit.",
    )
    unhealthy_after: int = Field(
        default=3,
        ge=1,
        description="Faults in a row (5xx, garbage, timeouts) after which a back-end is "
        "unhealthy: it gets no new tiles and is polled with backoff until it answers well.",
    )
    backoff_max_s: float = Field(
        default=600.0, gt=0, description="Longest wait between polls of an unhealthy back-end."
    )
    silent_job_timeout_s: float = Field(
        default=10800.0,
        gt=0,
        description="A tile whose back-end has given no valid answer about its job for this "
        "long ends in error (retried as the campaign's retry policy says).",
    )


class HarvestSettings(BaseSettings):
    """Limits on what a harvest downloads and converts: result files come from back-ends
    and are untrusted input (see ingest/download.py and ingest/rasters.py)."""

    model_config = SettingsConfigDict(env_prefix="TILEKEEPER_HARVEST_", extra="ignore")

    workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Harvests at once (downloads and conversions) per runner worker.",
    )
    max_file_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Largest result file downloaded. Default: derived from the tile's size "
        "(see max_raster_bytes), 1.5 times the raster limit.",
    )
    max_raster_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Largest raster (width x height x bands x bytes per sample, uncompressed) "
        "checked, converted or described. Default: the tile's area at 10 m per pixel, "
        "16 bands of 8 bytes, with the footprint tolerance; at least 256 MiB (8 GiB for files "
        "that belong to no tile).",
    )
    deadline_s: float = Field(
        default=1800.0, gt=0, description="Seconds one file's download may take in all."
    )
    min_rate_bytes_s: float = Field(
        default=16384.0,
        ge=0,
        description="Slowest download accepted, averaged over rate_window_s (0: no minimum).",
    )
    rate_window_s: float = Field(
        default=60.0, gt=0, description="The window over which the download rate is measured."
    )
    footprint_tolerance: float = Field(
        default=0.1,
        ge=0,
        description="How far a product may reach beyond its tile, as a fraction of the "
        "tile's size; a product further out fails its harvest.",
    )
    crs: str = Field(
        default="tile",
        pattern="^(tile|any)$",
        description="'tile': a product must be in its tile's CRS (proj:code); 'any': any CRS.",
    )
    retry_tries: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Tries of a tile's harvest within a run when it fails for a reason that may "
        "pass (429, 5xx, a time-out, a broken or truncated download); 1: no retry.",
    )
    retry_first_s: float = Field(
        default=2.0,
        ge=0,
        description="Seconds before the second try; each further wait doubles, with jitter.",
    )
    retry_max_s: float = Field(
        default=60.0, ge=0, description="The longest wait between two tries of a harvest."
    )
