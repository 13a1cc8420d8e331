"""Errors raised by the store. Each names the database file, because a gateway may have several
data directories in its life (a replaced SD card, a test rig) and the operator must know which."""

from __future__ import annotations

from gateway.errors import GatewayError


class StoreError(GatewayError):
    """Base of the store errors."""


class StoreFullError(StoreError):
    """The disk (or the database's page limit) is full; the transaction was rolled back and
    nothing of it was stored. The caller still holds its data and must keep it (bounded) until
    space is freed — it was not written, so it must not be reported as written."""


class StoreCorruptError(StoreError):
    """SQLite reports the file is damaged while the store is in use. On the next open the
    integrity check moves it aside."""


class StoreVersionError(StoreError):
    """The database was written by a newer gateway (schema version beyond what this one knows), or
    belongs to another application. It is left untouched."""
