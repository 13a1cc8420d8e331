"""Decoding: the trust boundary for bytes someone else produced.

``decode-payload`` and the consumers point this at whatever was captured, so input that is
oversized, not a single well-formed CBOR map, uses tags other than bignums and decimal fractions,
or breaks the envelope raises :class:`~protocols.payload.schema.PayloadDecodeError` and nothing
else. Also the JSON view of a message and :func:`parse_reads`, which turns a reads message back
into :class:`~protocols.payload.records.ReadRecord` values. Both schema versions come in here:
a schema-2 reads message (integer keys) is checked by :mod:`protocols.payload.compact_decode`
and resolved through an :class:`~protocols.payload.aliases.AliasBook` (docs/payloads.md).
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, cast

import cbor2

from protocols.payload.aliases import AliasBook
from protocols.payload.compact import SCHEMA_VERSION_V2
from protocols.payload.compact_decode import check_v2, records_v2, resolved_v2, unresolved_v2
from protocols.payload.records import (
    ReadRecord,
)
from protocols.payload.schema import (
    _CBOR2_SEMANTIC_TAGS,
    _TAG_DECIMAL_FRACTION,
    _TAG_NEG_BIGNUM,
    _TAG_POS_BIGNUM,
    _TAG_SELF_DESCRIBED,
    MAX_BIGNUM_BYTES,
    MAX_DECIMAL_DIGITS,
    MAX_DECIMAL_EXPONENT,
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    JsonValue,
    PayloadDecodeError,
    PayloadEncodeError,
    _is_int,
    superseded,
)

# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _Rejected(Exception):
    """Raised inside cbor2 callbacks; cbor2 wraps it, and :func:`_load` unwraps the reason."""


def _reject_tag(value: object, immutable: bool) -> object:
    raise _Rejected("CBOR tag not allowed in a payload (only bignums and decimal fractions)")


def _reject_unknown_tag(tag: cbor2.CBORTag, immutable: bool) -> object:
    raise _Rejected(f"CBOR tag {tag.tag} not allowed in a payload")


def _bignum(negative: bool) -> Callable[[object, bool], object]:
    def decode(value: object, immutable: bool) -> object:
        if not isinstance(value, bytes) or len(value) > MAX_BIGNUM_BYTES:
            raise _Rejected(f"bignum must be a byte string of at most {MAX_BIGNUM_BYTES} bytes")
        number = int.from_bytes(value, "big")
        return -1 - number if negative else number

    return decode


def _decode_decimal_fraction(value: object, immutable: bool) -> object:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _Rejected("decimal fraction (tag 4) must be [exponent, mantissa]")
    exponent, mantissa = value
    if not _is_int(exponent) or not _is_int(mantissa):
        raise _Rejected("decimal fraction (tag 4) needs integer exponent and mantissa")
    if abs(exponent) > MAX_DECIMAL_EXPONENT or abs(mantissa) >= 10**MAX_DECIMAL_DIGITS:
        raise _Rejected(
            f"decimal fraction beyond {MAX_DECIMAL_DIGITS} digits or exponent ±{MAX_DECIMAL_EXPONENT}"
        )
    digits = tuple(int(d) for d in str(abs(mantissa)))
    return Decimal((1 if mantissa < 0 else 0, digits, exponent))


def _pass_through(value: object, immutable: bool) -> object:
    return value


_SEMANTIC_DECODERS: Final[dict[int, Callable[[object, bool], object]]] = {
    **{tag: _reject_tag for tag in _CBOR2_SEMANTIC_TAGS},
    _TAG_POS_BIGNUM: _bignum(negative=False),
    _TAG_NEG_BIGNUM: _bignum(negative=True),
    _TAG_DECIMAL_FRACTION: _decode_decimal_fraction,
    # The self-describe prefix (RFC 8949 §3.4.6) only says "this is CBOR".
    _TAG_SELF_DESCRIBED: _pass_through,
}


def _load(data: bytes) -> object:
    """Exactly one CBOR data item, with the restrictions above, or PayloadDecodeError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PayloadDecodeError(f"payload must be bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise PayloadDecodeError("payload is empty")
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadDecodeError(
            f"payload is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    decoder = cbor2.CBORDecoder(
        io.BytesIO(bytes(data)),
        tag_hook=_reject_unknown_tag,
        semantic_decoders=_SEMANTIC_DECODERS,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        # Keys are checked after decoding: text in v1, small integers (and text) in v2.
        strict_hashable_types=False,
    )
    # cbor2 is a C extension parsing hostile bytes; whatever it raises is, to our caller, one
    # thing: these bytes are not a payload. Hence the broad catch at this one boundary.
    try:
        item = decoder.decode()
    except Exception as exc:
        raise PayloadDecodeError(_reason(exc)) from exc
    try:
        decoder.decode()
    except cbor2.CBORDecodeEOF:
        return item
    except Exception:  # noqa: BLE001 - anything after the map means trailing bytes
        pass
    raise PayloadDecodeError("trailing bytes after the CBOR map: a payload is exactly one map")


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, _Rejected):
        return str(cause)  # well-formed CBOR, but outside this schema
    return f"not well-formed CBOR: {exc or type(exc).__name__}"


