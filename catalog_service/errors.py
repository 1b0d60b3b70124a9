"""Errors the domain raises; the API and the CLI translate them for people."""


class TilekeeperError(Exception):
    """Base of every error tilekeeper raises on purpose."""


class ConfigurationError(TilekeeperError):
    """Settings are missing or contradict each other; the message says what to set."""


class DatabaseSetupError(TilekeeperError):
    """The embedded cluster could not be created, started or migrated."""
