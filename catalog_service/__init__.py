"""tilekeeper: a STAC catalogue and job tracker for openEO production campaigns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

if TYPE_CHECKING:
    from catalog_service.client.jobdb import CampaignJobDatabase

__all__ = ["CampaignJobDatabase", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the job database pulls in openeo and pandas, which the
    # service itself does not need.
    if name == "CampaignJobDatabase":
        from catalog_service.client.jobdb import CampaignJobDatabase

        return CampaignJobDatabase
    raise AttributeError(name)
