"""What scripts/cluster.sh does in Python (run with .venv/bin/python): free ports, the S3
bucket, waiting for a URL, the openEO login of a worker "machine", the input sample and
the demo process on the local back-ends. Settings come from the environment the script
sets (TILEKEEPER_API_URL, TILEKEEPER_API_KEY, REQUESTS_CA_BUNDLE, OPENEO_CONFIG_HOME...)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import requests


def free_ports(count: int) -> None:
    """Print `count` distinct free loopback ports (all held until all are chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    print(" ".join(str(p) for p in ports))


def wait_http(url: str, timeout_s: float) -> None:
    """Wait until ``url`` answers below 500 (TLS checked with REQUESTS_CA_BUNDLE)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            status = requests.get(url, timeout=3).status_code
            if status < 500:
                return
            last = f"HTTP {status}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.3)
    sys.exit(f"{url} did not answer within {timeout_s:.0f} s: {last}")


def make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in names:
        s3.create_bucket(Bucket=bucket)
        print(f"created bucket {bucket}")


def store_login(urls: list[str]) -> None:
    """The local back-ends' basic login in this machine's openEO auth config
    (OPENEO_CONFIG_HOME), as `openeo-auth add-basic URL` does."""
    from catalog_service.demo.scenario import store_login as store

    print(store(urls))


def load_sample(cache_dir: Path) -> None:
    """The synthetic Sentinel-2 sample (the demo's small area) into the catalogue, through
    TILEKEEPER_API_URL with TILEKEEPER_API_KEY (generated once, cached in cache_dir)."""
    from catalog_service.client import Catalog
    from catalog_service.demo.backends import load_sample as load
    from catalog_service.demo.scenario import TEST_AREA

    collection, items = load(
        Catalog(os.environ["TILEKEEPER_API_URL"]), TEST_AREA.sample(), cache_dir
    )
    print(f"sample: {items} scenes in {collection}")


def install_udp(urls: list[str]) -> None:
    """The demo process as a UDP of the demo user on each back-end (login stored first)."""
    from catalog_service.demo.scenario import install_udp as install

    install(urls)
    print(f"process cloudfree_ndvi stored on {len(urls)} back-end(s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-ports").add_argument("count", type=int)
    wait = sub.add_parser("wait-http")
    wait.add_argument("url")
    wait.add_argument("--timeout", type=float, default=60)
    bucket = sub.add_parser("make-bucket")
    bucket.add_argument("endpoint")
    bucket.add_argument("bucket")
    sub.add_parser("store-login").add_argument("urls", nargs="+")
    sample = sub.add_parser("load-sample")
    sample.add_argument("cache_dir", type=Path)
    sub.add_parser("install-udp").add_argument("urls", nargs="+")
    args = parser.parse_args()
    if args.command == "free-ports":
        free_ports(args.count)
    elif args.command == "wait-http":
        wait_http(args.url, args.timeout)
    elif args.command == "make-bucket":
        make_bucket(args.endpoint, args.bucket)
    elif args.command == "store-login":
        store_login(args.urls)
    elif args.command == "load-sample":
        load_sample(args.cache_dir)
    elif args.command == "install-udp":
        install_udp(args.urls)


if __name__ == "__main__":
    main()
