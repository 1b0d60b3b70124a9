"""No Docker engine runs here: check that the deployment files parse and name what the
app reads, so they do not rot.

The compose file is validated against the Compose Specification's JSON schema
(docker/compose-spec.schema.json: schema/compose-spec.json of compose-spec/compose-go at
commit e70e961c, Apache-2.0, the schema `docker compose` itself validates with), and with
`docker compose config -q` where the compose plugin is installed (the docker CLI here has
none: that test is skipped). The proxy's nginx template is rendered as scripts/cluster.sh
renders it and checked by Debian's nginx (`nginx -t`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from catalog_service.database.cluster import API_WORKER_CONNECTIONS
from catalog_service.settings import (
    ApiSettings,
    AuthSettings,
    ClientSettings,
    DatabaseSettings,
    ProductSettings,
    RasterSettings,
    RunnerSettings,
)

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
TEMPLATE = ROOT / "docker" / "nginx.conf.template"
# What the compose file requires from .env (its `:?` variables).
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "p",
    "TILEKEEPER_WRITER_PASSWORD": "w",
    "TILEKEEPER_READER_PASSWORD": "r",
    "TILEKEEPER_REPLICATION_PASSWORD": "x",
}


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _known_env() -> set[str]:
    names = set()
    for cls in (
        ApiSettings,
        AuthSettings,
        DatabaseSettings,
        ClientSettings,
        ProductSettings,
        RasterSettings,
        RunnerSettings,
    ):
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
    assert "@db-replica:5432/" in env["TILEKEEPER_DB_READ_DSN"]  # reads from the standby
    migrate = services["migrate"]["environment"]
    assert {"TILEKEEPER_DB_WRITER_PASSWORD", "TILEKEEPER_DB_READER_PASSWORD"} <= set(migrate)
    assert "ports" not in services["db"]  # PostgreSQL is not published
    # Forwarded headers are trusted from the proxy only (its fixed address), not from
    # anyone; the APIs' ports are not published, only the proxy's.
    assert "*" not in env["TILEKEEPER_API_FORWARDED_ALLOW_IPS"]
    proxy_ip = services["proxy"]["networks"]["default"]["ipv4_address"]
    assert env["TILEKEEPER_API_FORWARDED_ALLOW_IPS"] == (
        f"${{TILEKEEPER_API_FORWARDED_ALLOW_IPS:-{proxy_ip}}}"
    )
    assert "ports" not in api and "ports" not in services["api-2"]
    assert "pgstac:v0.10.0" in services["db"]["image"]
    assert "jit=off" in services["db"]["command"]
    tilekeeper_vars = {
        k
        for s in ("api", "api-2", "migrate", "worker")
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
    # Every default worker of both APIs at its peak, plus `migrate` and a few for psql,
    # backups and the replica's stream.
    apis = [name for name, service in services.items() if service.get("command") == api["command"]]
    assert apis == ["api", "api-2"]
    assert len(apis) * int(workers[1]) * API_WORKER_CONNECTIONS + 10 <= int(limit[1])


def test_dockerfile_installs_pinned_and_serves() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile
    assert re.search(r'CMD \["tilekeeper", "serve"\]', dockerfile)
    copied = re.findall(r"^COPY (.+) \./", dockerfile, flags=re.M)
    for entry in " ".join(copied).split():
        assert (ROOT / entry).exists(), f"Dockerfile copies missing {entry}"


def test_compose_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "docker" / "compose-spec.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{e.json_path}: {e.message[:200]}"
        for e in validator.iter_errors(yaml.safe_load(COMPOSE.read_text()))
    ]
    assert not errors, errors


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    done = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    env = dict(os.environ, **REQUIRED_ENV)
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--profile", "runner", "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _template_variables() -> set[str]:
    return set(re.findall(r"\$\{(TK_[A-Z0-9_]+)\}", TEMPLATE.read_text()))


def test_the_proxy_is_the_template_scripts_cluster_renders() -> None:
    services = _services()
    proxy = services["proxy"]
    assert (
        "./nginx.conf.template:/etc/nginx/templates/tilekeeper.conf.template:ro"
        in (proxy["volumes"])
    )
    # The template's every variable is set, and nothing else.
    assert set(proxy["environment"]) == _template_variables()
    # Both APIs are upstream servers, and the prefix is the APIs' root path.
    assert {proxy["environment"]["TK_API_1"], proxy["environment"]["TK_API_2"]} == {
        "api:8080",
        "api-2:8080",
    }
    assert (
        proxy["environment"]["TK_PREFIX"]
        == (services["api"]["environment"]["TILEKEEPER_API_ROOT_PATH"])
    )
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    script = (ROOT / "scripts" / "cluster.sh").read_text()
    assert "docker/nginx.conf.template" in script
    for name in _template_variables():  # the script sets and substitutes each one
        assert f"{name}=" in script and f"\\${{{name}}}" in script, name
    # Failover for idempotent requests only, not on 503 (the APIs share the database that
    # answers it: nginx took both out for 10 s, bench/drills.py); passive health checks.
    template = TEMPLATE.read_text()
    assert "proxy_next_upstream error timeout http_502 http_504;" in template
    assert "non_idempotent" not in template.replace("`non_idempotent`", "")
    assert template.count("max_fails=") == 2


def test_the_replica_and_the_runner_services() -> None:
    services = _services()
    replica = services["db-replica"]
    assert replica["image"] == services["db"]["image"]
    assert replica["depends_on"]["db"]["condition"] == "service_healthy"
    assert "ports" not in replica
    entrypoint = (ROOT / "docker" / "replica-entrypoint.sh").read_text()
    assert "pg_basebackup" in entrypoint and " -R " in entrypoint
    assert (
        "./primary-init.sh:/docker-entrypoint-initdb.d/90-replication.sh:ro"
        in (services["db"]["volumes"])
    )
    assert "readonly" in " ".join(services["migrate"]["command"])  # pgstac on the standby
    worker = services["worker"]
    assert worker["profiles"] == ["runner"]
    assert "tilekeeper campaign run" in " ".join(worker["command"])
    assert "$$CAMPAIGN_ID" in " ".join(worker["command"])
    assert worker["environment"]["CAMPAIGN_ID"] == "${TILEKEEPER_CAMPAIGN:-}"
    env = worker["environment"]
    assert env["TILEKEEPER_API_URL"].startswith("${TILEKEEPER_RUNNER_API_URL:-https://proxy:")
    assert env["REQUESTS_CA_BUNDLE"].endswith("ca.crt")
    assert "deploy" not in worker or "replicas" not in worker["deploy"]  # --scale worker=N


@pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed",
)
def test_nginx_accepts_the_rendered_template(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(tmp_path / "server.key"),
         "-out", str(tmp_path / "server.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    values = {
        "TK_LISTEN": "127.0.0.1:1",
        "TK_SERVER_NAME": "localhost",
        "TK_PUBLIC_PORT": "1",
        "TK_PREFIX": "/tk",
        "TK_TLS_CERT": str(tmp_path / "server.crt"),
        "TK_TLS_KEY": str(tmp_path / "server.key"),
        "TK_API_1": "127.0.0.1:2",
        "TK_API_2": "127.0.0.1:3",
    }
    assert set(values) == _template_variables()
    rendered = TEMPLATE.read_text()
    for name, value in values.items():
        rendered = rendered.replace(f"${{{name}}}", value)
    (tmp_path / "tilekeeper.conf").write_text(rendered)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ include {tmp_path}/tilekeeper.conf; }}\n"
    )
    done = subprocess.run(
        [nginx, "-t", "-q", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
