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
    if not isinstance(value, str) or not _ID.match(value):
        shown = repr(value)[:60]
        return f"{what} {shown} is not valid: an id has {ID_RULE}"
    return None
