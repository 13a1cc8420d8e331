"""Plain values passed in and out of the store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from protocols.frozen import frozen_maker
from protocols.payload import Binding, Envelope, ReadRecord, build_reads, build_reads_v2
from protocols.payload.compact import encode_reads_v2


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A durable message to commit: ``topic``, ``qos``, and ``build`` — called inside the
    committing transaction with the seq assigned to this message, it returns the payload bytes.

    Why a callback: the payload carries its own ``seq`` and ``id``, and the seq is only known once
    the store has allocated it under its write lock. Building inside the transaction keeps seq
    allocation, payload and row one atomic step: if ``build`` raises, the transaction rolls back
    and the seq is not consumed. ``build`` must be quick and must not touch the store.

    ``meter`` and ``reads`` are the read records the message carries; they are stored in the
    ``reads`` table with the message's seq, in the same transaction. ``indexed``: the store notes
    where each of them went (``read_versions``, gateway/store/versions.py) — VEE's interval
    records, which a later correction names by message id and index.
    """

    topic: str
    qos: int
    build: Callable[[int], bytes]
    meter: str | None = None
    reads: Sequence[ReadRecord] = ()
    indexed: bool = False

    @classmethod
    def prebuilt(cls, *, topic: str, qos: int, payload: bytes) -> OutboxMessage:
        """A message whose payload was built before (by another store: a spill adopted at
        start); it keeps that payload's own id and seq whatever seq this store gives its row."""

        def build(_seq: int) -> bytes:
            return payload

        return cls(topic=topic, qos=qos, build=build)

    @classmethod
    def for_reads(
        cls, *, topic: str, gw: str, epoch: int, ts: int, meter: str, reads: Sequence[ReadRecord],
        binding: Binding | None = None,
    ) -> OutboxMessage:
        """The reads message of one meter from one poll, at QoS 1 (DESIGN.md §4): schema v2
        naming ``binding`` when one is given (it must be ``meter``'s), else v1."""
        records = tuple(reads)
        # The v2 encoder range-checks epoch, seq and ts itself; with a non-empty gateway id and
        # int numbers, the Envelope (whose checks would be the same) is skipped: one message
        # per meter poll. Anything else goes through it and fails as it says.
        direct = (binding is not None and type(gw) is str and bool(gw) and type(epoch) is int
                  and type(ts) is int)

        def build(seq: int) -> bytes:
            if binding is not None:
                if direct and type(seq) is int:
                    return encode_reads_v2(gw, epoch, seq, ts, binding, records)
                return build_reads_v2(Envelope(gw, epoch, seq, ts), binding, records)
            return build_reads(Envelope(gw, epoch, seq, ts), meter, records)

        if cls is OutboxMessage:  # one per meter poll: without the frozen __init__
            return _outbox_message(topic, 1, build, meter, records, False)
        return cls(
            topic=topic,
            qos=1,
            build=build,
            meter=meter,
            reads=records,
        )

    @classmethod
    def for_intervals(cls, *, topic: str, meter: str, reads: Sequence[ReadRecord],
                      build: Callable[[int], bytes]) -> OutboxMessage:
        """VEE's interval records of one meter (QoS 1, ``indexed``); ``build`` makes the payload
        from the seq (it fills in what the records supersede, gateway/pipeline/corrections.py)."""
        return cls(topic=topic, qos=1, build=build, meter=meter, reads=tuple(reads), indexed=True)


#: OutboxMessage(...) with every field given (protocols/frozen.py).
_outbox_message = frozen_maker(OutboxMessage)


#: Topic endings of the durable messages that travel in the priority lane of the outbox: alarms
#: (``P/G/alarms``) and command results (``P/G/cmd/result``). After an outage of the link the
#: read backlog can be tens of thousands of rows; an outage alarm or a command's answer that
#: queued behind it would reach the utility hours late.
PRIORITY_TOPIC_ENDINGS: tuple[str, ...] = ("/alarms", "/cmd/result")

#: Topic levels followed by a meter or group id (``P/G/reads/{meter}``, ``P/G/groups/{group}``):
#: a meter that happens to be called ``alarms`` must not lift its reads into the priority lane.
_ID_LEVELS = ("/reads/", "/groups/")


