"""The typed messages the consumer stores: what :class:`central.decoding.Decoder` makes of the
bytes a broker delivered (one class per message kind; ``Inbound`` is any of them).

Storage (:mod:`central.storage`) works on these alone. Most are frozen dataclasses; a reads
message (:class:`ReadsIn`) may carry its COPY lines instead of built rows
(:mod:`central.copy_text`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from protocols.payload import Binding, ReadRow

__all__ = ["AlarmIn", "BirthIn", "DeathIn", "GroupIn", "HealthIn", "Inbound", "InboundError",
           "ReadsIn", "ResultIn", "Stream", "UnresolvedReadsIn"]


class InboundError(ValueError):
    """A message the consumer will not store: the text says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Stream:
    """Where a durable message sits: gateway, store epoch and sequence number."""

    gw: str
    epoch: int
    seq: int


class ReadsIn:
    """A reads message: ``rows`` its records as stored, values as exact decimal text (``rev``
    orders corrections).

    A plain v2 message (every record a bare mantissa in table order: a poll) also carries
    ``copy_lines``, the COPY text of its rows (:func:`central.copy_text.v2_copy_lines`), and
    ``times``, its rows' times; its ``rows`` are then built only when asked for (a batch that
    goes through the upsert, the tests), by ``rows_v2`` from the same message and binding.
    """

    __slots__ = ("_build", "_rows", "copy_lines", "hist", "message_id", "meter", "stream", "times",
                 "ts")

    def __init__(self, stream: Stream, message_id: str, ts: int, meter: str,
                 rows: tuple[ReadRow, ...] | Callable[[], tuple[ReadRow, ...]], hist: bool,
                 copy_lines: list[str] | None = None, times: list[int] | None = None) -> None:
        self.stream = stream
        self.message_id = message_id
        self.ts = ts
        self.meter = meter
        self.hist = hist
        self.copy_lines = copy_lines
        self._rows: tuple[ReadRow, ...] | None = None
        self._build: Callable[[], tuple[ReadRow, ...]] | None = None
        if callable(rows):
            self._build = rows
        else:
            self._rows = rows
        self.times = times if times is not None else [r.t for r in self.rows]

    @property
    def rows(self) -> tuple[ReadRow, ...]:
        if self._rows is None:
            assert self._build is not None
            self._rows, self._build = self._build(), None
        return self._rows

    @property
    def count(self) -> int:
        """How many rows (values) the message holds."""
        return len(self.copy_lines) if self.copy_lines is not None else len(self.rows)

    def _key(self) -> tuple[object, ...]:
        return (self.stream, self.message_id, self.ts, self.meter, self.rows, self.hist)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReadsIn) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"ReadsIn(stream={self.stream!r}, message_id={self.message_id!r}, "
                f"ts={self.ts!r}, meter={self.meter!r}, rows={self.rows!r}, "
                f"hist={self.hist!r})")


@dataclass(frozen=True, slots=True)
class UnresolvedReadsIn:
    """A v2 reads message whose binding no birth has declared to this consumer yet: envelope
    checked (so it dedupes and fills its seq like any other), records kept as the bytes that
    came, to be decoded once the binding is known."""

    stream: Stream
    message_id: str
    ts: int
    binding: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class AlarmIn:
    """A durable alarm raise or clear event; ``details`` is the free-form map, JSON-ready."""

    stream: Stream
    message_id: str
    ts: int
    kind: str
    key: str
    state: str
    severity: str
    meter: str | None
    details: dict[str, object]


@dataclass(frozen=True, slots=True)
class GroupIn:
    """A groups message, kept whole (JSON) for the systems that read group totals."""

    stream: Stream
    message_id: str
    ts: int
    group: str
    body: dict[str, object]


@dataclass(frozen=True, slots=True)
class ResultIn:
    """A command result or audit chain head from ``P/G/cmd/result``. ``verified`` is True when
    the signature was checked with the gateway's pinned key; ``cmd`` is None for a chain head."""

    stream: Stream
    message_id: str
    ts: int
    cmd: bytes | None
    status: str
    reason: str
    verified: bool


@dataclass(frozen=True, slots=True)
class BirthIn:
    """The retained birth on ``P/G/state``: ``seq`` is the gateway's high-water mark;
    ``bindings`` the v2 alias bindings it declares for store epoch ``aliases_epoch`` (none from
    a gateway publishing v1)."""

    gw: str
    epoch: int
    message_id: str
    ts: int
    seq: int
    bdseq: int
    bindings: tuple[Binding, ...] = ()
    aliases_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class DeathIn:
    """The last will on ``P/G/state`` (``ts`` is the connect time, not the time of death)."""

    gw: str
    epoch: int
    message_id: str
    ts: int
    seq: int
    bdseq: int


@dataclass(frozen=True, slots=True)
class HealthIn:
    """Periodic health. ``seq`` is the high-water mark; ``outbox_depth`` 0 means every durable
    message up to it has been acknowledged by the broker (what tail-gap detection needs)."""

    gw: str
    epoch: int
    message_id: str
    ts: int
    seq: int
    outbox_depth: int | None


Inbound: TypeAlias = (ReadsIn | UnresolvedReadsIn | AlarmIn | GroupIn | ResultIn | BirthIn
                      | DeathIn | HealthIn)
