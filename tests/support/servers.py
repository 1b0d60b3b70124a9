"""Processes and servers of the tests on this machine: local openEO back-ends, moto's
S3 server and small loopback HTTP servers."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from catalog_service.api.server import free_port
from catalog_service.demo.backends import LocalBackend


@contextmanager
def local_backends(
    api: str, base: Path, names: list[str], **knobs: Any
) -> Iterator[list[LocalBackend]]:
    """Local openEO back-ends (real processes) on free ports, reading the catalogue at
    ``api``; stopped on the way out, also when one of them failed to start."""
    started: list[LocalBackend] = []
    try:
        for name in names:
            backend = LocalBackend(
                name=name, port=free_port(), jobs_dir=base / name, stac_url=f"{api}/", **knobs
            )
            backend.start(log_path=base / f"{name}.log")
            started.append(backend)
        yield started
    finally:
        for backend in started:
            backend.stop()


def send_json(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200) -> None:
    """A JSON answer from a loopback test server."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler], port: int = 0) -> Iterator[int]:
    """A test HTTP server on 127.0.0.1 (a free port unless given); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()


class Receiver:
    """A webhook receiver on a fixed loopback port that can be stopped and started."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.received: list[dict[str, Any]] = []
        self.server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3-compatible server (a dev dependency) on a free port; yields its URL."""
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert moto, "moto[server] is a dev dependency"
    port = free_port()
    process = subprocess.Popen(
        [moto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)
