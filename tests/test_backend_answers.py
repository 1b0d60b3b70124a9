"""A back-end's answers as the runner reads them: strict parsing at the edge, answers
bounded in time and size on a real loopback server, back-end health, and remote text
that can neither flood nor freeze the logs."""

from __future__ import annotations

import logging
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import loopback_server

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
from catalog_service.runner.logins import BackendLink

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


@pytest.mark.parametrize("job_id", ["../../admin", ".", "..", "a/b", "a?b", "x" * 300, 7, None])
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
    return BackendLink(backend, lambda b: None, retry_s=2, unhealthy_after=3, backoff_max_s=7)  # type: ignore[arg-type,return-value]


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
