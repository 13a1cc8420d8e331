"""Schema v2 reads messages: the wire layout and its encoder (the decoder is
:mod:`protocols.payload.compact_decode`).

A v2 reads message is one CBOR map with small-integer keys (``docs/payloads.cddl``,
``reads-v2``)::

    {0: 2, 1: gw, 2: epoch, 3: seq, 4: ts, 6: binding, 7: ts - t, 8: [record...], ? 5: true}

``binding`` names the meter and its alias table (:mod:`protocols.payload.aliases`), declared in
the retained birth. ``7`` gives the time of the first record as an offset back from ``ts``; a
one-element array ``[d]`` among the records moves the current time by ``d`` ms for the records
after it (a DL/T 645 poll reads item after item). Every record has an alias number — the next
one in table order unless it says otherwise — and takes one of two forms:

* **bare value**, the record of an actual read in table order: an integer mantissa (the value is
  ``mantissa × 10**exponent`` of its alias; a ``Decimal`` for a register, a ``float`` for an
  instantaneous quantity), or, where the declared exponent cannot hold the value exactly, the
  value itself as a tag-4 decimal fraction or a float (always exact: the encoder checks that
  the decoder gives back the same value, bit for bit, before it picks the mantissa);
* **map**, anything else, with every :class:`~protocols.payload.records.ReadRecord` field under
  a small integer (:data:`RECORD_KEYS`); a field added to ``ReadRecord`` later and not given a
  number here travels under its own name as free-form data, so nothing a record carries is lost.

``5: true`` is appended by :func:`~protocols.payload.hist.mark_hist` on backlog, as in v1.

Encoding is the per-poll hot path, so the constant parts (keys, the alias plan of a table) are
built once and cached, as :mod:`protocols.reads_encoder` does for v1.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence
from decimal import Decimal
from typing import Final

import cbor2

from protocols.payload.aliases import AliasEntry, AliasTable, Binding
from protocols.payload.records import ReadRecord
from protocols.payload.schema import (
    MAX_PAYLOAD_BYTES,
    PayloadEncodeError,
    _decimal_fraction,
    _free_form,
)
from protocols.reads_encoder import _head, _int, _int_array, _text
from protocols.reads_encoder import _number as _v1_number

SCHEMA_VERSION_V2: Final = 2

# Top-level keys.
K_V: Final = 0
K_GW: Final = 1
K_EPOCH: Final = 2
K_SEQ: Final = 3
K_TS: Final = 4
K_HIST: Final = 5
K_BINDING: Final = 6
K_T: Final = 7
K_READS: Final = 8

#: Record map keys by ReadRecord field. ``alias`` and ``q`` name the quantity (``q`` only when
#: the table has no entry for it; neither: the next alias in order).
RECORD_KEYS: Final = {"alias": 0, "q": 1, "val": 2, "unit": 3, "quality": 4, "method": 5,
                      "reasons": 6, "hist": 7, "raw": 8, "rev": 9}

#: ReadRecord fields without a number: carried by name (see the module docstring).
_KNOWN: Final = frozenset(RECORD_KEYS) | {"t"}
EXTRA_FIELDS: Final = tuple(
    (f.name, f.default) for f in dataclasses.fields(ReadRecord) if f.name not in _KNOWN
)

_F32: Final = struct.Struct(">Bf")
_F64: Final = struct.Struct(">Bd")
_TRUE: Final = b"\xf5"
_NULL: Final = b"\xf6"
_KEY: Final = tuple(_head(0, k) for k in range(10))
#: A float mantissa must fit a CBOR integer head (and a float's 53 bits make larger ones
#: pointless): beyond this the value travels as a float.
_MANTISSA_LIMIT: Final = 2.0**63


@dataclasses.dataclass(frozen=True, slots=True)
class _Slot:
    """An alias entry as the encoder uses it: ``scale`` is 10**-exponent for a float entry
    whose exponent is <= 0 (None otherwise)."""

    alias: int
    unit: str
    exponent: int | None
    decimal: bool
    scale: int | None


_PLANS: dict[tuple[AliasEntry, ...], dict[str, _Slot]] = {}


def _plan(table: AliasTable) -> dict[str, _Slot]:
    plan = _PLANS.get(table.entries)
    if plan is None:
        plan = {
            e.q: _Slot(i, e.unit, e.exponent, e.decimal,
                       10 ** -e.exponent if (not e.decimal and e.exponent is not None
                                             and e.exponent <= 0) else None)
            for i, e in enumerate(table.entries)
        }
        if len(_PLANS) > 256:
            _PLANS.clear()
        _PLANS[table.entries] = plan
    return plan


def _float(value: float) -> bytes:
    """The shortest of float32 / float64 that holds ``value`` exactly."""
    try:
        packed = _F32.pack(0xFA, value)
    except OverflowError:
        return _F64.pack(0xFB, value)
    if _F32.unpack(packed)[1] == value or math.isnan(value):
        return packed
    return _F64.pack(0xFB, value)


def value_bytes(value: Decimal | float, slot: _Slot | None) -> bytes:
    """A value against its alias: the bare mantissa when that decodes back to exactly
    ``value``, else the value itself (tag-4 decimal fraction or float)."""
    if type(value) is float:
        if slot is not None:
            scale = slot.scale
            product = value * scale if scale is not None else math.inf
            if scale is not None and -_MANTISSA_LIMIT < product < _MANTISSA_LIMIT:
                mantissa = round(product)
                # int / int is correctly rounded in Python, which is what the decoder computes.
                if mantissa / scale == value and (mantissa or math.copysign(1.0, value) > 0):
                    encoded = _int(mantissa)
                    if encoded is not None:
                        return encoded
        return _float(value)
    if slot is not None and slot.decimal and type(value) is Decimal:
        text = str(value)
        if "E" not in text and "n" not in text and "N" not in text and "I" not in text:
            whole, _, fraction = text.partition(".")
            if -len(fraction) == slot.exponent:
                encoded = _int(int(whole + fraction))
                if encoded is not None:
                    return encoded
    encoded = _v1_number(value)
    if encoded is not None:
        return encoded
    if isinstance(value, Decimal):
        return cbor2.dumps(_decimal_fraction(value))  # a mantissa beyond 64 bits: bignum
    raise PayloadEncodeError(f"value {value!r} cannot be encoded")


def _record_map(record: ReadRecord, slot: _Slot | None, cursor: int) -> bytes:
    parts: list[bytes] = []
    if slot is None:
        parts += [_KEY[1], _text(record.q)]
    elif slot.alias != cursor:
        parts += [_KEY[0], _int(slot.alias) or b""]
    val = record.val
    parts += [_KEY[2], _NULL if val is None else value_bytes(val, slot)]
    if slot is None or record.unit != slot.unit:
        parts += [_KEY[3], _text(record.unit)]
    if record.quality != "A":
        parts += [_KEY[4], _text(record.quality)]
    if record.method is not None:
        parts += [_KEY[5], _int(record.method) or b""]
    if record.reasons:
        reasons = _int_array(record.reasons)
        if reasons is None:
            raise PayloadEncodeError(f"{record.q}: reason codes must fit in 64 bits")
        parts += [_KEY[6], reasons]
    if record.hist:
        parts += [_KEY[7], _TRUE]
    if record.raw is not None:
        parts += [_KEY[8], value_bytes(record.raw, slot)]
    if record.rev:
        parts += [_KEY[9], _int(record.rev) or b""]
    for name, default in EXTRA_FIELDS:
        value = getattr(record, name)
        if value != default:
            parts += [_text(name),
                      cbor2.dumps(_free_form(value, f"{record.q}: {name}"))]
    return _head(5, len(parts) // 2) + b"".join(parts)


def _is_bare(record: ReadRecord) -> bool:
    if (record.quality != "A" or record.method is not None or record.reasons or record.hist
            or record.raw is not None or record.rev or record.val is None):
        return False
    return all(getattr(record, name) == default for name, default in EXTRA_FIELDS)


def encode_reads_v2(gw: str, epoch: int, seq: int, ts: int, binding: Binding,
                    reads: Sequence[ReadRecord]) -> bytes:
    """The v2 reads message of ``binding.meter`` (see the module docstring)."""
    if not reads:
        raise PayloadEncodeError(f"meter {binding.meter}: a reads message needs at least one read")
    plan = _plan(binding.table)
    current_t = reads[0].t
    header = [_head(5, 8), _KEY[K_V], _KEY[SCHEMA_VERSION_V2], _KEY[K_GW], _text(gw),
              _KEY[K_EPOCH], _int(epoch), _KEY[K_SEQ], _int(seq), _KEY[K_TS], _int(ts),
              _KEY[K_BINDING], _int(binding.index), _KEY[K_T], _int(ts - current_t),
              _KEY[K_READS], _head(4, _items(reads))]
    if any(part is None for part in header):
        raise PayloadEncodeError("envelope numbers must fit in 64 bits")
    parts: list[bytes] = header  # type: ignore[assignment]
    append = parts.append
    get = plan.get
    cursor = 0
    no_extras = not EXTRA_FIELDS
    for record in reads:
        t = record.t
        if t != current_t:
            append(b"\x81" + (_int(t - current_t) or b""))
            current_t = t
        slot = get(record.q)
        val = record.val
        if (slot is not None and slot.alias == cursor and record.quality == "A"
                and val is not None and record.unit == slot.unit and record.method is None
                and not record.reasons and not record.hist and record.raw is None
                and not record.rev and (no_extras or _is_bare(record))):
            append(value_bytes(val, slot))
        else:
            append(_record_map(record, slot, cursor))
        if slot is not None:
            cursor = slot.alias + 1
    data = b"".join(parts)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadEncodeError(f"reads message of {binding.meter} would be {len(data)} bytes, "
                                 f"over the {MAX_PAYLOAD_BYTES}-byte limit; split it")
    return data


def _items(reads: Sequence[ReadRecord]) -> int:
    """Records plus the time markers between them."""
    count = len(reads)
    last = reads[0].t
    for record in reads:
        if record.t != last:
            count += 1
            last = record.t
    return count