def is_priority_topic(topic: str) -> bool:
    """Whether a message on ``topic`` goes in the outbox's priority lane — the one rule, applied
    by the store when it commits the row (so producers need not know about lanes). By topic
    because the store sees topics, not kinds; ids are single topic levels, so ``cmd/result``
    can only be the results topic, and ``alarms`` is the alarms topic unless it is an id."""
    if not topic.endswith(PRIORITY_TOPIC_ENDINGS):
        return False
    return not any(topic.endswith(level + "alarms") for level in _ID_LEVELS)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An unacknowledged outbox row as stored: the payload exactly as committed (never with
    ``hist``), the number of times it was handed to the MQTT client, its commit time, whether
    it is in the priority lane (:func:`is_priority_topic`), and whether a replay queued it again
    after it was acknowledged (``replay``: it goes in the replay lane, always marked ``hist``)."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    created_ms: int
    attempts: int
    priority: bool = False
    replay: bool = False

    def is_backlog(self, connect_seq: int) -> bool:
        """Whether this row is backlog on a connection established when the store's last seq was
        ``connect_seq`` (:attr:`Store.last_seq` read at CONNACK).

        The rule is by sequence, not by clock: a row committed before the current connection was
        either never sent (committed while offline or before a restart) or sent on a connection
        that died before its PUBACK — late either way. Rows committed after the connection came
        up are live even when they queue behind a backlog. Wall-clock times would misclassify
        rows whenever NTP steps the clock, which a gateway does right after boot. A row a replay
        queued again is backlog by definition, whenever it was committed.
        """
        return self.replay or self.seq <= connect_seq


@dataclass(frozen=True, slots=True)
class OutboxCursor:
    """How far the pump has handed rows to the link on the current connection, per lane: the
    highest seq of each lane. Two numbers because the lanes overtake each other — an alarm
    committed at seq 50,001 goes out while the read lane is still at seq 3,000 — and each
    lane must still resume exactly after its own last row. The zero cursor means "from the
    lowest unacknowledged row of each lane" (a new connection). ``replay`` is the replay lane's
    (rows a consumer asked for again, :meth:`gateway.store.Store.requeue`)."""

    priority: int = 0
    bulk: int = 0
    replay: int = 0

    def past(self, row: OutboxRow) -> OutboxCursor:
        """The cursor after ``row`` was handed to the link."""
        # Built directly, not with dataclasses.replace (which inspects the fields): once per row
        # the pump hands over.
        # _cursor: OutboxCursor(...) without the frozen dataclass's __init__ (once per row the
        # pump hands over, protocols/frozen.py).
        if row.replay:
            return _cursor(self.priority, self.bulk, row.seq)
        if row.priority:
            return _cursor(row.seq, self.bulk, self.replay)
        return _cursor(self.priority, row.seq, self.replay)


_cursor = frozen_maker(OutboxCursor)
#: OutboxRow(...) with every field given, without the frozen dataclass's __init__ (one per row
#: the pump reads, protocols/frozen.py).
outbox_row = frozen_maker(OutboxRow)


@dataclass(frozen=True, slots=True)
class StoredRead:
    """A read record as stored, with its meter and the seq of the message that carried it."""

    seq: int
    meter: str
    record: ReadRecord


@dataclass(frozen=True, slots=True)
class AlarmState:
    """An alarm as the store remembers it; ``cleared_ms`` is None while it is active."""

    key: str
    kind: str
    raised_ms: int
    cleared_ms: int | None
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DailyValue:
    """One day's value of one quantity of a meter (the daily freeze register), for VEE:
    ``value`` is exact, None when the day is null (quality ``N``)."""

    meter: str
    quantity: str
    day: dt.date
    value: Decimal | None
    quality: str


@dataclass(frozen=True, slots=True)
class DiskStatus:
    """Free and total bytes of the filesystem holding the database, and whether the free space is
    below the configured minimum (absolute or percentage) — the disk-pressure alarm condition."""

    free_bytes: int
    total_bytes: int
    alarm: bool

    def describe(self) -> str:
        pct = 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 0.0
        return f"{self.free_bytes / 2**20:.1f} MiB free of {self.total_bytes / 2**20:.1f} MiB ({pct:.1f}%)"
