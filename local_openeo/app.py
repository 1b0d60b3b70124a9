"""The back-end's Flask app: openeo-driver's openEO API layer over our batch jobs."""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, jsonify, request

from local_openeo.executor import NamespaceRefused
from local_openeo.settings import BackendSettings

log = logging.getLogger("local_openeo")


def _collections(stac_url: str, offered: list[str]) -> list[dict[str, Any]]:
    """The catalogue's collections as the openEO collection listing (read at start, every
    page), only those ``offered`` when it names any."""
    collections: list[dict[str, Any]] = []
    url: str | None = stac_url.rstrip("/") + "/collections?limit=1000"
    seen: set[str] = set()
    while url and url not in seen:
        seen.add(url)
        try:
            response = requests.get(url, timeout=30)
            response.raise_for_status()
        except requests.RequestException as exc:
            log.warning("cannot list collections at %s: %s", url, exc)
            break
        page = response.json()
        collections.extend(page.get("collections", []))
        url = next(
            (link.get("href") for link in page.get("links", []) if link.get("rel") == "next"),
            None,
        )
    return [
        c
        for c in collections
        if "tilekeeper:campaign" not in c and (not offered or c.get("id") in offered)
    ]


GTIFF = {
    "title": "GeoTIFF (cloud-optimized: one COG per date, or one if time was reduced)",
    "gis_data_types": ["raster"],
    "parameters": {},
}


def structural_errors(graph: dict[str, Any]) -> list[dict[str, str]]:
    """What can be checked without the user (``/validation`` is unauthenticated):
    every node names a process, references resolve, exactly one result node."""
    errors = []
    if not isinstance(graph, dict) or not graph:
        return [{"code": "ProcessGraphInvalid", "message": "the process graph is empty"}]
    results = [n for n, spec in graph.items() if isinstance(spec, dict) and spec.get("result")]
    if len(results) != 1:
        errors.append(
            {"code": "ProcessGraphInvalid", "message": f"{len(results)} result nodes, need 1"}
        )

    def refs(value: Any) -> list[str]:
        if isinstance(value, dict):
            if set(value) == {"from_node"}:
                return [value["from_node"]]
            if "process_graph" in value:
                return []  # a callback: its own scope
            return [r for v in value.values() for r in refs(v)]
        if isinstance(value, list):
            return [r for v in value for r in refs(v)]
        return []

    for node, spec in graph.items():
        if not isinstance(spec, dict) or not spec.get("process_id"):
            errors.append({"code": "ProcessGraphInvalid", "message": f"node {node}: no process_id"})
            continue
        for ref in refs(spec.get("arguments", {})):
            if ref not in graph:
                errors.append(
                    {"code": "ProcessGraphInvalid", "message": f"node {node}: unknown node {ref}"}
                )
    return errors


def _guard_namespace_fetches(settings: BackendSettings) -> None:
    """openeo-driver fetches a URL process namespace when a job is created (for its default
    job options) and when a graph is evaluated, from any URL a user names. Both go through
    ``processgraph._get_process_definition_from_url``: wrapped here so only allowed
    prefixes are fetched; the driver answers the refusal as ProcessNamespaceInvalid (400)."""
    from openeo_driver import processgraph

    fetch = processgraph._get_process_definition_from_url
    if getattr(fetch, "guarded", False):
        return

    def guarded(process_id: str, url: str) -> Any:
        if not settings.namespace_allowed(url):
            raise NamespaceRefused(
                f"process namespace {url} is not allowed on this back-end "
                "(start it with --allow-namespace PREFIX)"
            )
        return fetch(process_id=process_id, url=url)

    guarded.guarded = True  # type: ignore[attr-defined]
    processgraph._get_process_definition_from_url = guarded


def create_app(settings: BackendSettings | None = None) -> Flask:
    settings = settings or BackendSettings.from_env()
    settings = settings.with_secret()
    os.environ.update(settings.to_env())
    os.environ["OPENEO_BACKEND_CONFIG"] = str(Path(__file__).with_name("config.py"))
    # Imported after the config is pointed at: the driver reads it on first use.
    from openeo_driver.backend import CollectionCatalog, OpenEoBackendImplementation
    from openeo_driver.ProcessGraphDeserializer import ConcreteProcessing
    from openeo_driver.views import build_app

    from local_openeo.jobs import JobKnobs, LocalBatchJobs
    from local_openeo.udps import DiskUserDefinedProcesses

    _guard_namespace_fetches(settings)

    class LocalProcessing(ConcreteProcessing):  # type: ignore[misc]
        def validate(self, process_graph: dict[str, Any], env: Any = None) -> list[dict[str, str]]:
            return structural_errors(process_graph)

    class LocalBackend(OpenEoBackendImplementation):  # type: ignore[misc]
        def file_formats(self) -> dict[str, Any]:
            return {"input": {"GTiff": GTIFF}, "output": {"GTiff": GTIFF}}

    udps = DiskUserDefinedProcesses(settings.jobs_dir / "udps")
    knobs = JobKnobs(
        max_running=settings.max_running,
        min_runtime_s=settings.min_runtime_s,
        fail_tiles=settings.fail_tiles,
        fail_state_dir=settings.fail_state_dir,
        failure_rate=settings.failure_rate,
        simulation=settings.simulation,
        name=settings.name,
    )
    batch_jobs = LocalBatchJobs(settings.jobs_dir / "jobs", settings.stac_url, knobs, udps)
    backend = LocalBackend(
        catalog=CollectionCatalog(_collections(settings.stac_url, settings.collections)),
        batch_jobs=batch_jobs,
        user_defined_processes=udps,
        processing=LocalProcessing(),
    )
    app: Flask = build_app(backend_implementation=backend)
    app.config["batch_jobs"] = batch_jobs
    if batch_jobs.simulator is not None:
        _inject_request_faults(app, batch_jobs)
    return app


_JOB_IN_PATH = re.compile(r"/jobs/(j-[0-9a-f]+)/results/assets/")


def _inject_request_faults(app: Flask, batch_jobs: Any) -> None:
    """Simulation mode: some requests are answered with a fault instead (an openEO
    error document), as a busy production back-end answers them."""
    simulator = batch_jobs.simulator

    @app.before_request
    def fault() -> Response | None:
        path = request.path
        job = _JOB_IN_PATH.search(path)
        expired = job is not None and batch_jobs.expired(job[1])
        answer = simulator.request_fault(path, expired)
        if answer is None:
            return None
        status, message = answer
        codes = {404: "NotFound", 429: "TooManyRequests", 503: "ServiceUnavailable"}
        body = {"id": uuid.uuid4().hex, "code": codes[status], "message": message}
        response = jsonify(body)
        response.status_code = status
        if status in (429, 503):
            response.headers["Retry-After"] = "1"
        return response
