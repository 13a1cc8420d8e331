"""The one durable outbox writer: every producer (reads, group results, line loss, command
results, audit heads, alarm events) commits its messages here.

Why one writer: each producer used to write the store itself, and only the committer kept data in
memory when the disk was full; the others raised, and a task died or a result was lost. Here every
write goes through the same :class:`~gateway.store.HoldingQueue` (DESIGN §5: nothing is dropped
silently) and every commit wakes the outbox pump.

A store that cannot be written is a state, not a crash. Any :class:`StoreError` — disk full, a
filesystem remounted read-only after an I/O error, a locked file — moves the writer into
"failing": messages are held in memory (bounded; a drop is counted and logged), alarm transitions
are held in order, the failure is logged once with what to do, and ``on_state_change`` tells the
daemon, which raises the alarm outside the store (an ephemeral MQTT message and health). Each
later write, and :meth:`OutboxWriter.flush` every few seconds, tries again; the first success
commits what was held (in batches), checkpoints the WAL and reports the recovery.

When the disk is full the writer first gives up the ballast (a reserve file laid while there was
room, :class:`~gateway.store.disk.Ballast`) and retries at once: that room lets the held data and
the ``disk.full`` alarm be committed instead of waiting in memory.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.store import HoldingQueue, Store
from gateway.store.disk import Ballast
from gateway.store.errors import StoreError, StoreFullError
from gateway.store.records import DailyValue, OutboxMessage

log = logging.getLogger(__name__)

#: How many alarm transitions are kept in memory while the store fails. Alarms are rare; this
#: bound is only reached when a failure lasts through hundreds of raise/clear flips.
MAX_HELD_ALARMS = 1_000
#: Repeated drops are summarised in the log at most this often (small flash, long outages).
DROP_LOG_INTERVAL_S = 60.0


class Committed(enum.Enum):
    """What became of an alarm transition handed to :meth:`OutboxWriter.transition`."""

    COMMITTED = "committed"  # in the store with its event
    HELD = "held"  # the store failed: kept in memory, committed when it works again
    UNCHANGED = "unchanged"  # the alarm was already in that state: nothing to publish


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One raise or clear of alarm ``key`` with the message that announces it."""

    key: str
    kind: str
    state: str  # "raised" | "cleared"
    details: dict[str, object]
    t_ms: int
    event: OutboxMessage


@dataclass(frozen=True, slots=True)
class StoreFailure:
    """Why the store cannot be written now, since when (monotonic s), and what to do."""

    error: str
    full: bool
    since: float
    path: str

    @property
    def hint(self) -> str:
        if self.full:
            return (f"free space on the filesystem of {self.path}: held data is committed as "
                    "soon as there is room, without a restart")
        return (f"check the filesystem of {self.path} (read-only after an I/O error? see "
                "dmesg); held data is committed when it is writable again, or spilled at stop")


@dataclass
class OutboxStats:
    """Counts for health: commits made, messages held in memory now, messages dropped since start."""

    commits: int = 0
    held: int = 0
    dropped: int = 0
    held_alarms: int = 0
    failures: int = 0
    ballast_released: int = 0


