"""Polls held in memory while the disk is full.

When :meth:`Store.commit_poll` raises :class:`StoreFullError` the poll exists only in the caller's
memory. This queue keeps such polls, oldest first, retries them in order before any newer poll (so
seq order stays poll order once space returns), and bounds the memory they take. When the bound
is reached the oldest poll is dropped — the only place data can be lost, and it is counted and
logged at ERROR so it never happens silently; the daemon's disk-pressure alarm should have fired
long before (see :meth:`Store.disk_status`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.store.database import Store
from gateway.store.errors import StoreFullError
from gateway.store.records import OutboxMessage

log = logging.getLogger("gateway.store")


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What happened to a poll handed to :meth:`HoldingQueue.commit`: the seqs committed (held
    polls first, then this one), how many messages are still held, and how many were dropped by
    this call."""

    seqs: list[int]
    held: int
    dropped: int


class HoldingQueue:
    """Commit polls through a store, holding up to ``max_messages`` in memory while it is full."""

    def __init__(self, store: Store, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self._store = store
        self._max = max_messages
        self._polls: deque[tuple[OutboxMessage, ...]] = deque()
        self._held = 0
        #: Messages dropped since start, for health reporting.
        self.dropped_total = 0

    @property
    def held(self) -> int:
        """Messages waiting in memory for disk space."""
        return self._held

    def commit(
        self, messages: Sequence[OutboxMessage], *, now_ms: int | None = None
    ) -> CommitOutcome:
        """Commit earlier held polls, then ``messages``; hold whatever does not fit."""
        poll = tuple(messages)
        if len(poll) > self._max:
            raise ValueError(
                f"a poll of {len(poll)} messages can never fit a {self._max}-message hold"
            )
        seqs: list[int] = []
        self._polls.append(poll)
        self._held += len(poll)
        try:
            while self._polls:
                seqs.extend(self._store.commit_poll(self._polls[0], now_ms=now_ms))
                self._held -= len(self._polls.popleft())
        except StoreFullError as exc:
            dropped = self._enforce_bound()
            if dropped:
                log.error(
                    "%s; dropped the %d oldest held messages to stay within %d",
                    exc,
                    dropped,
                    self._max,
                )
            else:
                log.warning("%s; holding %d messages in memory", exc, self._held)
            return CommitOutcome(seqs=seqs, held=self._held, dropped=dropped)
        except Exception:
            # Any other failure (a payload that cannot be built) would fail the same way on every
            # retry and block everything behind it: give the poll back to the caller as the error.
            self._held -= len(self._polls.popleft())
            raise
        return CommitOutcome(seqs=seqs, held=0, dropped=0)

    def _enforce_bound(self) -> int:
        dropped = 0
        while self._held > self._max:
            oldest = self._polls.popleft()
            self._held -= len(oldest)
            dropped += len(oldest)
        self.dropped_total += dropped
        return dropped
