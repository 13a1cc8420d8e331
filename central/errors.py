"""The consumer's one error root: anything a user sees is one of these, as one line."""

from __future__ import annotations


class CentralError(Exception):
    """A failure the consumer reports as one line (bad config, unreachable database, …)."""


class ConfigError(CentralError):
    """``central.toml`` is wrong; the message names the file, the key and what is expected."""


class StorageError(CentralError):
    """The database refused or failed; the message names the database."""
