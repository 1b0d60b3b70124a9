"""Running a campaign: MultiBackendJobManager over the campaign's back-ends, logged in the
openEO way, crash-safe, shared by several workers."""

from catalog_service.runner.cancel import cancel_tiles
from catalog_service.runner.manager import run_campaign

__all__ = ["cancel_tiles", "run_campaign"]
