"""The campaign's credit budget as the runner applies it to new jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable

from catalog_service.client.campaigns import Campaigns
from catalog_service.jobs import budget

logger = logging.getLogger(__name__)


class BudgetGuard:
    """The campaign's credit budget as the runner applies it: refreshed from the
    catalogue every round (a budget raised meanwhile counts at once), with the jobs this
    worker launched since counted at the projected cost of a tile."""

    def __init__(
        self,
        campaigns: Campaigns,
        campaign_id: str,
        on_reached: Callable[[float, float], None] | None = None,
    ) -> None:
        self.campaigns = campaigns
        self.on_reached = on_reached
        self.campaign_id = campaign_id
        self.credits: float | None = None
        self.committed = 0.0
        self.mean_cost: float | None = None
        self.blocked = False

    def refresh(self) -> None:
        self.credits = self.campaigns.definition(self.campaign_id).budget
        if self.credits is None:  # no budget: spare the service the summary's scans
            self.blocked = False
            return
        summary = self.campaigns.summary(self.campaign_id)
        figures = summary["budget"]
        self.credits = figures["credits"]
        self.committed = float(figures["committed"])
        self.mean_cost = summary["finished"]["mean_costs"]
        self._update_blocked()

    def launched(self) -> None:
        self.committed += self.mean_cost or 0.0
        self._update_blocked()

    def allows_one_more(self) -> bool:
        return not self.blocked

    def _update_blocked(self) -> None:
        blocked = not budget.may_start(self.credits, self.committed, self.mean_cost)
        if blocked and not self.blocked:
            logger.warning(
                "budget reached: %.4g credits spent or committed to active jobs of %.4g "
                "(a tile costs %.4g on average); no new job starts",
                self.committed,
                self.credits or 0.0,
                self.mean_cost or 0.0,
            )
            if self.on_reached is not None and self.credits is not None:
                self.on_reached(self.committed, self.credits)
        elif self.blocked and not blocked:
            logger.info("budget allows new jobs again (%.4g of %.4g)", self.committed, self.credits)
        self.blocked = blocked
