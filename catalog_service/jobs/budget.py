"""The budget rule, in one place: a job may start while the credits spent, plus the
projected cost of every active job and of the new one, stay within the budget.

A job's projected cost is the mean cost of the campaign's finished tiles; before any tile
has finished it is unknown (0), and only what was spent counts."""

from __future__ import annotations

from typing import Any


def figures(
    budget: float | None, spent: float, active_jobs: int, mean_cost: float | None
) -> dict[str, Any]:
    projected = active_jobs * mean_cost if mean_cost is not None else None
    committed = spent + (projected or 0.0)
    return {
        "credits": budget,
        "spent": spent,
        "active_jobs": active_jobs,
        "projected_active": projected,
        "committed": committed,
        "reached": not may_start(budget, committed, mean_cost),
    }


def may_start(budget: float | None, committed: float, mean_cost: float | None) -> bool:
    """Whether one more job fits: ``committed`` (spent + projected active) plus its
    projected cost within ``budget``."""
    if budget is None:
        return True
    return committed + (mean_cost or 0.0) <= budget and committed < budget
