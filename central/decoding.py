"""Bytes from the broker → typed inbound messages: the one place the consumer decodes payloads.

Everything the consumer stores goes through :func:`decode_inbound`, and it decodes only through
the public API of :mod:`protocols.payload` and :mod:`protocols.commands` — the same rules the
gateway builds by — so a new payload version (v2, with the aliases its retained birth declares)
plugs in here and nowhere else.

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

from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias, cast

from protocols.commands import AuditHeadMessage, ResultError, read_result_topic
from protocols.payload import PayloadDecodeError, ReadRecord, decode_message, parse_reads

__all__ = [
    "AlarmIn",
    "BirthIn",
    "DeathIn",
    "GroupIn",
    "HealthIn",
    "Inbound",
    "InboundError",
    "ReadsIn",
    "ResultIn",
    "Stream",
    "decode_inbound",
    "value_text",
]


class InboundError(ValueError):
    """A message the consumer will not store: the text says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Stream:
    """Where a durable message sits: gateway, store epoch and sequence number."""

    gw: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class ReadsIn:
    """A reads message: ``records`` as the gateway sent them (``rev`` orders corrections)."""

    stream: Stream
    message_id: str
    ts: int
    meter: str
    records: tuple[ReadRecord, ...]
    hist: bool


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
    """The retained birth on ``P/G/state``: ``seq`` is the gateway's high-water mark."""

    gw: str
    epoch: int
    message_id: str
    ts: int
    seq: int
    bdseq: int


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


Inbound: TypeAlias = ReadsIn | AlarmIn | GroupIn | ResultIn | BirthIn | DeathIn | HealthIn


def value_text(value: Decimal | float | None) -> str | None:
    """A value as exact plain decimal text (``Decimal("1206.420")`` → ``"1206.420"``): registers
    keep their resolution; an instantaneous float becomes its shortest round-trip decimal."""
    if value is None:
        return None
    if isinstance(value, float):
        value = Decimal(repr(value))
    return format(value, "f")


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


def decode_inbound(
    topic: str, payload: bytes, prefix: str, result_keys: dict[str, bytes]
) -> Inbound:
    """The typed message on ``topic``, or :class:`InboundError`.

    ``result_keys`` maps gateway ids to their pinned result-signing public keys; a result from
    a gateway with a pinned key must carry a valid signature by it.
    """
    gw, kind = _topic_parts(topic, prefix)
    try:
        if kind == ["cmd", "result"]:
            return _result(gw, payload, result_keys.get(gw))
        if kind[0] in ("reads", "groups", "alarms"):
            return _durable(gw, kind, payload)
        if kind == ["state"]:
            return _state(gw, payload)
        if kind == ["health"]:
            return _health(gw, payload)
    except PayloadDecodeError as exc:
        raise InboundError(f"{topic}: {exc}") from None
    raise InboundError(f"topic {topic!r} is not one the consumer reads")


def _envelope(gw: str, message: dict[str, object], *, durable: bool) -> tuple[str, int, int, int]:
    if message["gw"] != gw:
        raise InboundError(f"payload gateway {message['gw']!r} is not the topic's {gw!r}")
    message_id = cast(str, message["id"])
    seq, ts = cast(int, message["seq"]), cast(int, message["ts"])
    return message_id, _epoch_of(message_id, gw, seq, durable=durable), seq, ts


def _durable(gw: str, kind: list[str], payload: bytes) -> Inbound:
    if kind[0] == "reads":
        if len(kind) != 2:
            raise InboundError(f"reads topic needs exactly one meter segment, got {kind}")
        reads = parse_reads(payload)
        if reads.gw != gw or reads.meter != kind[1]:
            raise InboundError(
                f"reads payload names {reads.gw}/{reads.meter}, topic {gw}/{kind[1]}"
            )
        epoch = _epoch_of(reads.id, gw, reads.seq, durable=True)
        return ReadsIn(Stream(gw, epoch, reads.seq), reads.id, reads.ts, reads.meter,
                       reads.reads, reads.hist)
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
        return BirthIn(gw, epoch, message_id, ts, seq, bdseq)
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
