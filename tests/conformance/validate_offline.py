"""stac-api-validator without the internet: every schema it would download is read from
the vendored mirror (``ingest/schemas``, laid out like the URLs).

Usage: python validate_offline.py SCHEMA_DIR [stac-api-validator options]"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import stac_validator.utilities
import stac_validator.validate

ROOT = Path(sys.argv.pop(1))


def _local_schema(location: str) -> dict[str, Any]:
    if location.startswith(("http://", "https://")):
        parts = urlsplit(location)
        location = str(ROOT / parts.netloc / parts.path.lstrip("/"))
    schema: dict[str, Any] = json.loads(Path(location).read_text())
    return schema


# Both modules hold their own reference to the fetcher.
stac_validator.utilities.fetch_and_parse_schema = _local_schema
stac_validator.validate.fetch_and_parse_schema = _local_schema

from stac_api_validator.__main__ import main  # noqa: E402  (after the patch)

sys.exit(main())
