"""The one durable outbox writer: every producer (reads, group results, line loss, command
results, audit heads, alarm events) commits its messages here.

Why one writer: each producer used to write the store itself, and only the committer kept data in
memory when the disk was full; the others raised, and a task died or a result was lost. Here every
write goes through the same :class:`~gateway.store.HoldingQueue` (DESIGN §5: nothing is dropped
silently — a full disk holds messages in memory, bounded, retried in order, and a drop is counted
and logged), and every commit wakes the outbox pump.

Alarm transitions (raise/clear) are committed together with the alarm table's state change, so
each is published exactly once even across a crash. When the disk is full such a transition is
held too, and retried, in order, before anything newer is written.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.store import HoldingQueue, Store
from gateway.store.errors import StoreFullError
from gateway.store.records import DailyValue, OutboxMessage

log = logging.getLogger(__name__)

#: How many alarm transitions are kept in memory while the disk is full. Alarms are rare; this
#: bound is only reached when a full disk lasts through hundreds of raise/clear flips.
MAX_HELD_ALARMS = 1_000


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One raise or clear of alarm ``key`` with the message that announces it."""

    key: str
    kind: str
    state: str  # "raised" | "cleared"
    details: dict[str, object]
    t_ms: int
    event: OutboxMessage


@dataclass
class OutboxStats:
    """Counts for health: commits made, messages held in memory now, messages dropped since start."""

    commits: int = 0
    held: int = 0
    dropped: int = 0
    held_alarms: int = 0


class OutboxWriter:
    """Commit messages to the store's outbox, with the one disk-full policy, and wake the pump."""

    def __init__(self, store: Store, *, on_commit: Callable[[], None] | None = None,
                 max_held_messages: int = 10_000) -> None:
        self.store = store
        self.on_commit = on_commit
        self.holding = HoldingQueue(store, max_held_messages)
        self.stats = OutboxStats()
        self._alarms: deque[AlarmTransition] = deque()

    def write(self, messages: Sequence[OutboxMessage]) -> None:
        """Commit ``messages`` in one transaction (after anything held from before)."""
        if not messages and not self.holding.held and not self._alarms:
            return
        self._retry_alarms()
        if messages or self.holding.held:
            outcome = self.holding.commit(messages)
            self.stats.commits += 1
            self.stats.held = outcome.held
            self.stats.dropped += outcome.dropped
        self._wake()

    def transition(self, change: AlarmTransition) -> bool:
        """Commit an alarm raise/clear with its event; True when the alarm's state changed (a
        raise of an active alarm, or a clear of an inactive one, publishes nothing). With the
        disk full the transition is held and True is returned: it will be committed."""
        if self._alarms:  # older transitions first, so raise and clear stay in order
            self._alarms.append(change)
            self._retry_alarms()
            self.stats.held_alarms = len(self._alarms)
            return True
        try:
            changed = self._commit_transition(change)
        except StoreFullError as exc:
            self._hold(change, exc)
            return True
        if changed:
            self._wake()
        return changed

    def write_daily(self, values: Sequence[DailyValue], message: OutboxMessage,
                    now_ms: int) -> int:
        """Commit a daily result's message with the daily values that record it as published
        (one transaction: a crash can neither publish a day twice nor forget it); returns the
        message's seq. With the disk full this raises :class:`StoreFullError` and nothing is
        held: the day is still due in its owner's state and is tried again on its next pass,
        which is the same "keep it, retry in order" policy with the state as the hold."""
        (seq,) = self.store.put_daily(values, messages=[message], now_ms=now_ms)
        self.stats.commits += 1
        self._wake()
        return seq

    def flush(self) -> None:
        """Try again to commit what is held (the maintenance loop calls this every minute, so
        held data reaches the disk as soon as space returns even when nothing new is polled)."""
        self.write([])

    @property
    def held(self) -> int:
        """Messages and alarm transitions waiting in memory for disk space."""
        return self.holding.held + len(self._alarms)

    def _commit_transition(self, change: AlarmTransition) -> bool:
        if change.state == "raised":
            return self.store.raise_alarm(change.key, change.kind, change.details, change.t_ms,
                                          event=change.event)
        return self.store.clear_alarm(change.key, change.t_ms, event=change.event)

    def _retry_alarms(self) -> None:
        while self._alarms:
            try:
                self._commit_transition(self._alarms[0])
            except StoreFullError:
                return
            self._alarms.popleft()
        self.stats.held_alarms = 0

    def _hold(self, change: AlarmTransition, exc: StoreFullError) -> None:
        self._alarms.append(change)
        if len(self._alarms) > MAX_HELD_ALARMS:
            lost = self._alarms.popleft()
            self.stats.dropped += 1
            log.error("%s; alarm hold full: dropped the oldest held transition (%s %s)",
                      exc, lost.key, lost.state)
        else:
            log.warning("%s; holding alarm %s %s in memory", exc, change.key, change.state)
        self.stats.held_alarms = len(self._alarms)

    def _wake(self) -> None:
        if self.on_commit is not None:
            self.on_commit()
