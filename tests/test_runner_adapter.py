"""The runner's adapter over openEO's MultiBackendJobManager (catalog_service/runner/
adapter.py) against the installed openeo: the private methods it overrides or calls
still have the signatures it was written for, and a round still goes through them.
No database, no back-end."""

from __future__ import annotations

import inspect
from typing import Any

import pandas as pd
import pytest
from openeo.extra.job_management import MultiBackendJobManager
from openeo.extra.job_management.process_based import ProcessBasedJobCreator
from openeo.rest.connection import Connection

from catalog_service.jobs.campaign import Backend
from catalog_service.runner.adapter import WRITTEN_FOR, MultiBackendAdapter
from catalog_service.runner.creator import CampaignJobCreator


@pytest.mark.parametrize("name", sorted(WRITTEN_FOR))
def test_signature_is_the_one_written_for(name: str) -> None:
    installed = str(inspect.signature(getattr(MultiBackendJobManager, name)))
    assert installed == WRITTEN_FOR[name], (
        f"MultiBackendJobManager.{name} changed: the adapter was written for\n"
        f"  {WRITTEN_FOR[name]}\nthe installed openeo has\n  {installed}"
    )


def test_every_override_is_pinned() -> None:
    overridden = {
        name
        for name, member in vars(MultiBackendAdapter).items()
        if callable(member) and hasattr(MultiBackendJobManager, name)
    }
    assert overridden - set(WRITTEN_FOR) == set(), "an overridden method without a pin"


@pytest.mark.parametrize(
    "name",
    sorted(n for n in WRITTEN_FOR if n != "__init__" and n in vars(MultiBackendAdapter)),
)
def test_override_takes_what_mbjm_passes(name: str) -> None:
    """MBJM calls its methods with keywords: the overrides keep the parameter names."""
    theirs = list(inspect.signature(getattr(MultiBackendJobManager, name)).parameters)
    ours = list(inspect.signature(getattr(MultiBackendAdapter, name)).parameters)
    assert ours == theirs, f"{name}: ours {ours}, MultiBackendJobManager's {theirs}"


def test_private_state_the_adapter_touches() -> None:
    manager = MultiBackendJobManager(download_results=False)
    assert hasattr(manager, "_worker_pool")
    manager.add_backend("a", connection=lambda: None, parallel_jobs=3)  # type: ignore[arg-type,return-value]  # never connects
    backend = manager.backends["a"]
    assert backend._replace(parallel_jobs=0).parallel_jobs == 0


def test_other_private_parts_of_openeo_we_use_are_there() -> None:
    """Outside the adapter, two private parts of the openEO client are used: the job
    database normalises frames with MBJM's column requirements (client/jobdb.py), and the
    campaign's job creator reads a namespace its own way by overriding
    ``_get_process_definition`` (runner/creator.py). An upgrade that changes them fails here."""
    normalize = MultiBackendJobManager._column_requirements.normalize_df
    assert str(inspect.signature(normalize)) == (
        "(df: pandas.core.frame.DataFrame) -> pandas.core.frame.DataFrame"
    )
    theirs = str(inspect.signature(ProcessBasedJobCreator._get_process_definition))
    assert theirs == (
        "(self, connection: openeo.rest.connection.Connection) "
        "-> openeo.internal.processes.parse.Process"
    )
    ours = list(inspect.signature(CampaignJobCreator._get_process_definition).parameters)
    assert ours == ["self", "connection"]


class FakeJobs:
    """The two reads and the write of MBJM's round."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.persisted = 0

    def get_by_status(self, statuses: list[str], max: int | None = None) -> pd.DataFrame:
        return self.frame[self.frame["status"].isin(statuses)].head(max)

    def persist(self, df: pd.DataFrame) -> None:
        self.persisted += 1


def test_a_round_tracks_then_launches_into_the_capacity() -> None:
    calls: list[Any] = []

    def launch(
        start_job: Any,
        df: pd.DataFrame,
        i: Any,
        backend_name: str,
        stats: dict[str, int],
        connection_provider: Any,
    ) -> None:
        calls.append(("launch", df.loc[i, "item_id"], backend_name, connection_provider("b")))

    def track(stats: dict[str, int]) -> tuple[list[Any], list[Any], list[Any]]:
        calls.append("track")
        return [], [], []

    backends = [
        Backend(name="a", url="https://a.test", parallel_jobs=2),
        Backend(name="b", url="https://b.test", parallel_jobs=2),
    ]
    connections: dict[str, Any] = {"a": object(), "b": object()}

    def connection_for(name: str) -> Connection:
        connection: Connection = connections[name]
        return connection

    adapter = MultiBackendAdapter(backends, connection_for, launch, track)
    adapter.set_capacity("a", 0)  # a paused back-end gets nothing dealt
    jobs = FakeJobs(
        pd.DataFrame(
            {
                "item_id": ["t1", "t2", "t3"],
                "status": ["not_started"] * 3,
                "backend_name": [None] * 3,
            }
        )
    )
    stats: dict[str, int] = {"job launch": 0, "job_db persist": 0, "track_statuses": 0}
    adapter.run_round(jobs, start_job=lambda **kw: None, stats=stats)  # type: ignore[arg-type]  # FakeJobs: only what the round uses
    assert calls == [
        "track",
        ("launch", "t1", "b", connections["b"]),
        ("launch", "t2", "b", connections["b"]),
    ]
    assert stats["job launch"] == 2 and jobs.persisted == 2