class OutboxWriter:
    """Commit messages to the store's outbox, with the one failure policy, and wake the pump."""

    def __init__(self, store: Store, *, on_commit: Callable[[], None] | None = None,
                 max_held_messages: int = 10_000, ballast: Ballast | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.on_commit = on_commit
        self.ballast = ballast
        #: Told ``StoreFailure`` when the store starts failing and ``None`` when it works again.
        self.on_state_change: Callable[[StoreFailure | None], None] | None = None
        self.holding = HoldingQueue(store, max_held_messages)
        self.stats = OutboxStats()
        self.failure: StoreFailure | None = None
        self._alarms: deque[AlarmTransition] = deque()
        self._clock = clock
        self._reported: StoreFailure | None = None
        self._reporting = False
        self._drops_logged_at = -DROP_LOG_INTERVAL_S
        self._drops_unlogged = 0

    # -- writing ------------------------------------------------------------------------------
    def write(self, messages: Sequence[OutboxMessage]) -> None:
        """Commit ``messages`` in one transaction (after anything held from before); hold them
        when the store fails."""
        if not messages and not self.held:
            return
        error = self._retry_alarms()
        if messages or self.holding.held:
            outcome = self.holding.commit(messages)
            if isinstance(outcome.error, StoreFullError) and self._release_ballast():
                outcome = self.holding.commit([])
            self.stats.commits += 1
            self._count_drops(outcome.dropped)
            error = error or outcome.error
        self.stats.held = self.holding.held
        self._settle(error)
        self._wake()

    def transition(self, change: AlarmTransition) -> Committed:
        """Commit an alarm raise/clear with its event."""
        if self._alarms:  # older transitions first, so raise and clear stay in order
            self._alarms.append(change)
            self._settle(self._retry_alarms())
            return Committed.HELD if change in self._alarms else Committed.COMMITTED
        try:
            changed = self._commit_transition(change)
        except StoreFullError as exc:
            if self._release_ballast():
                return self.transition(change)
            self._hold_alarm(change)
            self._settle(exc)
            return Committed.HELD
        except StoreError as exc:
            self._hold_alarm(change)
            self._settle(exc)
            return Committed.HELD
        self._settle(None)
        if changed:
            self._wake()
            return Committed.COMMITTED
        return Committed.UNCHANGED

    def write_daily(self, values: Sequence[DailyValue], message: OutboxMessage,
                    now_ms: int) -> int:
        """Commit a daily result's message with the daily values that record it as published
        (one transaction: a crash can neither publish a day twice nor forget it); returns the
        message's seq. When the store fails this raises :class:`StoreError` and nothing is
        held: the day is still due in its owner's state and is tried again on its next pass,
        which is the same "keep it, retry in order" policy with that state as the hold."""
        try:
            (seq,) = self.store.put_daily(values, messages=[message], now_ms=now_ms)
        except StoreError as exc:
            self._settle(exc)
            raise
        self.stats.commits += 1
        self._wake()
        return seq

    def flush(self) -> None:
        """Try again to commit what is held (the maintenance loop calls this every few seconds,
        so held data reaches the disk as soon as it can, even when nothing new is polled)."""
        if self.held:
            self.write([])

    def held_state(self, key: str) -> str | None:
        """The state of the newest held transition of alarm ``key`` (None: none held)."""
        for change in reversed(self._alarms):
            if change.key == key:
                return change.state
        return None

    @property
    def held(self) -> int:
        """Messages and alarm transitions waiting in memory for the store."""
        return self.holding.held + len(self._alarms)

    def held_items(self) -> list[tuple[OutboxMessage, AlarmTransition | None]]:
        """Everything held, for a spill at stop: alarm transitions first (with the state change
        they carry), then the held polls, oldest first."""
        items: list[tuple[OutboxMessage, AlarmTransition | None]] = [
            (change.event, change) for change in self._alarms]
        items.extend((message, None) for message in self.holding.held_messages())
        return items

    def forget_held(self) -> int:
        """Drop what is held once it was saved elsewhere (a spill file)."""
        count = len(self._alarms) + self.holding.forget()
        self._alarms.clear()
        self.stats.held = self.stats.held_alarms = 0
        return count

    # -- internals ------------------------------------------------------------------------------
    def _commit_transition(self, change: AlarmTransition) -> bool:
        if change.state == "raised":
            return self.store.raise_alarm(change.key, change.kind, change.details, change.t_ms,
                                          event=change.event)
        return self.store.clear_alarm(change.key, change.t_ms, event=change.event)

    def _retry_alarms(self) -> StoreError | None:
        while self._alarms:
            try:
                self._commit_transition(self._alarms[0])
            except StoreFullError as exc:
                if not self._release_ballast():
                    return exc
                continue
            except StoreError as exc:
                return exc
            self._alarms.popleft()
        self.stats.held_alarms = 0
        return None

    def _hold_alarm(self, change: AlarmTransition) -> None:
        self._alarms.append(change)
        if len(self._alarms) > MAX_HELD_ALARMS:
            lost = self._alarms.popleft()
            self._count_drops(1)
            log.error("alarm hold full: dropped the oldest held transition (%s %s)",
                      lost.key, lost.state)
        self.stats.held_alarms = len(self._alarms)

    def _release_ballast(self) -> bool:
        if self.ballast is None:
            return False
        freed = self.ballast.release()
        if freed:
            self.stats.ballast_released += 1
            log.warning("disk full: released the %.1f MiB reserve %s so held data and alarms "
                        "can be committed", freed / 2**20, self.ballast.path)
        return freed > 0

    def _count_drops(self, dropped: int) -> None:
        if not dropped:
            return
        self.stats.dropped += dropped
        self._drops_unlogged += dropped
        now = self._clock()
        if now - self._drops_logged_at >= DROP_LOG_INTERVAL_S:
            log.error("store failing and the memory hold is full: dropped %d messages (%d since "
                      "start); %s", self._drops_unlogged, self.stats.dropped,
                      self.failure.hint if self.failure else "")
            self._drops_logged_at, self._drops_unlogged = now, 0

    def _settle(self, error: StoreError | None) -> None:
        """Record the store's state after an operation and tell the daemon when it changed."""
        if error is not None and self.failure is None:
            self.failure = StoreFailure(str(error), isinstance(error, StoreFullError),
                                        self._clock(), str(self.store.path))
            self.stats.failures += 1
            log.error("store %s cannot be written: %s — holding up to %d messages in memory "
                      "and retrying; %s", self.store.path, error, self.holding.max_messages,
                      self.failure.hint)
        elif error is not None and self.failure is not None and \
                isinstance(error, StoreFullError) != self.failure.full:
            self.failure = StoreFailure(str(error), isinstance(error, StoreFullError),
                                        self.failure.since, str(self.store.path))
        elif error is None and self.failure is not None and not self.held:
            log.warning("store %s writable again after %.0f s: everything held is committed",
                        self.store.path, self._clock() - self.failure.since)
            self.failure = None
            try:
                self.store.checkpoint()  # give the disk back the WAL the backlog used
            except StoreError as exc:
                log.warning("WAL checkpoint after recovery failed: %s", exc)
        self._report()

    def _report(self) -> None:
        if self._reporting or self.failure == self._reported or self.on_state_change is None:
            return
        if self.failure is not None and self._reported is not None and \
                self.failure.full == self._reported.full:
            return
        self._reporting = True
        try:
            self._reported = self.failure
            self.on_state_change(self.failure)
        finally:
            self._reporting = False

    def _wake(self) -> None:
        if self.on_commit is not None:
            self.on_commit()
