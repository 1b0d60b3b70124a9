"""``python -m local_openeo serve|sample``: run a back-end, or make the sample data."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from datetime import date
from pathlib import Path

from local_openeo.settings import BackendSettings
from local_openeo.simulation import Simulation


def _serve(args: argparse.Namespace) -> None:
    from werkzeug.serving import make_server

    from local_openeo.app import create_app

    settings = BackendSettings(
        name=args.name,
        jobs_dir=Path(args.jobs_dir).resolve(),
        stac_url=args.stac_url,
        host=args.host,
        port=args.port,
        users=args.users.split(","),
        max_running=args.max_running,
        min_runtime_s=args.min_runtime,
        fail_tiles=[t for t in args.fail_tiles.split(",") if t],
        fail_state_dir=Path(args.fail_state_dir) if args.fail_state_dir else None,
        failure_rate=args.failure_rate,
        namespaces=args.allow_namespace,
        collections=[c for c in args.collections.split(",") if c],
        simulation=_simulation(args),
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    server = make_server(settings.host, settings.port, app, threaded=True)
    print(
        f"local openEO back-end {settings.name!r} on http://{settings.host}:{settings.port}/",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        app.config["batch_jobs"].shutdown()


def _simulation(args: argparse.Namespace) -> Simulation | None:
    if not args.simulate:
        return None
    given = {f.name: getattr(args, "sim_" + f.name) for f in fields(Simulation)}
    return Simulation(**given)


def _simulation_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "simulation", "--simulate: jobs that behave like production, fast (no graph is run)"
    )
    group.add_argument("--simulate", action="store_true", help="Simulate jobs.")
    helps = {
        "speedup": "Real-world seconds per second here (the clock's compression).",
        "runtime_s": "Mean real-world runtime of a job, seconds.",
        "runtime_sigma": "Spread of the log-normal runtime.",
        "credits_per_hour": "Credits per real-world hour at the default memory.",
        "default_memory_gb": "Executor memory of a job that asks for none, GB.",
        "error_rate": "Share of jobs that fail (lost executors).",
        "memory_rate": "Share of tiles that fail until given --sim-memory-needed-gb.",
        "memory_needed_gb": "Executor memory those tiles need, GB.",
        "throttle_rate": "Share of job requests answered 429.",
        "concurrency_limit": "Jobs queued or running per user before a start is 429 (0: none).",
        "download_fail_rate": "Share of result downloads answered 503.",
        "slow_download_rate": "Share of result downloads delayed --sim-slow-download-s.",
        "slow_download_s": "Delay of a slow download, seconds.",
        "expire_rate": "Share of finished jobs whose results expire.",
        "expire_after_s": "Seconds after a job finished that its results expire.",
        "pixels": "Width and height of a result COG.",
        "seed": "Seed of the draws.",
    }
    default = Simulation()
    for f in fields(Simulation):
        value = getattr(default, f.name)
        group.add_argument(
            "--sim-" + f.name.replace("_", "-"),
            dest="sim_" + f.name,
            type=type(value),
            default=value,
            help=f"{helps[f.name]} [{value}]",
        )


def _sample(args: argparse.Namespace) -> None:
    from local_openeo.sample import SampleArea, generate

    west, south, east, north = (float(v) for v in args.bbox.split(","))
    area = SampleArea(
        epsg=args.epsg,
        west=west,
        south=south,
        east=east,
        north=north,
        dates=tuple(date.fromisoformat(d) for d in args.dates.split(",")),
    )
    collection, items = generate(area, Path(args.cache_dir))
    json.dump({"collection": collection, "items": items}, sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local_openeo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Run a back-end until stopped.")
    serve.add_argument("--name", default="local")
    serve.add_argument("--jobs-dir", required=True, help="Job state, results and UDPs.")
    serve.add_argument("--stac-url", required=True, help="The tilekeeper STAC API to read from.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--users", default="tilekeeper:tilekeeper", help="user:password,...")
    serve.add_argument("--max-running", type=int, default=1, help="Jobs running at once.")
    serve.add_argument(
        "--allow-namespace",
        action="append",
        default=[],
        metavar="PREFIX",
        help="A URL prefix process namespaces may be fetched from (repeatable; none by default).",
    )
    serve.add_argument(
        "--min-runtime", type=float, default=0.0, help="Seconds a job lasts at least."
    )
    serve.add_argument(
        "--fail-tiles", default="", help="Fail the first job mentioning each of these."
    )
    serve.add_argument(
        "--fail-state-dir",
        default="",
        help="Where failed-once marks live (share it to fail once in all).",
    )
    serve.add_argument("--failure-rate", type=float, default=0.0, help="Share of jobs that fail.")
    serve.add_argument(
        "--collections",
        default="",
        help="Offer only these catalogue collections (comma-separated).",
    )
    _simulation_options(serve)
    serve.set_defaults(run=_serve)
    sample = commands.add_parser(
        "sample", help="Generate the synthetic S2 sample (once), print its STAC."
    )
    sample.add_argument("--cache-dir", required=True)
    sample.add_argument("--epsg", type=int, required=True)
    sample.add_argument("--bbox", required=True, help="west,south,east,north in the EPSG's units")
    sample.add_argument("--dates", required=True, help="YYYY-MM-DD,...")
    sample.set_defaults(run=_sample)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
