"""The ingest engine's error: one input that cannot become a product, and why; and the
kinds of it that a harvest treats apart (a retry may help; the source is gone)."""

from __future__ import annotations

from catalog_service.errors import TilekeeperError


class IngestError(TilekeeperError):
    """An input refused; the message names it and says what is wrong."""


class Unavailable(IngestError):
    """Not had this time, though another try may succeed: the server was busy or failing
    (408, 425, 429, 5xx), the connection or the transfer broke, or time ran out."""


class Mismatch(IngestError):
    """A file that is not what its document states (size, checksum): a truncated or
    corrupted transfer, or a document that is wrong."""


class Gone(IngestError):
    """The source answered that it is not there (404, 410): trying again will not help."""
