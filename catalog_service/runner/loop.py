"""One worker's run of a campaign: rounds of MultiBackendJobManager's loop until no
tile waits or is active.

Each round reconciles interrupted launches (reconcile.py), adopts the jobs the catalogue
lost (adoption.py: after a restore of an older backup; no job is created before every
back-end was listed once), resets failed tiles that have attempts left (the campaign's
``max_attempts``, with its escalation), offers the usable back-ends' capacity, then lets
MBJM track (tracking.py) and launch (launch.py) through the adapter (adapter.py). Tiles
are claimed through the job store (``WorkerJobDatabase``); a heartbeat keeps the
worker's lease.

Finished tiles whose results expired on their back-end before the harvest got them are
reset to run again (another attempt, within ``max_attempts``). The run ends when the
harvest has given every finished tile a product or a lasting reason: it waits for the
last harvests, tries the tiles out of tries once more, and runs expired tiles again."""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path

from catalog_service.client.http import ApiError
from catalog_service.errors import TilekeeperError
from catalog_service.jobs import status
from catalog_service.jobs.campaign import JOB_ID_KEY, RESULTS_EXPIRED, CampaignDefinition
from catalog_service.runner.adapter import Ended, MultiBackendAdapter
from catalog_service.runner.adoption import WAIT_S, Adoption
from catalog_service.runner.budget_guard import BudgetGuard
from catalog_service.runner.creator import CampaignJobCreator
from catalog_service.runner.events import CampaignEvents
from catalog_service.runner.harvest import Harvest
from catalog_service.runner.heartbeat import Heartbeat
from catalog_service.runner.jobdb import WorkerJobDatabase
from catalog_service.runner.launch import JobStarter, Launcher
from catalog_service.runner.logins import BackendLink
from catalog_service.runner.reconcile import reconcile_creating
from catalog_service.runner.report import PRODUCT, ROUNDS, STOPPED_BY_BUDGET, RunReport
from catalog_service.runner.tracking import Tracker
from catalog_service.settings import RunnerSettings

logger = logging.getLogger(__name__)


