"""The one rule for ids of collections, items, campaigns and tiles: they appear in URLs,
file names of products and pgstac's partitions, so they stay plain."""

from __future__ import annotations

import re
from typing import Any

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.~-]{0,199}$"
ID_RULE = "1 to 200 characters: letters, digits and _ . ~ -, starting with a letter or a digit"
_ID = re.compile(ID_PATTERN)


def id_problem(value: Any, what: str = "id") -> str | None:
    """Why ``value`` is not a valid id, or None."""
    # fullmatch: `$` alone also matches before a trailing newline.
    if not isinstance(value, str) or not _ID.fullmatch(value):
        shown = repr(value)[:60]
        return f"{what} {shown} is not valid: an id has {ID_RULE}"
    return None


# openEO job ids (API 1.2: ``^[\w\-\.~]+$``) are a back-end's answer and go into URL
# paths: no ``.`` or ``..`` segment, no other character, and a bounded length.
JOB_ID_PATTERN = r"^(?!\.{1,2}$)[A-Za-z0-9_.~-]{1,256}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)


def job_id_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable openEO job id, or None."""
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
        shown = repr(value)[:60]
        return (
            f"job id {shown} is not valid: openEO job ids have 1 to 256 letters, digits "
            "and _ . ~ - (and are not . or ..)"
        )
    return None


# A campaign's products go to a collection of their own, named after it (an id of
# its own: clients that never touch the database name it too).
PRODUCTS_SUFFIX = "-products"


def campaign_products_id(campaign: str) -> str:
    """The collection a campaign's harvest writes its products to."""
    return f"{campaign}{PRODUCTS_SUFFIX}"
