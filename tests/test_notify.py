"""Webhooks on a loopback receiver that goes down and comes back: nothing is lost, also
across runs; an event is raised once per key; the failure-rate window."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import Receiver

from catalog_service.api.server import free_port
from catalog_service.jobs.campaign import NotifyPolicy
from catalog_service.runner.notify import FailureWindow, Notifier


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    hook = Receiver(free_port())
    yield hook
    hook.stop()


def test_a_receiver_that_is_down_loses_nothing(receiver: Receiver, tmp_path: Path) -> None:
    policy = NotifyPolicy(webhooks=[receiver.url])
    first = Notifier("c1", policy, tmp_path)
    first.start()
    first.event("campaign.budget_reached", "100", "budget of 100 credits reached")
    first.event("campaign.budget_reached", "100", "the same again")  # same key: not raised
    time.sleep(1.5)  # a few tries against a closed port
    assert first.close(wait_s=1) == 1  # kept for the next run

    # The next run sends it, and what it raises meanwhile, once the receiver is back.
    second = Notifier("c1", policy, tmp_path)
    second.start()
    second.event("campaign.finished", "done", "campaign c1 is over")
    time.sleep(1.0)
    receiver.start()
    receiver.wait_for(2)
    assert second.close(wait_s=5) == 0
    assert [e["type"] for e in receiver.received] == [
        "campaign.budget_reached",
        "campaign.finished",
    ]
    assert receiver.received[0]["message"] == "budget of 100 credits reached"
    assert all(e["campaign"] == "c1" and e["id"] for e in receiver.received)

    # Delivered is delivered: a third run sends nothing again.
    third = Notifier("c1", policy, tmp_path)
    third.start()
    assert third.close(wait_s=1) == 0
    time.sleep(0.5)
    assert len(receiver.received) == 2


def test_failure_rate_over_a_threshold_within_a_window() -> None:
    window = FailureWindow(window_s=60, threshold=0.5, min_failures=3)
    for at, failed in [(0, True), (1, True), (2, False), (3, False)]:
        window.add(failed, at=at)
    assert window.rate(now=4) == (2, 4) and not window.over(now=4)  # too few failures
    window.add(True, at=5)
    assert window.rate(now=5) == (3, 5) and window.over(now=5)  # 60% > 50%
    assert window.rate(now=61.5) == (1, 3)  # the first two left the window
    assert not window.over(now=61.5)