class CampaignJobManager:
    """One worker of a campaign: MultiBackendJobManager's rounds with crash-safe
    launches, isolated failures, outage tolerance and a shared campaign."""

    def __init__(
        self,
        definition: CampaignDefinition,
        job_db: WorkerJobDatabase,
        links: dict[str, BackendLink],
        *,
        unfit: dict[str, str] | None = None,
        harvest: Harvest | None = None,
        poll_sleep: float = 60,
        root_dir: str | Path | None = None,
        adopt_wait_s: float = WAIT_S,
    ) -> None:
        self.definition = definition
        self.job_db = job_db
        self.links = links
        self.poll_sleep = poll_sleep
        self.harvest = harvest
        self._expired: dict[str, str] = {}  # tile -> job whose results expired, to reset
        self._stop = threading.Event()
        self.events = CampaignEvents(definition)
        self.budget = BudgetGuard(job_db.campaigns, definition.id, self.events.budget_reached)
        self.starter = JobStarter()
        self.launcher = Launcher(definition, job_db, links, self.budget, self.starter, unfit or {})
        # Back-ends the egress policy refuses or that lack the process are not listed.
        self.adoption = Adoption(definition, job_db, links, skip=unfit or {}, wait_s=adopt_wait_s)
        self.tracker = Tracker(job_db, links, self.starter, harvest, RunnerSettings())
        self.adapter = MultiBackendAdapter(
            definition.backends,
            lambda name: links[name].get(),
            self.launcher,
            self._track,
            root_dir=root_dir,
        )
        job_db.launch_capacity = sum(b.parallel_jobs for b in definition.backends)

    def _track(self, stats: dict[str, int]) -> Ended:
        ended = self.tracker.track(stats)
        self.events.count_endings(len(ended.done), len(ended.failed))
        # Between tracking and launching: the costs of jobs that just ended count.
        self.budget.refresh()
        return ended.done, ended.failed, ended.canceled

    def _offer_capacity(self, stats: dict[str, int]) -> None:
        allowed = self.adoption.launches_allowed()
        if not allowed:
            stats["launch deferred (a back-end not listed yet)"] += 1
        for name, capacity in self.launcher.capacities().items():
            self.adapter.set_capacity(name, capacity if allowed else 0)

    def retry_failed(self) -> int:
        """Reset failed tiles that have attempts left, with the escalated options."""
        policy = self.definition.retry
        if policy.max_attempts <= 1:
            return 0
        props = {"job_options": policy.escalation} if policy.escalation else {}
        try:
            count = self.job_db.campaigns.reset(
                self.definition.id,
                sorted(status.FAILED),
                props,
                actor=self.job_db.actor,
                below_attempts=policy.max_attempts,
                tiles=self.job_db.only_tiles,
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Another worker reset some of them first (the reset is all or nothing and
            # compares each status): what is left is reset next round.
            logger.info("failed tiles reset by another worker meanwhile: %s", exc)
            return 0
        if count:
            logger.info("%d failed tile(s) reset for another attempt", count)
        return count

    def rerun_expired(self) -> int:
        """Reset the finished tiles whose results expired before their harvest, while
        they have attempts left; the others keep their harvest's failure. One tile at a
        time, and only while its job is still the one whose results expired: another
        worker may have run it again meanwhile (its new results are not expired)."""
        if self.harvest is None:
            return 0
        self._expired.update(self.harvest.take_expired())
        if self.job_db.only_tiles is not None:  # a pilot resets only its own tiles
            only = set(self.job_db.only_tiles)
            self._expired = {t: j for t, j in self._expired.items() if t in only}
        count = 0
        for tile, job_id in list(self._expired.items()):
            try:
                jobs = self.job_db.campaigns.jobs_by_tile(self.definition.id, [tile])
                now = jobs[0]["properties"] if jobs else {}
                if now.get("status") != status.FINISHED or str(now.get(JOB_ID_KEY)) != job_id:
                    del self._expired[tile]
                    continue
                reset = self.job_db.campaigns.reset(
                    self.definition.id,
                    [status.FINISHED],
                    actor=self.job_db.actor,
                    tiles=[tile],
                    below_attempts=self.definition.retry.max_attempts,
                    reason=RESULTS_EXPIRED,
                )
            except ApiError as exc:
                if exc.status == 409:  # it moved meanwhile: not ours to reset
                    del self._expired[tile]
                else:
                    logger.warning("tile %s: not reset yet (%s); next round", tile, exc)
                continue
            except TilekeeperError as exc:  # the service is away: next round
                logger.warning("tile %s: not reset yet (%s); next round", tile, exc)
                continue
            del self._expired[tile]
            if reset:
                count += 1
            else:
                logger.warning(
                    "tile %s: its results expired and it has no attempt left (max_attempts %d)",
                    tile,
                    self.definition.retry.max_attempts,
                )
        if count:
            logger.info("%d tile(s) whose results expired reset to run again", count)
        return count

    def run(self) -> RunReport:
        """Run (or resume) until no tile waits or is active."""
        logger.info(
            "worker %s runs campaign %s on %s",
            self.job_db.worker_id,
            self.definition.id,
            ", ".join(self.links),
        )
        creator = CampaignJobCreator(self.definition)
        stats: dict[str, int] = collections.defaultdict(int)
        products: collections.Counter[str] = collections.Counter()
        stopped_by_budget = False
        heartbeat = Heartbeat(self.job_db, self._stop)
        heartbeat.start()
        self.events.start()
        if self.harvest is not None:
            caught = self.harvest.catch_up()
            if caught:
                logger.info("%d finished tile(s) to harvest from earlier runs", caught)
        try:
            while not self._stop.is_set():
                reconcile_creating(
                    self.job_db, self.links, self.definition.id, self.starter.start, stats
                )
                self.adoption.step(stats)
                self.rerun_expired()
                self.retry_failed()
                self._offer_capacity(stats)
                self.adapter.run_round(job_db=self.job_db, start_job=creator, stats=stats)
                stats[ROUNDS] += 1
                self.events.check_unreachable(self.links.values())
                counts = self.job_db.count_by_status()
                logger.info("tiles: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
                active = sum(counts.get(s, 0) for s in status.ACTIVE)
                if self.budget.blocked and not active:
                    logger.warning(
                        "stopping: the budget is reached and no job is active; %d tile(s) "
                        "not started. Raise it with `tilekeeper campaign budget %s CREDITS` "
                        "and run again.",
                        counts.get(status.NOT_STARTED, 0),
                        self.definition.id,
                    )
                    stopped_by_budget = True
                    stats[STOPPED_BY_BUDGET] = 1
                    self._settle_harvest()
                    self._finish_harvest(stats, products)
                    break
                pending = active + counts.get(status.NOT_STARTED, 0)
                # The last active tile may have failed in this very round: retry it
                # before calling the campaign done.
                if pending == 0 and not self.retry_failed():
                    if self._settle_harvest():
                        continue  # expired tiles run again
                    self._finish_harvest(stats, products)
                    if self.job_db.only_tiles is None:
                        self.events.campaign_over(counts)
                    break
                self._stop.wait(self.poll_sleep)
        finally:
            self._stop.set()
            self.tracker.close()
            heartbeat.join(5)
            self.events.close()
            try:
                self.job_db.campaigns.leave(self.definition.id, self.job_db.worker_id)
            except TilekeeperError as exc:
                logger.warning("could not end the worker's lease: %s", exc)
        return RunReport.from_counts(
            stats, stopped_by_budget=stopped_by_budget, products=dict(products)
        )

    def _settle_harvest(self) -> bool:
        """Wait for the harvests, then try once more the finished tiles still without a
        product (out of tries, or missed); True when tiles whose results expired were
        reset to run again."""
        if self.harvest is None:
            return False
        logger.info("waiting for the last harvests")
        self.harvest.wait()
        again = self.harvest.catch_up()
        if again:
            logger.info("%d finished tile(s) without a product: harvesting them again", again)
            self.harvest.wait()
        return self.rerun_expired() > 0

    def _finish_harvest(self, stats: dict[str, int], products: collections.Counter[str]) -> None:
        if self.harvest is None:
            return
        for outcome in self.harvest.wait():
            products[outcome.result] += 1
            stats[PRODUCT.format(outcome.result)] += 1
        self.harvest.close()

    def stop(self) -> None:
        self._stop.set()
