"""Outbox pump: moves committed outbox rows to the broker and marks them acknowledged on PUBACK.

The rules it keeps (DESIGN §5):

* **A row leaves the outbox only on PUBACK.** `publish()` returning means the bytes are in paho's
  memory or the kernel's socket buffer, which a silently dead link swallows without a trace.
  Only the broker's acknowledgement (`publish_done(ok=True)`) marks a row acknowledged.
* **Bounded in-flight window.** At most `window` rows are handed to the link at once; the next
  row goes out when an acknowledgement frees a slot. The store, not paho, holds everything else.
* **Order, in two lanes.** Alarms and command results are in the store's priority lane, every
  other row in the read lane (`gateway.store.records.is_priority_topic`). Each time a slot of
  the window is free the pump takes the lowest unsent row of the priority lane, and only when
  that lane is empty the lowest of the read lane, so after an outage of the link an alarm waits
  for at most one window of backlog rows already in flight, not for the whole backlog. Within a
  lane rows go out in `seq` order. After a reconnect the pump starts again from the lowest
  unacknowledged row of each lane, so re-sends precede new rows and each meter's messages keep
  their order (a consumer may see a duplicate, never a reordering within a lane; across lanes
  an alarm may arrive before reads with lower seqs, which DESIGN §5 allows).
* **Backlog is marked.** A row committed before the current connection came up (seq <= the
  store's `last_seq` read at CONNACK) is backlog: it was in flight when a connection dropped,
  committed while the broker was unreachable, or left by an earlier run. It is sent with the
  same `id` and `hist: true` (the payload codec's `mark_hist`), so consumers dedupe it and know
  it is late. The rule is by sequence, not by clock, so an NTP step cannot misclassify rows
  (`gateway.store.records.OutboxRow.is_backlog`, the one rule).
* **Replays** (a consumer asked for a seq range again: `gateway.store.replay`) are rows made
  unacknowledged again in a third lane, between the priority lane and the reads, always marked
  `hist`. A replay may ask for rows below that lane's cursor, so the pump rewinds the lane when
  the store's `requeues` count moves, skipping rows still in flight or acknowledged but not
  yet recorded (no duplicate from the rewind itself).

The pump runs on the event-loop thread; the link calls its `link_up`/`link_down`/
`publish_done` methods there too. Acknowledgements and hand-over counts are written to the store
together, in batches: one `mark_acked` at most every `bookkeeping_delay_s` (the daemon uses
0.1 s), because a SQLite commit per PUBACK would cap throughput at the disk's write rate and
each commit costs more CPU than the publish it records. A crash can lose the last
`bookkeeping_delay_s` of acknowledgements: those rows are sent again with the same `id`, which
DESIGN §5 allows (a duplicate, never a loss); it can also lose their hand-over counts, which
are diagnostics only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gateway.store.errors import StoreError
from gateway.store.records import OutboxCursor, OutboxRow
from gateway.uplink.failure_log import FailureLog
from gateway.uplink.mqtt_link import PublishListener
from gateway.uplink.state_messages import wall_clock_ms
from protocols.payload import PayloadError
from protocols.payload import mark_hist as payload_mark_hist

log = logging.getLogger(__name__)


class Outbox(Protocol):
    """The part of the store the pump uses."""

    def pending(self, limit: int, after: OutboxCursor | None) -> Sequence[OutboxRow]:
        """At most ``limit`` unacknowledged rows past ``after`` (all if None): the priority
        lane's first, then the read lane's, each lane ascending by seq."""
        ...

    def mark_acked(self, seqs: Sequence[int], when_ms: int, attempted: Sequence[int] = ()) -> object:
        """Record the broker's acknowledgement of ``seqs`` and count the hand-overs to the MQTT
        client in ``attempted`` (diagnostics: rows the broker keeps refusing), in one write;
        must tolerate seqs already acknowledged."""
        ...

    @property
    def last_seq(self) -> int:
        """The highest seq committed so far (0 for an empty store)."""
        ...

    @property
    def outbox_writes(self) -> int:
        """A count that moves with every transaction that adds outbox rows: while it stands
        still, a lane read to its end has nothing new."""
        ...

    @property
    def requeues(self) -> int:
        """How many times a replay queued acknowledged rows again (their seqs may lie below
        the replay lane's cursor, so the pump rewinds that lane when this changes)."""
        ...


class PublishLink(Protocol):
    """The part of `MqttLink` the pump uses."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None: ...

    def set_listener(self, listener: PublishListener | None) -> None: ...


@dataclass(frozen=True, slots=True)
class PumpStatus:
    """Snapshot for the health message.

    Fields: inflight (rows handed to the link, not yet acknowledged), window, published (rows
    handed to the link, backlog included), acked, resent (backlog sent with hist), rejected
    (negative PUBACKs), max_inflight (high-water mark of inflight), last_error.
    """

    inflight: int
    window: int
    published: int
    acked: int
    resent: int
    rejected: int
    max_inflight: int
    last_error: str | None


class OutboxPump:
    """Publishes outbox rows through an `MqttLink` and acknowledges them on PUBACK.

    Usage (from a coroutine)::

        pump = OutboxPump(store, link, window=64)
        pump.start()
        ...                 # after each committed poll cycle: pump.notify()
        await pump.stop()   # before link.stop(): lets in-flight rows get their PUBACK
    """

    def __init__(
        self,
        outbox: Outbox,
        link: PublishLink,
        *,
        window: int = 64,
        mark_hist: Callable[[bytes], bytes] = payload_mark_hist,
        clock_ms: Callable[[], int] = wall_clock_ms,
        idle_poll_s: float = 5.0,
        bookkeeping_delay_s: float = 0.0,
    ) -> None:
        if window < 1:
            raise ValueError(f"[mqtt] inflight_window: {window} must be >= 1")
        self._outbox = outbox
        self._link = link
        self._window = window
        self._mark_hist = mark_hist
        self._clock_ms = clock_ms
        # A safety net only: notify() is the normal wake-up after a commit.
        self._idle_poll_s = idle_poll_s
        self._connect_seq = 0  # store.last_seq when the current connection came up
        self._inflight: dict[int, int] = {}  # mid -> seq
        # highest seq of each lane handed to the link on this connection
        self._cursor = OutboxCursor()
        self._requeues_seen = 0  # the store's requeues when the replay lane was last rewound
        #: (the store's outbox_writes and requeues, the cursor) when a read of every lane came
        #: back short: until one of them moves, reading again would find nothing (a PUBACK wakes
        #: the pump about a hundred times a second; most of those wake-ups need no query).
        self._exhausted: tuple[int, int, OutboxCursor] | None = None
        self._acks: list[int] = []
        self._attempted: list[int] = []  # handed to the link, count not yet written
        self._bookkeeping_delay_s = bookkeeping_delay_s
        self._flush_handle: asyncio.Handle | None = None
        self._nudge_handle: asyncio.TimerHandle | None = None  # the idle_poll_s safety net
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._published = 0
        self._acked = 0
        self._resent = 0
        self._rejected = 0
        self._max_inflight = 0
        self._last_error: str | None = None
        # Store failures repeat on every retry (each second on a full disk): one line per
        # distinct error, a summary at most once a minute, no traceback — a StoreError is the
        # disk talking, not a bug (gateway.uplink.failure_log).
        self._ack_failures = FailureLog(log, "outbox: recording acknowledgements")
        self._read_failures = FailureLog(log, "outbox: reading pending rows")
        self._rejections = FailureLog(log, "outbox", level=logging.ERROR)

    # -- public API ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("OutboxPump.start() called twice")
        self._link.set_listener(self)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-pump")
        if self._link.connected:  # started after the CONNACK: we missed link_up
            self.link_up()
        self._wake.set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The pump's own task (the daemon's supervisor watches it)."""
        return self._task

    @property
    def alive(self) -> bool:
        """The pump's task is running (for the daemon's watchdog progress check)."""
        return self._task is not None and not self._task.done()

    def notify(self) -> None:
        """New rows were committed: publish them if the window allows."""
        self._wake.set()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop the pump after a final drain: rows committed up to now (the committer's last
        batch included) are published, window by window, and their PUBACKs awaited, for at most
        ``drain_timeout`` seconds, so a clean shutdown leaves nothing for the next start that it
        could deliver now. The pump keeps listening to the link: PUBACKs that arrive later
        (until the link goes down) still mark rows acknowledged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        self._stopping = True
        if self._task is not None:
            # Ask the loop to finish rather than cancelling it: a cancel that races with the
            # wake-up event can be swallowed by the wait inside (Python 3.11's wait_for).
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        while self._link.connected:
            try:
                self._fill_window(final=True)
            except StoreError as exc:  # the store failing: what is left goes out next start
                self._last_error = f"final drain failed: {exc}"
                log.error("outbox: %s; the rest goes out at the next start", self._last_error)
                break
            remaining = deadline - loop.time()
            if not self._inflight or remaining <= 0:
                break
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except TimeoutError:
                break
        self._flush_acks()

    def status(self) -> PumpStatus:
        return PumpStatus(
            inflight=len(self._inflight),
            window=self._window,
            published=self._published,
            acked=self._acked,
            resent=self._resent,
            rejected=self._rejected,
            max_inflight=self._max_inflight,
            last_error=self._last_error,
        )

    # -- link events (event-loop thread) -------------------------------------------------------

    def link_up(self) -> None:
        self._cursor = OutboxCursor()  # start again from the lowest unacknowledged rows
        self._wake.set()
        try:
            self._connect_seq = self._outbox.last_seq
        except StoreError as exc:
            # Unknown where the backlog ends: mark everything as backlog. `hist` only tells
            # consumers a message may be late or repeated, so erring this way is harmless.
            self._connect_seq = sys.maxsize
            self._last_error = f"reading the store's last seq failed: {exc}"
            log.warning("outbox: %s; sending everything as backlog", self._last_error)

    def link_down(self) -> None:
        # PUBACKs already received are real deliveries: record them before anything else.
        self._flush_acks()
        # Everything still in flight is presumed lost; paho's copies were dropped by the link.
        # Those rows are <= the next connection's last_seq, so they go out again as backlog.
        self._inflight.clear()
        self._cursor = OutboxCursor()
        self._idle.set()

    def publish_done(self, mid: int, ok: bool, reason: str) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if ok:
            self._acks.append(seq)
            self._acked += 1
            self._rejections.recovered()
            self._schedule_bookkeeping()
        else:
            # The row stays unacknowledged in the store and is sent again (marked hist) after
            # the next reconnect or restart; re-sending at once would only hammer the same
            # refusal (ACL, quota, payload too large).
            self._rejected += 1
            self._last_error = (
                f"broker rejected outbox row seq {seq}: {reason} — check the broker ACL and "
                "limits for this gateway's topics"
            )
            self._rejections.failed(self._last_error)
        if not self._inflight:
            self._idle.set()
        if self._may_find_rows():
            self._wake.set()  # room in the window, and perhaps rows to fill it

    # -- internals -----------------------------------------------------------------------------

    async def _run(self) -> None:
        # The safety net wakes the pump every idle_poll_s from a timer of its own: a timeout
        # around each wait would make and cancel a timer for every wake-up (one per commit).
        self._nudge()
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    self._fill_window()
                except StoreError as exc:  # the store failing must not kill the pump
                    self._last_error = f"reading the outbox failed: {exc}"
                    self._read_failures.failed(f"{exc}; retrying every second")
                    await asyncio.sleep(1.0)
                else:
                    self._read_failures.recovered()
        finally:
            if self._nudge_handle is not None:
                self._nudge_handle.cancel()
                self._nudge_handle = None

    def _nudge(self) -> None:
        self._wake.set()
        self._nudge_handle = asyncio.get_running_loop().call_later(self._idle_poll_s, self._nudge)

    def _fill_window(self, *, final: bool = False) -> None:
        handed: list[int] = []
        try:
            self._fill(handed, final)
        finally:
            if handed:
                self._record_attempts(handed)

    def _fill(self, handed: list[int], final: bool = False) -> None:
        while (final or not self._stopping) and self._link.connected:
            room = self._window - len(self._inflight)
            if room <= 0:
                return
            self._rewind_replay_lane()
            writes = self._outbox.outbox_writes
            if self._exhausted == (writes, self._requeues_seen, self._cursor):
                return  # nothing written since every lane was read to its end from here
            rows = self._outbox.pending(room, self._cursor)
            # A rewound replay lane meets rows in flight, or acknowledged with the record not
            # yet written: queued again meanwhile, they need no second send.
            sent = ({*self._inflight.values(), *self._acks} if any(r.replay for r in rows)
                    else set())
            for row in rows:
                if row.seq in sent:
                    self._cursor = self._cursor.past(row)
                    continue
                backlog = row.is_backlog(self._connect_seq)
                payload = self._wire_payload(row) if backlog else row.payload
                mid = self._link.publish(row.topic, payload, row.qos)
                if mid is None:
                    return  # link went down; link_down()/link_up() reset the cursor
                self._inflight[mid] = row.seq
                self._cursor = self._cursor.past(row)
                handed.append(row.seq)
                self._published += 1
                if backlog:
                    self._resent += 1
            self._max_inflight = max(self._max_inflight, len(self._inflight))
            if len(rows) < room:
                self._exhausted = (writes, self._requeues_seen, self._cursor)
                return  # caught up with the store

    def _may_find_rows(self) -> bool:
        """False when a fill would only find every lane read to its end again: nothing was
        written or queued again since, and the cursor has not moved back. A PUBACK then frees
        room with nothing to fill it, and the pump is not woken (a commit wakes it through
        :meth:`notify`)."""
        exhausted = self._exhausted
        return exhausted is None or exhausted != (
            self._outbox.outbox_writes, self._outbox.requeues, self._cursor)

    def _rewind_replay_lane(self) -> None:
        requeues = self._outbox.requeues
        if requeues != self._requeues_seen:
            self._requeues_seen = requeues
            self._cursor = replace(self._cursor, replay=0)

    def _wire_payload(self, row: OutboxRow) -> bytes:
        try:
            return self._mark_hist(row.payload)
        except PayloadError as exc:
            # A stored payload the codec cannot re-read must not block every row behind it:
            # send it as stored (same id, consumers still dedupe) and say so.
            self._last_error = (
                f"outbox row seq {row.seq}: cannot mark as hist ({exc}); sent as stored"
            )
            log.error("outbox: %s", self._last_error)
            return row.payload

    def _record_attempts(self, seqs: list[int]) -> None:
        self._attempted.extend(seqs)
        self._schedule_bookkeeping()

    def _schedule_bookkeeping(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._bookkeeping_delay_s, self._flush_acks)

    def _flush_acks(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # we may be called directly (link_down, stop)
            self._flush_handle = None
        if not self._acks and not self._attempted:
            return
        seqs, self._acks = self._acks, []
        attempted, self._attempted = self._attempted, []
        try:
            self._outbox.mark_acked(seqs, self._clock_ms(), attempted)
            self._ack_failures.recovered()
        except StoreError as exc:
            # Keep the acknowledgements: the next flush retries. If the daemon dies first, these
            # rows are re-sent (with hist) on restart — a duplicate, never a loss. The hand-over
            # counts are diagnostics: dropped rather than kept growing while the disk refuses.
            self._acks = seqs + self._acks
            self._last_error = f"recording {len(seqs)} acknowledgements failed: {exc}"
            self._ack_failures.failed(
                f"{exc}; {len(self._acks)} kept in memory and retried every second"
            )
            self._flush_handle = asyncio.get_running_loop().call_later(1.0, self._flush_acks)
