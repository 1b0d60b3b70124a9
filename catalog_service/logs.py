"""Logging of long-running commands: console by default (rich), optionally a file."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.logging import RichHandler

# Chatty libraries: one line per HTTP request is noise in a weeks-long run.
_QUIET = ("urllib3", "openeo.rest.connection", "openeo.extra.job_management")
# rich's highlighter is quadratic on long unbroken words and holds the logging lock:
# no record reaches it longer than this (remote text is cut far shorter where it is
# received, see catalog_service/remote_text.py; this is the last line of defence).
MAX_RECORD_CHARS = 2000


def _bounded(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if len(message) > MAX_RECORD_CHARS:
        record.msg = f"{message[:MAX_RECORD_CHARS]}... ({len(message) - MAX_RECORD_CHARS} more)"
        record.args = None
    return True


def configure_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    handlers: list[logging.Handler] = [RichHandler(show_path=False, rich_tracebacks=False)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        handlers.append(file_handler)
    for handler in handlers:
        handler.addFilter(_bounded)
    logging.basicConfig(level=numeric, handlers=handlers, force=True)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
