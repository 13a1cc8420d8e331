"""Polls held in memory while the store cannot be written.

When :meth:`Store.commit_poll` raises a :class:`StoreError` — the disk is full, the filesystem
went read-only after an I/O error, the file is locked — the poll exists only in the caller's
memory. This queue keeps such polls, oldest first, retries them in order before any newer poll
(so seq order stays poll order once the store works again), and bounds the memory they take.
Held polls are committed in batches of up to :data:`BATCH_MESSAGES` messages per transaction:
one transaction per small message costs ~20 KB of WAL each, enough to fill a nearly full disk
again with the first megabyte freed. When the bound is reached the oldest poll is dropped — the
only place data can be lost, and it is counted (:attr:`HoldingQueue.dropped_total`) so the caller
can report it; the disk alarm should have fired long before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.store.database import Store
from gateway.store.errors import StoreError
from gateway.store.records import OutboxMessage

#: Messages committed in one transaction when held polls are retried.
BATCH_MESSAGES = 500


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What happened to a poll handed to :meth:`HoldingQueue.commit`: the seqs committed (held
    polls first, then this one), how many messages are still held, how many were dropped by
    this call, and the store's error when something stayed held."""

    seqs: list[int]
    held: int
    dropped: int
    error: StoreError | None = None


class HoldingQueue:
    """Commit polls through a store, holding up to ``max_messages`` in memory while it fails."""

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
    def max_messages(self) -> int:
        return self._max

    @property
    def held(self) -> int:
        """Messages waiting in memory for the store."""
        return self._held

    def held_messages(self) -> list[OutboxMessage]:
        """Every held message, oldest first (for a spill at stop)."""
        return [message for poll in self._polls for message in poll]

    def forget(self) -> int:
        """Drop everything held (after it was saved elsewhere); returns how many."""
        count, self._held = self._held, 0
        self._polls.clear()
        return count

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
        if poll:
            self._polls.append(poll)
            self._held += len(poll)
        try:
            while self._polls:
                batch = self._next_batch()
                try:
                    seqs.extend(self._store.commit_poll(
                        [m for p in batch for m in p], now_ms=now_ms))
                except StoreError:
                    raise
                except Exception:
                    # A message that cannot be built (a payload bug) would fail the same way on
                    # every retry and block everything behind it. Alone, it goes back to the
                    # caller as the error; in a batch, the polls are tried one by one to find it.
                    if len(batch) == 1:
                        self._held -= len(self._polls.popleft())
                        raise
                    seqs.extend(self._commit_singly(len(batch), now_ms))
                    continue
                for _ in batch:
                    self._held -= len(self._polls.popleft())
        except StoreError as exc:
            dropped = self._enforce_bound()
            return CommitOutcome(seqs=seqs, held=self._held, dropped=dropped, error=exc)
        return CommitOutcome(seqs=seqs, held=0, dropped=0)

    def _next_batch(self) -> list[tuple[OutboxMessage, ...]]:
        batch: list[tuple[OutboxMessage, ...]] = []
        count = 0
        for poll in self._polls:
            if batch and count + len(poll) > BATCH_MESSAGES:
                break
            batch.append(poll)
            count += len(poll)
        return batch

    def _commit_singly(self, polls: int, now_ms: int | None) -> list[int]:
        seqs: list[int] = []
        for _ in range(polls):
            head = self._polls[0]
            try:
                seqs.extend(self._store.commit_poll(head, now_ms=now_ms))
            except StoreError:
                raise
            except Exception:  # noqa: BLE001 - the poll that cannot be built is dropped, counted
                self.dropped_total += len(head)
            self._held -= len(self._polls.popleft())
        return seqs

    def _enforce_bound(self) -> int:
        dropped = 0
        while self._held > self._max:
            oldest = self._polls.popleft()
            self._held -= len(oldest)
            dropped += len(oldest)
        self.dropped_total += dropped
        return dropped
