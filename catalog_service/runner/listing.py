"""A back-end's job listing, read whole but bounded: openEO pages ``GET /jobs`` with
``limit`` and ``next`` links, which the openEO client does not follow (it returns the
first page only). Every page is parsed strictly (answers.listed_jobs); ``next`` links
are followed only on the back-end's own origin (its login goes with them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from openeo.rest import OpenEoApiError

from catalog_service.runner.answers import listed_jobs
from catalog_service.runner.faults import blame, is_busy
from catalog_service.runner.logins import BackendLink

logger = logging.getLogger(__name__)
PAGE_SIZE = 1000
# At most this many pages per listing (100,000 jobs): a back-end that keeps answering
# `next` must not hold the runner for ever.
MAX_PAGES = 100


@dataclass
class Listing:
    """The jobs a back-end listed (as dicts: id, status, title, created); ``complete``
    is False when the pages ran out of the bound or a next link left the origin."""

    jobs: list[dict[str, Any]]
    complete: bool = True


def _next_path(page: dict[str, Any], root: str) -> str | None:
    """The path (below the back-end's root URL) of the next page, or None."""
    for link in page.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next":
            href = str(link.get("href") or "")
            if href.startswith(root.rstrip("/") + "/"):
                return href[len(root.rstrip("/")) :]
            if href.startswith("/") and not href.startswith("//"):
                # A path from the host's root: the back-end's root path included.
                prefix = urlsplit(root).path.rstrip("/")
                return href[len(prefix) :] if prefix and href.startswith(prefix) else href
            logger.warning("a job listing's next link leaves its back-end: not followed")
            return ""
    return None


def list_jobs(link: BackendLink) -> Listing | None:
    """Every job ``link``'s back-end lists (entries that do not parse left out), or None
    when it cannot tell now (down, busy, 5xx, garbage: blamed on it). A back-end that
    refuses to list (another 4xx) lists nothing, said once in the log: waiting for it
    would never end."""
    if not link.usable():
        return None
    jobs: list[dict[str, Any]] = []
    path: str | None = "/jobs"
    params: dict[str, Any] | None = {"limit": PAGE_SIZE}
    try:
        connection = link.get()
        for _ in range(MAX_PAGES):
            page = connection.get(str(path), params=params, expected_status=200).json()
            if not isinstance(page, dict):
                raise ValueError(f"the job listing is a {type(page).__name__}, not an object")
            jobs.extend(job.model_dump() for job in listed_jobs(page.get("jobs")))
            path, params = _next_path(page, connection.root_url), None
            if not path:
                link.answered()
                return Listing(jobs, complete=path is None)
    except OpenEoApiError as exc:
        if not is_busy(exc) and exc.http_status_code is not None and exc.http_status_code < 500:
            logger.warning(
                "back-end %s does not list its jobs (%s %s): jobs the catalogue lost there "
                "cannot be found",
                link.name,
                exc.http_status_code,
                exc.code,
            )
            return Listing([], complete=False)
        logger.warning("could not list the jobs on %s: %s", link.name, blame(link, exc))
        return None
    except Exception as exc:  # down, garbage: it cannot tell now
        logger.warning("could not list the jobs on %s: %s", link.name, blame(link, exc))
        return None
    logger.warning(
        "back-end %s lists more than %d pages of jobs: only the first %d jobs were read",
        link.name,
        MAX_PAGES,
        len(jobs),
    )
    link.answered()
    return Listing(jobs, complete=False)
