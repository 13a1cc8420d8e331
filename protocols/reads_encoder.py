"""The CBOR bytes of a reads message, written directly instead of through ``cbor2.dumps``.

Why: a gateway polling a hundred meters a second encodes a hundred reads messages a second, and
``cbor2`` walks a dict per read and a ``CBORTag`` object per register value (16 µs for a message
of 10 reads, measured with ``bench/bench_modbus_cpu.py``'s message). Most of each message is the
same from poll to poll — the keys, the quantity names, the units, the quality letter, and one
time shared by every read — so those pieces are encoded once and cached; only the values, the
sequence and the id are new. The output is byte for byte what ``cbor2.dumps`` gives for the same
message (checked by a hypothesis property in ``tests/test_payload.py``), so decoders, stored
payloads and ``mark_hist`` see no difference.

Only the common shape is handled: text that is short enough, 64-bit integers, finite floats,
Decimals whose mantissa fits in 64 bits, the optional fields of :class:`ReadRecord`. Anything
else returns None and the caller falls back to ``cbor2`` (which handles big mantissas with
bignum tags).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from protocols.payload import ReadRecord

_F64: Final = struct.Struct(">Bd")
_U64_MAX: Final = 2**64 - 1
_CACHE_MAX: Final = 4096
_TAG_DECIMAL_FRACTION_PAIR: Final = b"\xc4\x82"  # tag 4, array of 2

#: Encoded text items, by value (quantity names, units, keys, gateway and meter ids: a set that a
#: configuration bounds; message ids, new for every message, are never put here).
_TEXT: dict[str, bytes] = {}


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    if n <= 0xFF:
        return bytes((major << 5 | 24, n))
    if n <= 0xFFFF:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n <= 0xFFFFFFFF:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


def _int(n: int) -> bytes | None:
    if 0 <= n <= _U64_MAX:
        return _head(0, n)
    if -_U64_MAX - 1 <= n < 0:
        return _head(1, -1 - n)
    return None


def _int_array(values: Sequence[int]) -> bytes | None:
    items = [_int(v) for v in values]
    if any(item is None for item in items):
        return None
    return _head(4, len(items)) + b"".join(items)  # type: ignore[arg-type]


def _text(value: str) -> bytes:
    encoded = _TEXT.get(value)
    if encoded is None:
        data = value.encode("utf-8")
        encoded = _head(3, len(data)) + data
        if len(_TEXT) >= _CACHE_MAX:  # bounded even if names are invented without end
            _TEXT.clear()
        _TEXT[value] = encoded
    return encoded


def _number(value: object) -> bytes | None:
    """A read's value as ``_number`` in payload.py sends it: float64, or tag 4 for a Decimal."""
    if type(value) is float:
        return _F64.pack(0xFB, value)
    if type(value) is Decimal:
        # Plain notation ("-1234.56") gives mantissa and exponent at a fraction of the cost of
        # as_tuple(); exponent notation ("1E+2") and specials are left to cbor2.
        text = str(value)
        if "E" in text or "n" in text or "N" in text or "I" in text:
            return None
        whole, _, fraction = text.partition(".")
        mantissa = int(whole + fraction)  # "-0.00" -> 0: a negative zero is sent as zero
        e, m = _int(-len(fraction)), _int(mantissa)
        if e is None or m is None:
            return None
        return _TAG_DECIMAL_FRACTION_PAIR + e + m
    return None


_K_Q: Final = _text("q")
_K_VAL: Final = _text("val")
_K_UNIT: Final = _text("unit")
_K_T: Final = _text("t")
_K_QUALITY: Final = _text("quality")
_K_METHOD: Final = _text("method")
_K_REASONS: Final = _text("reasons")
_K_HIST: Final = _text("hist")
_K_RAW: Final = _text("raw")
_K_REV: Final = _text("rev")
_K_SUP: Final = _text("sup")
_PAIR: Final = b"\x82"  # array of 2
_NULL: Final = b"\xf6"
_TRUE: Final = b"\xf5"
_ENVELOPE_KEYS: Final = (_head(5, 7) + _text("v"), _text("gw"), _text("id"), _text("seq"),
                         _text("ts"), _text("meter"), _text("reads"))


