"""A back-end's answers as the runner reads them: strict parsing at the edge, answers
bounded in time and size on a real loopback server, back-end health, and remote text
that can neither flood nor freeze the logs."""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from support.servers import loopback_server, send_json

from catalog_service.egress import AnswerLimits, AnswerTooLarge, AnswerTooSlow, egress_session
from catalog_service.jobs.campaign import Backend
from catalog_service.logs import MAX_RECORD_CHARS, configure_logging
from catalog_service.remote_text import inert
from catalog_service.runner.answers import (
    BadAnswer,
    checked_job_id,
    fault_reason,
    job_description,
    listed_jobs,
)
from catalog_service.runner.logins import BackendDown, BackendLink, login
from catalog_service.runner.namespaces import NamespaceUnreadable, process_in, read_namespace
from catalog_service.runner.reconcile import candidates

GOOD = {
    "id": "j-1",
    "status": "finished",
    "costs": 12.5,
    "usage": {"cpu": {"value": 40668, "unit": "cpu-seconds"}},
    "progress": 100,
}


def test_a_valid_description_parses() -> None:
    described = job_description(GOOD, "j-1")
    assert described.status == "finished" and described.costs == 12.5
    assert described.usage_texts() == {"cpu": "40668 cpu-seconds"}


def test_usage_metrics_other_than_openeos_cannot_overwrite_tile_properties() -> None:
    usage = {
        key: {"value": 1, "unit": "x\x1b[31m"}
        for key in ("attempts", "status", "start_time", "only_backends", "grid:code", "memory")
    }
    described = job_description({**GOOD, "usage": usage}, "j-1")
    assert described.usage_texts() == {"memory": "1 x [31m"}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ([GOOD], "is a list, not an object"),
        ({**GOOD, "status": "exploded"}, "status"),
        ({**GOOD, "usage": [1, 2]}, "usage"),
        ({**GOOD, "usage": {"cpu": {"value": "lots"}}}, "usage.cpu.value"),
        ({**GOOD, "costs": "12.5"}, "costs"),
        ({**GOOD, "costs": -4000}, "costs"),
        ({**GOOD, "costs": 1.7e308}, "costs"),
        ({**GOOD, "costs": 10**400}, "invalid"),
        ({**GOOD, "costs": float("nan")}, "costs"),
        ({**GOOD, "costs": True}, "costs"),
        ({**GOOD, "id": "j-2"}, "described j-2"),
        ({**GOOD, "status": "x" * 1_000_000}, "status"),
    ],
)
def test_an_invalid_description_is_a_short_bad_answer(answer: Any, reason: str) -> None:
    with pytest.raises(BadAnswer) as caught:
        job_description(answer, "j-1")
    assert reason in str(caught.value)
    assert len(str(caught.value)) < 600
    # The value itself is not quoted: a redirect may have led to another host's answer.
    assert "lots" not in str(caught.value) and "exploded" not in str(caught.value)


@pytest.mark.parametrize(
    "job_id", ["../../admin", ".", "..", "a/b", "a?b", "j00001\n", "x" * 300, 7, None]
)
def test_job_ids_that_would_leave_the_jobs_path_are_refused(job_id: Any) -> None:
    with pytest.raises(BadAnswer, match="job id"):
        checked_job_id(job_id)
    assert checked_job_id("j-20240101_abc.~1") == "j-20240101_abc.~1"


def test_a_listing_keeps_only_entries_with_usable_ids() -> None:
    raw = [{"id": "ok-1", "status": "queued", "title": "c t"}, {"id": "../x"}, "junk", {"no": 1}]
    assert [job.id for job in listed_jobs(raw)] == ["ok-1"]
    with pytest.raises(BadAnswer):
        listed_jobs({"jobs": []})


def test_faults_are_told_from_problems_of_one_job() -> None:
    assert fault_reason(requests.ConnectionError("refused")) is not None
    assert fault_reason(requests.JSONDecodeError("Expecting value", "<html>", 0)) is not None
    assert fault_reason(KeyError("a bug of ours")) is None


def test_remote_text_is_cut_before_it_is_formatted() -> None:
    huge = "A" * 20_000_000
    shown = inert(huge)
    assert len(shown) < 600 and shown.endswith("more characters)")
    assert inert("line\x1b[2J\r\nnext\u202eevil") == "line [2J next evil"


