"""jsonb values as Python, whichever asyncpg connection read them."""

from __future__ import annotations

import json
from typing import Any


def decoded(value: Any) -> Any:
    """A jsonb value as Python. The API's pools decode jsonb already (stac-fastapi's
    ``con_init`` sets a codec); a plain connection hands it over as text."""
    return json.loads(value) if isinstance(value, str | bytes) else value
