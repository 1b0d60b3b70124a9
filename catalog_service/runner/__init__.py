"""Running a campaign: MultiBackendJobManager over the campaign's back-ends, logged in the
openEO way, crash-safe, shared by several workers.

The runner imports nothing from ingest/: the harvest of finished tiles is given to it
(runner/harvest.py); catalog_service/campaign_run.py composes it with ingest's."""

from catalog_service.runner.cancel import cancel_tiles
from catalog_service.runner.report import RunReport
from catalog_service.runner.wiring import build_manager, run_campaign

__all__ = ["RunReport", "build_manager", "cancel_tiles", "run_campaign"]
