"""Text from elsewhere (back-end errors, logs, answers) made safe to log, store and show.

Remote text is truncated before anything formats it: rich's log highlighter is
quadratic on long unbroken words and holds the logging lock meanwhile, and the
catalogue refuses long error texts (which would leave a failed tile looking pending).
Control characters go too, so a message cannot rewrite a terminal line or a log file's
structure."""

from __future__ import annotations

import re

MAX_REMOTE_TEXT = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"\s+")


def inert(text: object, limit: int = MAX_REMOTE_TEXT) -> str:
    """``text`` on one line, without control characters, at most ``limit`` characters
    (a longer one ends in "... (N more characters)"). Only the first ``4 * limit``
    characters are looked at, so the cost does not grow with the input."""
    raw = str(text)
    head = raw[: 4 * limit]
    flat = _SPACE.sub(" ", _CONTROL.sub(" ", head)).strip()
    if len(flat) <= limit and len(raw) == len(head):
        return flat
    rest = len(raw) - len(head) + max(0, len(flat) - limit)
    return f"{flat[:limit]}... ({rest} more characters)"
