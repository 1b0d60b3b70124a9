"""The campaign events the runner raises (sent by catalog_service/runner/notify.py): a
failure rate over the campaign's threshold, the budget reached, a back-end unreachable
for too long, the campaign over."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from catalog_service.jobs.campaign import CampaignDefinition
from catalog_service.runner.logins import BackendLink
from catalog_service.runner.notify import FailureWindow, Notifier


class CampaignEvents:
    """One worker's events of one campaign, as its notification policy says."""

    def __init__(self, definition: CampaignDefinition) -> None:
        self.definition = definition
        self.notifier = Notifier(definition.id, definition.notify)
        policy = definition.notify
        self.failures = FailureWindow(
            policy.failure_window_s, policy.failure_rate, policy.min_failures
        )

    def start(self) -> None:
        self.notifier.start()

    def close(self) -> None:
        self.notifier.close()

    def count_endings(self, finished: int, failed: int) -> None:
        for _ in range(finished):
            self.failures.add(False)
        for _ in range(failed):
            self.failures.add(True)
        if failed and self.failures.over():
            failures, total = self.failures.rate()
            window = self.definition.notify.failure_window_s
            self.notifier.event(
                "campaign.failure_rate",
                str(int(time.time() // window)),
                f"{failures} of the last {total} tiles over failed within {window:.0f} s "
                f"(threshold {self.definition.notify.failure_rate:.0%})",
                failures=failures,
                tiles=total,
                window_s=window,
            )

    def budget_reached(self, committed: float, credits: float) -> None:
        self.notifier.event(
            "campaign.budget_reached",
            f"{credits:g}",
            f"budget of {credits:g} credits reached ({committed:.4g} spent or committed): "
            "no new job starts",
            budget=credits,
            committed=committed,
        )

    def check_unreachable(self, links: Iterable[BackendLink]) -> None:
        limit = self.definition.notify.unreachable_s
        for link in links:
            if link.down_since is None:
                continue
            down_for = time.monotonic() - link.down_since
            if down_for > limit:
                since = datetime.fromtimestamp(time.time() - down_for, UTC)
                self.notifier.event(
                    "backend.unreachable",
                    f"{link.name}:{since:%Y%m%dT%H%M}",
                    f"back-end {link.name} unreachable for {down_for:.0f} s ({link.reason})",
                    backend=link.name,
                    since=since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    reason=link.reason,
                )

    def campaign_over(self, counts: dict[str, int]) -> None:
        self.notifier.event(
            "campaign.finished",
            json.dumps(counts, sort_keys=True),
            f"campaign {self.definition.id} is over: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            counts=counts,
        )
