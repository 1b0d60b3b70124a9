"""No Docker engine runs here: check that the deployment files parse and name what the
app reads, so they do not rot."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from catalog_service.database.cluster import API_WORKER_CONNECTIONS
from catalog_service.settings import ApiSettings, AuthSettings, DatabaseSettings

ROOT = Path(__file__).resolve().parents[1]


def _known_env() -> set[str]:
    names = set()
    for cls in (ApiSettings, AuthSettings, DatabaseSettings):
        prefix = cls.model_config["env_prefix"]
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields}
    return names


def test_compose_parses_and_wires_the_api_to_the_database() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "migrate", "api"} <= set(services)
    api = services["api"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    env = api["environment"]
    # The API connects with the service logins `migrate` creates, never as the superuser.
    assert env["TILEKEEPER_DB_DSN"].startswith("postgresql://tilekeeper_writer:")
    assert env["TILEKEEPER_DB_READ_DSN"].startswith("postgresql://tilekeeper_reader:")
    assert "@db:5432/" in env["TILEKEEPER_DB_DSN"]
    migrate = services["migrate"]["environment"]
    assert {"TILEKEEPER_DB_WRITER_PASSWORD", "TILEKEEPER_DB_READER_PASSWORD"} <= set(migrate)
    assert "ports" not in services["db"]  # PostgreSQL is not published
    # Forwarded headers are trusted from the proxy only, not from anyone; by default from
    # nobody (the port is published, no proxy in front).
    assert "*" not in env["TILEKEEPER_API_FORWARDED_ALLOW_IPS"]
    assert env["TILEKEEPER_API_FORWARDED_ALLOW_IPS"] == "${TILEKEEPER_API_FORWARDED_ALLOW_IPS:-}"
    assert "pgstac:v0.10.0" in services["db"]["image"]
    assert "jit=off" in services["db"]["command"]
    tilekeeper_vars = {
        k
        for s in ("api", "migrate")
        for k in services[s]["environment"]
        if k.startswith("TILEKEEPER_")
    }
    unknown = tilekeeper_vars - _known_env()
    assert not unknown, f"compose sets variables the app does not read: {unknown}"


def test_compose_restarts_the_api_and_its_workers_fit_the_database() -> None:
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    api = services["api"]
    # Inside the container the supervisor replaces a dead worker; Docker restarts the
    # container when the supervisor itself ends.
    assert api["restart"] in ("unless-stopped", "always")
    assert api["command"] == ["tilekeeper", "serve"]
    workers = re.fullmatch(
        r"\$\{TILEKEEPER_API_WORKERS:-(\d+)\}", api["environment"]["TILEKEEPER_API_WORKERS"]
    )
    assert workers, "the compose file caps the workers (the host's cores may not fit)"
    limit = re.search(r"max_connections=(\d+)", services["db"]["command"])
    assert limit
    # Every default worker at its peak, plus `migrate` and a few for psql and backups.
    assert int(workers[1]) * API_WORKER_CONNECTIONS + 10 <= int(limit[1])


def test_dockerfile_installs_pinned_and_serves() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile
    assert re.search(r'CMD \["tilekeeper", "serve"\]', dockerfile)
    copied = re.findall(r"^COPY (.+) \./", dockerfile, flags=re.M)
    for entry in " ".join(copied).split():
        assert (ROOT / entry).exists(), f"Dockerfile copies missing {entry}"
