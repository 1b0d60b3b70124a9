"""What a run of one worker did, as its caller reads it."""

from __future__ import annotations

from dataclasses import dataclass, field

# The counters the report's fields are read from. MBJM counts into the same mapping
# under its own names ("job launch", "track_statuses", ...), so the counters stay
# strings; nothing outside the runner reads them but as a whole.
LAUNCHED = "job launched"
STARTED = "job started"
ROUNDS = "run_jobs loop"
STOPPED_BY_BUDGET = "stopped: budget reached"
PRODUCT = "product {}"  # per harvest outcome: product created, product failed, ...


@dataclass(frozen=True)
class RunReport:
    """One worker's run of a campaign."""

    # Jobs this worker created on a back-end, and jobs it started (including jobs
    # created earlier whose start had to wait).
    launched: int
    started: int
    rounds: int
    # The run ended because the budget was reached with no job active; tiles are left
    # not started.
    stopped_by_budget: bool
    # Harvest outcomes of this run by result (created, updated, unchanged, failed, ...).
    products: dict[str, int] = field(default_factory=dict)
    # Every counter of the run, MBJM's and the runner's, by name: for the log and the
    # CLI's summary line.
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_counts(
        cls, counts: dict[str, int], *, stopped_by_budget: bool, products: dict[str, int]
    ) -> RunReport:
        return cls(
            launched=counts.get(LAUNCHED, 0),
            started=counts.get(STARTED, 0),
            rounds=counts.get(ROUNDS, 0),
            stopped_by_budget=stopped_by_budget,
            products=dict(products),
            counts=dict(counts),
        )
