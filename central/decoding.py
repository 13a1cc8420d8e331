"""Bytes from the broker → typed inbound messages: the one place the consumer decodes payloads.

Everything the consumer stores goes through a :class:`Decoder`, and it decodes only through
the public API of :mod:`protocols.payload` and :mod:`protocols.commands` — the same rules the
gateway builds by. Both payload schemas come in here: v1 reads are self-describing; v2 reads
name their meter and quantities by a *binding* that the gateway's retained birth declares
(docs/payloads.md), so the decoder holds an :class:`~protocols.payload.AliasBook` and learns
every birth it decodes. A v2 reads message whose binding it does not know (the worker started
after the birth and the broker lost the retained copy, or another worker saw the birth) is not
an error and is not guessed at: the decoder first asks ``lookup`` (the bindings table every
worker shares, :mod:`central.storage.bindings`) and otherwise returns :class:`UnresolvedReadsIn`,
which storage parks until the binding is known (docs/central.md, "Payload v2").

The topic says what kind a message should be (DESIGN §4: ``P/G/reads/{meter}``, ``P/G/alarms``,
``P/G/state``, ``P/G/health``, ``P/G/groups/{group}``, ``P/G/cmd/result``); the payload must
agree (its ``gw`` is the topic's gateway, a reads message's ``meter`` the topic's meter).
Anything that does not decode raises :class:`InboundError` with one line saying why; the worker
counts and logs it and never stores it.

Durable messages carry ``id = "{gw}:{epoch:016x}:{seq}"`` (see :mod:`protocols.payload`): the
epoch comes from the id, and an id that does not match the envelope's ``gw`` and ``seq`` is
rejected — dedupe and gap detection key on (gw, epoch, seq), so they must be the message's own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TypeAlias, cast

from central.copy_text import v2_copy_lines
from central.inbound import (
    AlarmIn,
    BirthIn,
    DeathIn,
    GroupIn,
    HealthIn,
    Inbound,
    InboundError,
    ReadsIn,
    ResultIn,
    Stream,
    UnresolvedReadsIn,
)
from protocols.commands import AuditHeadMessage, ResultError, read_result_topic
from protocols.payload import (
    AliasBook,
    Binding,
    PayloadDecodeError,
    ReadRow,
    decimal_text,
    decode_message,
    reads_of,
    record_row,
    rows_v2,
)
from protocols.payload.aliases import bindings_from_field

__all__ = [
    "AlarmIn",
    "BindingLookup",
    "BirthIn",
    "DeathIn",
    "Decoder",
    "GroupIn",
    "HealthIn",
    "Inbound",
    "InboundError",
    "ReadsIn",
    "ResultIn",
    "Stream",
    "UnresolvedReadsIn",
    "value_text",
]


#: The bindings of one (gateway, epoch) that some worker has stored (the shared table).
BindingLookup: TypeAlias = Callable[[str, int], Iterable[Binding]]


#: A value as exact plain decimal text (one implementation, in :mod:`protocols.payload.rows`).
value_text = decimal_text


def _json_ready(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def _epoch_of(message_id: str, gw: str, seq: int, *, durable: bool) -> int:
    parts = message_id.split(":")
    want = 3 if durable else 5
    # A gateway id may itself contain ':', so the fixed fields are taken from the right.
    if len(parts) < want:
        raise InboundError(f"message id {message_id!r} is not a {'durable' if durable else 'state'} id")
    tail = parts[-(want - 1):]
    head = ":".join(parts[: len(parts) - (want - 1)])
    epoch_hex, seq_text = tail[0], tail[1]
    if head != gw or len(epoch_hex) != 16 or seq_text != str(seq):
        raise InboundError(
            f"message id {message_id!r} does not name this message's gateway {gw!r} and seq {seq}"
        )
    try:
        return int(epoch_hex, 16)
    except ValueError:
        raise InboundError(f"message id {message_id!r}: epoch is not 16 hex digits") from None


def _topic_parts(topic: str, prefix: str) -> tuple[str, list[str]]:
    if not topic.startswith(prefix + "/"):
        raise InboundError(f"topic {topic!r} is outside prefix {prefix!r}")
    rest = topic[len(prefix) + 1:].split("/")
    if len(rest) < 2:
        raise InboundError(f"topic {topic!r} names no message kind")
    return rest[0], rest[1:]


def _int(message: dict[str, object], key: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InboundError(f"field {key!r} must be an unsigned integer, got {value!r}")
    return value


class Decoder:
    """One worker's decoder: the topic prefix, the pinned result keys (gateway id → public
    key; a result from a gateway with a pinned key must carry a valid signature by it), and the
    alias bindings learned so far.

    ``lookup`` is asked for a (gateway, epoch) the book has no binding for; a miss is not asked
    again for ``miss_ttl_s`` (a flood of messages from a gateway whose birth is missing costs
    one query a second, not one a message), nor after a birth of that gateway is learned.
    """

    def __init__(self, prefix: str, result_keys: dict[str, bytes],
                 lookup: BindingLookup | None = None, *, miss_ttl_s: float = 1.0) -> None:
        self.prefix = prefix
        self.result_keys = result_keys
        self.book = AliasBook()
        self._lookup = lookup
        self._miss_ttl_s = miss_ttl_s
        self._misses: dict[tuple[str, int], float] = {}

    def decode(self, topic: str, payload: bytes) -> Inbound:
        """The typed message on ``topic``, or :class:`InboundError`."""
        gw, kind = _topic_parts(topic, self.prefix)
        try:
            if kind == ["cmd", "result"]:
                return _result(gw, payload, self.result_keys.get(gw))
            if kind[0] == "reads":
                return self._reads(gw, kind, topic, payload)
            if kind[0] in ("groups", "alarms"):
                return _durable(gw, kind, payload)
            if kind == ["state"]:
                return self._state(gw, payload)
            if kind == ["health"]:
                return _health(gw, payload)
        except PayloadDecodeError as exc:
            raise InboundError(f"{topic}: {exc}") from None
        raise InboundError(f"topic {topic!r} is not one the consumer reads")

    def _state(self, gw: str, payload: bytes) -> BirthIn | DeathIn:
        state = _state(gw, payload)
        if isinstance(state, BirthIn) and state.aliases_epoch is not None:
            self.book.add(gw, state.aliases_epoch, state.bindings)
            self._misses.pop((gw, state.aliases_epoch), None)
        return state

    def _reads(self, gw: str, kind: list[str], topic: str,
               payload: bytes) -> ReadsIn | UnresolvedReadsIn:
        if len(kind) != 2:
            raise InboundError(f"reads topic needs exactly one meter segment, got {kind}")
        message = decode_message(payload)  # once: envelope first, then the records
        if message["gw"] != gw:
            raise InboundError(f"payload gateway {message['gw']!r} is not the topic's {gw!r}")
        if message.get("v") != 2:
            reads = reads_of(message)
            rows = tuple(record_row(r) for r in reads.reads)
            return _reads_in(gw, kind[1], reads.meter, reads.id, reads.seq, reads.ts, rows,
                             reads.hist)
        epoch, index = cast(int, message["epoch"]), cast(int, message["binding"])
        seq, ts, message_id = (cast(int, message["seq"]), cast(int, message["ts"]),
                               cast(str, message["id"]))
        binding = self.book.get(gw, epoch, index)
        if binding is None and self._ask(gw, epoch, index):
            binding = self.book.get(gw, epoch, index)
        if binding is None:
            return UnresolvedReadsIn(Stream(gw, epoch, seq), message_id, ts, index, topic,
                                     payload)
        hist = message.get("hist") is True
        plain = v2_copy_lines(message, binding, gw, binding.meter, message_id)
        if plain is None:  # the rows' way: checked (and rejected) record by record
            return _reads_in(gw, kind[1], binding.meter, message_id, seq, ts,
                             rows_v2(message, binding), hist)
        lines, times = plain
        return _reads_in(gw, kind[1], binding.meter, message_id, seq, ts,
                         functools.partial(rows_v2, message, binding), hist, lines, times)

    def _ask(self, gw: str, epoch: int, index: int) -> bool:
        """Whether the shared bindings table knows ``index`` (learning all it has for the
        gateway's epoch on the way)."""
        if self._lookup is None:
            return False
        now = time.monotonic()
        if now < self._misses.get((gw, epoch), 0.0):
            return False
        self.book.add(gw, epoch, self._lookup(gw, epoch))
        if self.book.get(gw, epoch, index) is not None:
            return True
        self._misses[(gw, epoch)] = now + self._miss_ttl_s
        return False


def _reads_in(gw: str, topic_meter: str, meter: str, message_id: str, seq: int, ts: int,
              rows: tuple[ReadRow, ...] | Callable[[], tuple[ReadRow, ...]], hist: bool,
              copy_lines: list[str] | None = None, times: list[int] | None = None) -> ReadsIn:
    if meter != topic_meter:
        raise InboundError(f"reads payload names {gw}/{meter}, topic {gw}/{topic_meter}")
    epoch = _epoch_of(message_id, gw, seq, durable=True)
    return ReadsIn(Stream(gw, epoch, seq), message_id, ts, meter, rows, hist, copy_lines, times)


def _envelope(gw: str, message: dict[str, object], *, durable: bool) -> tuple[str, int, int, int]:
    if message["gw"] != gw:
        raise InboundError(f"payload gateway {message['gw']!r} is not the topic's {gw!r}")
    message_id = cast(str, message["id"])
    seq, ts = cast(int, message["seq"]), cast(int, message["ts"])
    return message_id, _epoch_of(message_id, gw, seq, durable=durable), seq, ts


def _durable(gw: str, kind: list[str], payload: bytes) -> Inbound:
    message = decode_message(payload)
    message_id, epoch, seq, ts = _envelope(gw, message, durable=True)
    stream = Stream(gw, epoch, seq)
    if kind[0] == "groups":
        body = {k: v for k, v in message.items() if k not in ("v", "gw", "id", "seq", "ts")}
        return GroupIn(stream, message_id, ts, "/".join(kind[1:]),
                       cast(dict[str, object], _json_ready(body)))
    # alarms
    texts = {}
    for key in ("kind", "key", "state", "severity"):
        value = message.get(key)
        if not isinstance(value, str) or not value:
            raise InboundError(f"alarm field {key!r} must be text, got {value!r}")
        texts[key] = value
    meter = message.get("meter")
    if meter is not None and not isinstance(meter, str):
        raise InboundError(f"alarm field 'meter' must be text, got {meter!r}")
    details = message.get("details", {})
    if not isinstance(details, dict):
        raise InboundError("alarm field 'details' must be a map")
    if "raised" in message:
        details = {**details, "raised": message["raised"]}
    return AlarmIn(stream, message_id, ts, texts["kind"], texts["key"], texts["state"],
                   texts["severity"], meter, cast(dict[str, object], _json_ready(details)))


def _result(gw: str, payload: bytes, key: bytes | None) -> ResultIn:
    try:
        result = read_result_topic(payload, key)
    except ResultError as exc:
        raise InboundError(f"command result from {gw}: {exc}") from None
    message = dict(result.payload)
    message_id, epoch, seq, ts = _envelope(gw, message, durable=True)
    stream = Stream(gw, epoch, seq)
    if isinstance(result, AuditHeadMessage):
        return ResultIn(stream, message_id, ts, None, "audit-head",
                        f"{result.head.seq}:{result.head.hash.hex()}", key is not None)
    return ResultIn(stream, message_id, ts, result.cmd, result.status, result.reason,
                    key is not None)


def _state(gw: str, payload: bytes) -> BirthIn | DeathIn:
    message = decode_message(payload)
    message_id, epoch, seq, ts = _envelope(gw, message, durable=False)
    online = message.get("online")
    bdseq = _int(message, "bdseq")
    if online is True:
        if "aliases" not in message:
            return BirthIn(gw, epoch, message_id, ts, seq, bdseq)
        aliases_epoch, bindings = bindings_from_field(message["aliases"])
        return BirthIn(gw, epoch, message_id, ts, seq, bdseq, tuple(bindings), aliases_epoch)
    if online is False:
        return DeathIn(gw, epoch, message_id, ts, seq, bdseq)
    raise InboundError(f"state message 'online' must be true or false, got {online!r}")


def _health(gw: str, payload: bytes) -> HealthIn:
    message = decode_message(payload)
    message_id, epoch, seq, ts = _envelope(gw, message, durable=False)
    stats = message.get("stats")
    depth = stats.get("outbox_depth") if isinstance(stats, dict) else None
    if not isinstance(depth, int) or isinstance(depth, bool):
        depth = None
    return HealthIn(gw, epoch, message_id, ts, seq, depth)