def test_a_huge_log_record_is_cut_before_any_handler_formats_it(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    configure_logging("INFO", log_file)
    try:
        logging.getLogger("tilekeeper.test").warning("body: %s", "B" * 20_000_000)
    finally:
        configure_logging("WARNING")
    line = log_file.read_text()
    assert "BBBB" in line and len(line) < MAX_RECORD_CHARS + 200


class Endless(BaseHTTPRequestHandler):
    """/big says it is huge; /endless streams forever; /drip sends a byte a second."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/header-drip"):  # headers that never end
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while True:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        path = self.path.split("?")[0]
        if path == "/big":
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        try:
            while True:
                if path == "/drip":
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1)
                else:
                    self.wfile.write(b"[" * 65536)
        except OSError:
            return


@pytest.mark.parametrize(
    ("path", "error", "setting"),
    [
        ("/big", AnswerTooLarge, "MAX_ANSWER_BYTES"),
        ("/endless", AnswerTooLarge, "MAX_ANSWER_BYTES"),
        ("/drip", AnswerTooSlow, "REQUEST_TIMEOUT_S"),
        ("/header-drip", AnswerTooSlow, "REQUEST_TIMEOUT_S"),
    ],
)
def test_answers_are_bounded_in_size_and_time(path: str, error: type, setting: str) -> None:
    limits = AnswerLimits(connect_s=2, total_s=3, max_bytes=1 << 20)
    with loopback_server(Endless) as port:
        session = egress_session(limits=limits)
        started = time.monotonic()
        with pytest.raises(error, match=setting):
            session.get(f"http://127.0.0.1:{port}{path}?signature=secret", timeout=1200)
        assert time.monotonic() - started < 60  # a hang guard, not a benchmark
    # Signed URLs keep their query out of messages.
    with loopback_server(Endless) as port, pytest.raises(error) as caught:
        egress_session(limits=limits).get(f"http://127.0.0.1:{port}{path}?signature=secret")
    assert "secret" not in str(caught.value)


def link() -> BackendLink:
    backend = Backend(name="b", url="https://b.test/", parallel_jobs=1, auth="none")
    return BackendLink(backend, lambda b: None, retry_s=2, unhealthy_after=3, backoff_max_s=7)  # type: ignore[arg-type,return-value]  # never connects


def test_a_backend_is_unhealthy_after_faults_in_a_row_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = link()
    backend.fault("503")
    backend.fault("503")
    assert backend.usable() and not backend.unhealthy
    backend.answered()
    backend.fault("503")
    backend.fault("503")
    assert backend.usable(), "a good answer starts the count again"
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            backend.fault("garbage")
    assert backend.unhealthy and not backend.usable()
    assert sum("unhealthy" in r.getMessage() for r in caplog.records) == 1
    # The wait doubles from retry_s up to backoff_max_s.
    assert 6.5 < backend.down_until - time.monotonic() <= 7
    backend.answered()
    assert not backend.unhealthy
    assert any("answers well again" in r.getMessage() for r in caplog.records)


def test_a_backend_that_does_not_answer_is_down_at_once() -> None:
    backend = link()
    backend.mark_down("connection refused")
    assert backend.unhealthy and not backend.usable() and backend.down_since is not None


def test_a_listing_with_naive_timestamps_is_matched_as_utc() -> None:
    listing = [{"id": "j-1", "title": "c T1", "created": "2030-01-01T00:00:00", "status": "queued"}]
    assert [j["id"] for j in candidates(listing, "c T1", "2029-12-31T23:55:00Z", set())] == ["j-1"]


class Capabilities(BaseHTTPRequestHandler):
    """A back-end whose capabilities are a list, or whose version discovery points at
    another host."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/.well-known/openeo"):
            assert isinstance(self.server, HTTPServer)  # loopback_server's ThreadingHTTPServer
            other = f"http://localhost:{self.server.server_port}/stolen/"  # another origin
            send_json(
                self, json.dumps({"versions": [{"url": other, "api_version": "1.2.0"}]}).encode()
            )
        elif self.path.startswith("/stolen/"):
            capabilities = {"api_version": "1.2.0", "backend_version": "1", "endpoints": []}
            send_json(self, json.dumps(capabilities).encode())
        elif self.path.startswith("/list/"):
            send_json(self, b"[1, 2, 3]")
        else:
            send_json(self, b"{}", status=404)


@pytest.mark.parametrize(
    ("path", "reason"),
    [("list/", "answers badly"), ("", "version discovery points at another host")],
)
def test_a_login_to_a_backend_that_answers_badly_is_a_backend_down(path: str, reason: str) -> None:
    with loopback_server(Capabilities) as port:
        backend = Backend(
            name="b", url=f"http://127.0.0.1:{port}/{path}", parallel_jobs=1, auth="none"
        )
        with pytest.raises(BackendDown, match=reason):
            login(backend, interactive=False)


@pytest.mark.parametrize(
    ("path", "reason"),
    [("endless", "MAX_ANSWER_BYTES"), ("drip", "REQUEST_TIMEOUT_S"), ("big", "MAX_ANSWER_BYTES")],
)
def test_a_process_namespace_is_read_within_the_limits(
    path: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEKEEPER_RUNNER_REQUEST_TIMEOUT_S", "2")
    monkeypatch.setenv("TILEKEEPER_RUNNER_MAX_ANSWER_BYTES", str(1 << 20))
    with loopback_server(Endless) as port, pytest.raises(NamespaceUnreadable, match=reason):
        read_namespace(f"http://127.0.0.1:{port}/{path}")


def test_a_process_namespace_goes_through_the_egress_policy() -> None:
    with pytest.raises(NamespaceUnreadable, match="refused"):
        read_namespace("http://169.254.169.254/latest/udp.json")


def test_a_namespace_listing_gives_the_campaigns_process() -> None:
    listing = {"processes": [{"id": "a"}, {"id": "ndvi", "process_graph": {}}]}
    assert process_in(listing, "ndvi", "u")["id"] == "ndvi"
    with pytest.raises(NamespaceUnreadable, match="lists no process"):
        process_in(listing, "evi", "u")
    with pytest.raises(NamespaceUnreadable, match="holds"):
        process_in({"id": "other"}, "ndvi", "u")