#: (q, unit, quality, map size) -> the constant bytes of a read map around its value and time:
#: (map head, "q", name, "val"), ("unit", unit, "t"), ("quality", letter).
_FRAGMENTS: dict[tuple[str, str, str, int], tuple[bytes, bytes, bytes]] = {}


def _fragments(key: tuple[str, str, str, int]) -> tuple[bytes, bytes, bytes]:
    q, unit, quality, size = key
    fragments = (_head(5, size) + _K_Q + _text(q) + _K_VAL, _K_UNIT + _text(unit) + _K_T,
                 _K_QUALITY + _text(quality))
    if len(_FRAGMENTS) >= _CACHE_MAX:
        _FRAGMENTS.clear()
    _FRAGMENTS[key] = fragments
    return fragments


def encode_reads(version: int, gw: str, message_id: str, seq: int, ts: int, meter: str,
                 reads: Sequence[ReadRecord]) -> bytes | None:
    """``cbor2.dumps`` of the reads message dict that ``payload.build_reads`` makes, or None
    when a part of it is outside what this encoder writes."""
    version_b, seq_b, ts_b = _int(version), _int(seq), _int(ts)
    if version_b is None or seq_b is None or ts_b is None:
        return None
    k_v, k_gw, k_id, k_seq, k_ts, k_meter, k_reads = _ENVELOPE_KEYS
    id_b = message_id.encode("utf-8")  # new for every message: not cached
    parts = [k_v, version_b, k_gw, _text(gw), k_id, _head(3, len(id_b)), id_b, k_seq, seq_b, k_ts,
             ts_b, k_meter, _text(meter), k_reads, _head(4, len(reads))]
    append = parts.append
    extend = parts.extend
    last_t = -1
    last_t_b = b""
    for record in reads:
        val = record.val
        if type(val) is float:
            value_b = _F64.pack(0xFB, val)
        else:
            number_b = _NULL if val is None else _number(val)
            if number_b is None:
                return None
            value_b = number_b
        t = record.t
        if t != last_t:  # every read of a poll shares its time: encode it once
            t_b = _int(t)
            if t_b is None:
                return None
            last_t, last_t_b = t, t_b
        method, reasons, hist, raw, rev = (record.method, record.reasons, record.hist,
                                          record.raw, record.rev)
        # ``sup`` is only ever set together with ``rev`` (ReadRecord checks it): an actual
        # read never looks at it.
        size = 5 + (method is not None) + bool(reasons) + bool(hist) + (raw is not None) + (
            bool(rev) and 1 + (record.sup is not None))
        key = (record.q, record.unit, record.quality, size)
        fragments = _FRAGMENTS.get(key)
        if fragments is None:
            fragments = _fragments(key)
        prefix, middle, suffix = fragments
        extend((prefix, value_b, middle, last_t_b, suffix))
        if size == 5:
            continue
        # The optional fields, in build_reads's order; rare (estimates, flagged reads).
        extras: list[tuple[bytes, bytes | None]] = []
        if method is not None:
            extras.append((_K_METHOD, _int(method)))
        if reasons:
            extras.append((_K_REASONS, _int_array(reasons)))
        if hist:
            extras.append((_K_HIST, _TRUE))
        if raw is not None:
            extras.append((_K_RAW, _number(raw)))
        if rev:
            extras.append((_K_REV, _int(rev)))
            sup = record.sup
            if sup is not None:
                index = _int(sup[1])
                message = sup[0].encode("utf-8")  # a message id: not cached, as above
                extras.append((_K_SUP, None if index is None else
                               _PAIR + _head(3, len(message)) + message + index))
        for key_b, item_b in extras:
            if item_b is None:
                return None
            append(key_b)
            append(item_b)
    return b"".join(parts)