def _check_tree(value: object, path: str, depth: int = 0) -> None:
    """Only plain CBOR data may appear; maps are keyed by text."""
    if depth > MAX_DEPTH:
        raise PayloadDecodeError(f"{path}: nested too deep")
    if value is None or isinstance(value, bool | int | float | str | bytes | Decimal):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadDecodeError(f"{path}: map key {key!r} is not text")
            _check_tree(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_tree(item, f"{path}[{i}]", depth + 1)
        return
    raise PayloadDecodeError(f"{path}: {type(value).__name__} is not allowed in a payload")


def _field(
    message: Mapping[str, object], key: str, kinds: type | tuple[type, ...], what: str
) -> object:
    if key not in message:
        raise PayloadDecodeError(f"missing field {key!r} ({what})")
    value = message[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        raise PayloadDecodeError(f"field {key!r} must be {what}, got {value!r}")
    return value


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def decode_message(data: bytes, aliases: AliasBook | None = None) -> dict[str, object]:
    """Decode and check a payload, keeping exact Python values (``Decimal`` for tag 4, ``bytes``).

    Checks that the input is one CBOR map of plain data with the schema-1 envelope; the fields
    beyond the envelope are not interpreted (use :func:`parse_reads` for reads messages). A
    schema-2 reads message comes back with text keys (``v gw id epoch seq ts binding t reads``,
    ``hist``), its ``id`` derived as v1 spells it, its records still unresolved — unless
    ``aliases`` knows its binding: then it comes back in the v1 shape (``meter``, and ``reads``
    as maps ``q val unit t quality ...`` with exact values), plus ``epoch`` and ``binding``,
    so code written for v1 messages reads both.
    """
    item = _load(data)
    if not isinstance(item, dict):
        raise PayloadDecodeError(f"payload must be a CBOR map, got {type(item).__name__}")
    if 0 in item and "v" not in item:  # schema v2: small-integer keys
        if item[0] != SCHEMA_VERSION_V2 or isinstance(item[0], bool):
            raise PayloadDecodeError(
                f"schema version {item[0]!r} is not 1 or {SCHEMA_VERSION_V2}: this tool reads "
                f"versions 1 and {SCHEMA_VERSION_V2} only — upgrade it to read newer payloads")
        message = check_v2(item)
        if aliases is not None:
            return resolved_v2(message, aliases)
        return message
    _check_tree(item, "payload")
    message = cast(dict[str, object], item)
    version = _field(message, "v", int, "the schema version")
    if version != SCHEMA_VERSION:
        raise PayloadDecodeError(
            f"schema version {version} is not {SCHEMA_VERSION} or {SCHEMA_VERSION_V2}: this "
            f"tool reads versions 1 and 2 only — upgrade it to read newer payloads"
        )
    _field(message, "gw", str, "the gateway id (text)")
    _field(message, "id", str, "the message id (text)")
    for key in ("seq", "ts"):
        value = _field(message, key, int, "an unsigned integer")
        if cast(int, value) < 0:
            raise PayloadDecodeError(f"field {key!r} must be an unsigned integer, got {value}")
    if "hist" in message and message["hist"] is not True:
        raise PayloadDecodeError(f"field 'hist' is only ever true, got {message['hist']!r}")
    return message


def _to_json(value: object) -> JsonValue:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return cast(JsonValue, value)


def decode_payload(data: bytes, aliases: AliasBook | None = None) -> dict[str, JsonValue]:
    """A checked payload as JSON-friendly data: decimal fractions become exact decimal strings
    (``"1206.42"``), byte strings lower-case hex, non-finite floats ``"NaN"``/``"Infinity"``.

    A v2 reads message is shown resolved — ``meter`` and v1-shaped ``reads`` records — when
    ``aliases`` knows its binding (learned from the gateway's birth); otherwise as sent, with
    ``aliases: "unresolved"``: each record's alias number (``alias``, implied ones included),
    its ``mantissa`` (times 10**exponent of that alias) or explicit ``val``, and time steps."""
    message = decode_message(data)
    if message.get("v") != SCHEMA_VERSION_V2:
        return cast(dict[str, JsonValue], _to_json(message))
    if aliases is not None:
        resolved = resolved_v2(message, aliases)
        if "meter" in resolved:
            return cast(dict[str, JsonValue], _to_json(resolved))
    shown = {k: v for k, v in message.items() if k != "reads"}
    shown["aliases"] = "unresolved"
    shown["reads"] = unresolved_v2(cast(list[object], message["reads"]))
    return cast(dict[str, JsonValue], _to_json(shown))


def payload_to_json(data: bytes, aliases: AliasBook | None = None) -> str:
    """What ``edge-gateway decode-payload`` prints: the payload as indented JSON, fields in the
    order they were sent (v2 reads resolved when ``aliases`` knows their binding)."""
    return json.dumps(decode_payload(data, aliases), indent=2, ensure_ascii=False,
                      allow_nan=False)


@dataclass(frozen=True, slots=True)
class ReadsMessage:
    """A decoded reads message: envelope fields, ``meter``, ``reads`` and the top-level ``hist``
    (true when the message was backlog); ``v`` the schema version it came in, ``epoch`` the
    store epoch (schema 2 carries it; None for v1, whose ``id`` spells it)."""

    gw: str
    id: str
    seq: int
    ts: int
    meter: str
    reads: tuple[ReadRecord, ...]
    hist: bool = False
    v: int = 1
    epoch: int | None = None


def _parse_read(raw: object, where: str) -> ReadRecord:
    if not isinstance(raw, dict):
        raise PayloadDecodeError(f"{where}: a read record must be a map")
    record = cast(dict[str, object], raw)
    allowed = {"q", "val", "unit", "t", "quality", "method", "reasons", "hist", "raw", "rev",
               "sup"}
    unknown = set(record) - allowed
    if unknown:
        raise PayloadDecodeError(f"{where}: unknown fields {sorted(unknown)}")
    val = record.get("val", ...)
    if val is ... or not (val is None or isinstance(val, Decimal | float)):
        raise PayloadDecodeError(
            f"{where}: 'val' must be a decimal fraction, a float or null, got {val!r}"
        )
    raw_value = record.get("raw")
    if not (raw_value is None or isinstance(raw_value, Decimal | float)):
        raise PayloadDecodeError(f"{where}: 'raw' must be a decimal fraction or a float")
    if "hist" in record and record["hist"] is not True:
        raise PayloadDecodeError(f"{where}: 'hist' is only ever true, got {record['hist']!r}")
    rev = record.get("rev", 0)
    if "rev" in record and (isinstance(rev, bool) or not isinstance(rev, int) or rev < 1):
        raise PayloadDecodeError(f"{where}: 'rev' is a positive integer when present, got {rev!r}")
    sup = superseded(record.get("sup"), where)
    reasons = record.get("reasons", [])
    if not isinstance(reasons, list):
        raise PayloadDecodeError(f"{where}: 'reasons' must be a list of integers")
    try:
        return ReadRecord(
            q=cast(str, _field(record, "q", str, "the quantity name")),
            val=val,
            unit=cast(str, _field(record, "unit", str, "the unit")),
            t=cast(int, _field(record, "t", int, "the time in ms")),
            quality=cast(str, _field(record, "quality", str, "a quality flag")),
            method=cast("int | None", record.get("method")),
            reasons=tuple(cast(list[int], reasons)),
            hist=cast(bool, record.get("hist", False)),
            raw=raw_value,
            rev=cast(int, rev),
            sup=sup,
        )
    except PayloadEncodeError as exc:
        raise PayloadDecodeError(f"{where}: {exc}") from exc


def parse_reads(data: bytes, aliases: AliasBook | None = None) -> ReadsMessage:
    """Decode a reads message of either schema version into typed records, checking every
    record against the schema. A v2 message names its meter and alias table by a binding that
    the gateway's birth declares: ``aliases`` must have learned it
    (:meth:`~protocols.payload.aliases.AliasBook.learn`), else PayloadDecodeError says so."""
    return reads_of(decode_message(data), aliases)


def reads_of(message: dict[str, object], aliases: AliasBook | None = None) -> ReadsMessage:
    """:func:`parse_reads` of a message :func:`decode_message` already decoded (a consumer
    that looked at the envelope first need not decode the bytes twice)."""
    if message.get("v") == SCHEMA_VERSION_V2:
        return _parse_reads_v2(message, aliases)
    meter = cast(str, _field(message, "meter", str, "the meter id"))
    raw_reads = _field(message, "reads", list, "a list of read records")
    reads = tuple(
        _parse_read(raw, f"reads[{i}]") for i, raw in enumerate(cast(list[object], raw_reads))
    )
    if not reads:
        raise PayloadDecodeError("a reads message carries at least one read")
    return ReadsMessage(
        gw=cast(str, message["gw"]),
        id=cast(str, message["id"]),
        seq=cast(int, message["seq"]),
        ts=cast(int, message["ts"]),
        meter=meter,
        reads=reads,
        hist=message.get("hist") is True,
    )


def _parse_reads_v2(message: dict[str, object], aliases: AliasBook | None) -> ReadsMessage:
    gw, epoch, index = (cast(str, message["gw"]), cast(int, message["epoch"]),
                        cast(int, message["binding"]))
    binding = aliases.get(gw, epoch, index) if aliases is not None else None
    if binding is None:
        raise PayloadDecodeError(
            f"v2 reads message {message['id']!r}: binding {index} of gateway {gw!r} (epoch "
            f"{epoch:016x}) is unknown — learn the gateway's birth (retained on P/G/state) first")
    return ReadsMessage(
        gw=gw, id=cast(str, message["id"]), seq=cast(int, message["seq"]),
        ts=cast(int, message["ts"]), meter=binding.meter, reads=records_v2(message, binding),
        hist=message.get("hist") is True, v=SCHEMA_VERSION_V2, epoch=epoch)
