"""Durable store of the gateway (SQLite): reads, outbox, alarms, daily history.

See :mod:`gateway.store.database` for the guarantees and :class:`Store` for the API (its parts:
:mod:`~gateway.store.core`, :mod:`~gateway.store.outbox`, :mod:`~gateway.store.reads`,
:mod:`~gateway.store.state`).
"""

from gateway.store.core import wall_ms
from gateway.store.database import STORE_CORRUPT_ALARM, Store
from gateway.store.errors import StoreCorruptError, StoreError, StoreFullError, StoreVersionError
from gateway.store.holding import CommitOutcome, HoldingQueue
from gateway.store.records import (
    AlarmState,
    DailyValue,
    DiskStatus,
    OutboxCursor,
    OutboxMessage,
    OutboxRow,
    StoredRead,
    is_priority_topic,
)
from gateway.store.replay import NotHeld, Requeued

__all__ = [
    "STORE_CORRUPT_ALARM",
    "AlarmState",
    "CommitOutcome",
    "DailyValue",
    "DiskStatus",
    "HoldingQueue",
    "NotHeld",
    "OutboxCursor",
    "OutboxMessage",
    "OutboxRow",
    "Requeued",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreVersionError",
    "StoredRead",
    "is_priority_topic",
    "wall_ms",
]
