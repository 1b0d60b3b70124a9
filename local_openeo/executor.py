"""Runs one batch job's process graph: ``python -m local_openeo.executor JOB_DIR``.

A process of its own per job (as real back-ends isolate jobs): it reads
``JOB_DIR/job.json``, evaluates the graph with openeo-processes-dask (parsed by
openeo-pg-parser-networkx), writes one COG per date (or one when time was reduced)
under ``JOB_DIR/results`` and describes them in ``JOB_DIR/results.json``. Its log goes
to ``JOB_DIR/job.log``; the exit status tells the back-end whether the job finished.

- ``load_collection`` reads the collection from the tilekeeper STAC API with
  pystac-client and odc-stac, on the exact pixel grid of the requested extent;
- processes that are the user's UDPs (or live at an http(s) ``namespace``) are inlined
  before parsing, with their parameters bound to the call's arguments;
- processes-dask's own ``load_stac`` validates STAC against online schemas; here it
  classifies the document by its ``type`` instead, so nothing is fetched from outside.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import requests

from local_openeo.settings import BackendSettings

log = logging.getLogger("local_openeo.executor")


# --- process graphs ------------------------------------------------------------------


def _substitute(value: Any, arguments: dict[str, Any], rename: dict[str, str]) -> Any:
    """A UDP body's value with its parameters bound and its node ids renamed."""
    if isinstance(value, dict):
        if set(value) == {"from_parameter"} and value["from_parameter"] in arguments:
            return arguments[value["from_parameter"]]
        if set(value) == {"from_node"}:
            return {"from_node": rename[value["from_node"]]}
        if "process_graph" in value and isinstance(value["process_graph"], dict):
            # A callback: its own parameters (x, data, ...) stay; outer ones are bound.
            inner = dict(arguments)
            return {**value, "process_graph": _substitute_graph(value["process_graph"], inner)}
        return {k: _substitute(v, arguments, rename) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, arguments, rename) for v in value]
    return value


def _substitute_graph(graph: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    rename = {node: node for node in graph}
    return {
        node: {**spec, "arguments": _substitute(spec.get("arguments", {}), arguments, rename)}
        for node, spec in graph.items()
    }


def inline_processes(
    graph: dict[str, Any], definitions: dict[str, dict[str, Any]], depth: int = 0
) -> dict[str, Any]:
    """The graph with every call of a process in ``definitions`` (id -> openEO process
    definition) replaced by that process's own nodes, recursively."""
    if depth > 10:
        raise ValueError("process definitions nest more than 10 levels (a cycle?)")
    out: dict[str, Any] = {}
    result_of: dict[str, str] = {}
    for node, spec in graph.items():
        definition = definitions.get(spec["process_id"])
        if definition is None:
            out[node] = spec
            continue
        given = spec.get("arguments", {})
        arguments = {
            p["name"]: given[p["name"]] if p["name"] in given else p.get("default")
            for p in definition.get("parameters", [])
        }
        missing = [
            p["name"]
            for p in definition.get("parameters", [])
            if p["name"] not in given and not p.get("optional") and "default" not in p
        ]
        if missing:
            raise ValueError(f"process {spec['process_id']!r}: missing arguments {missing}")
        body = inline_processes(definition["process_graph"], definitions, depth + 1)
        rename = {inner: f"{node}__{inner}" for inner in body}
        for inner, inner_spec in body.items():
            renamed = {
                **inner_spec,
                "arguments": _substitute(inner_spec.get("arguments", {}), arguments, rename),
            }
            renamed.pop("result", None)
            out[rename[inner]] = renamed
            if inner_spec.get("result"):
                result_of[node] = rename[inner]
        if spec.get("result"):
            out[result_of[node]]["result"] = True
    # References to an inlined call now point at its body's result node.
    redirected: dict[str, Any] = _redirect(out, result_of)
    return redirected


def _redirect(value: Any, result_of: dict[str, str]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"from_node"} and value["from_node"] in result_of:
            return {"from_node": result_of[value["from_node"]]}
        if "process_graph" in value and isinstance(value["process_graph"], dict):
            return value  # callbacks refer to their own nodes only
        return {k: _redirect(v, result_of) for k, v in value.items()}
    if isinstance(value, list):
        return [_redirect(v, result_of) for v in value]
    return value


class NamespaceRefused(Exception):
    pass


def remote_definitions(
    graph: dict[str, Any], settings: BackendSettings
) -> dict[str, dict[str, Any]]:
    """Definitions of processes called with an http(s) URL as namespace, fetched only from
    the URL prefixes the back-end's settings allow."""
    found: dict[str, dict[str, Any]] = {}
    for spec in graph.values():
        namespace = spec.get("namespace")
        if isinstance(namespace, str) and namespace.startswith(("http://", "https://")):
            if not settings.namespace_allowed(namespace):
                raise NamespaceRefused(
                    f"process namespace {namespace} is not allowed on this back-end "
                    "(start it with --allow-namespace PREFIX)"
                )
            response = requests.get(namespace, timeout=30, allow_redirects=False)
            response.raise_for_status()
            document = response.json()
            if "process_graph" not in document:  # a listing: pick the process by id
                document = next(
                    p for p in document.get("processes", []) if p["id"] == spec["process_id"]
                )
            found[spec["process_id"]] = document
    return found


# --- the run -------------------------------------------------------------------------


def run(job_dir: Path) -> dict[str, Any]:
    from local_openeo.processing import evaluate

    job = json.loads((job_dir / "job.json").read_text())
    graph = job["process"]["process_graph"]
    definitions = {**job.get("udps", {}), **remote_definitions(graph, BackendSettings.from_env())}
    graph = inline_processes(graph, definitions)
    (job_dir / "process_graph.inlined.json").write_text(json.dumps(graph, indent=1))
    results = job_dir / "results"
    results.mkdir(exist_ok=True)
    assets = evaluate(graph, stac_url=job["stac_url"], out_dir=results)
    return {"assets": assets}


def main() -> int:
    job_dir = Path(sys.argv[1])
    logging.basicConfig(
        filename=job_dir / "job.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        outcome = run(job_dir)
    except Exception as exc:
        log.error("the job failed: %s\n%s", exc, traceback.format_exc())
        (job_dir / "error.json").write_text(
            json.dumps(
                {"message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            )
        )
        return 1
    (job_dir / "results.json").write_text(json.dumps(outcome, indent=1))
    log.info("the job finished: %d asset(s)", len(outcome["assets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
