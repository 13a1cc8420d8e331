"""Decoding schema v2 reads messages (layout in :mod:`protocols.payload.compact`).

Part of the trust boundary: everything malformed raises
:class:`~protocols.payload.schema.PayloadDecodeError`. Two levels, like v1:

* :func:`check_v2` checks the envelope and the shape of every record without the alias table
  and returns the message with text keys (``v gw id epoch seq ts binding t reads [hist]``), so
  a consumer can dedupe by ``id`` and detect gaps by ``seq`` before it knows the birth;
* :func:`records_v2` resolves the records against the meter's :class:`Binding`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import cast

from protocols.payload.aliases import AliasBook, AliasTable, Binding
from protocols.payload.compact import (
    EXTRA_FIELDS,
    K_BINDING,
    K_EPOCH,
    K_GW,
    K_HIST,
    K_READS,
    K_SEQ,
    K_T,
    K_TS,
    K_V,
    RECORD_KEYS,
    SCHEMA_VERSION_V2,
)
from protocols.payload.records import ReadRecord, durable_id
from protocols.payload.schema import (
    MAX_DECIMAL_DIGITS,
    PayloadDecodeError,
    PayloadEncodeError,
    _is_int,
    superseded,
)

_TOP_KEYS = {K_V, K_GW, K_EPOCH, K_SEQ, K_TS, K_HIST, K_BINDING, K_T, K_READS}
_NAMES = {number: name for name, number in RECORD_KEYS.items()}
_EXTRA_NAMES = {name for name, _ in EXTRA_FIELDS}
_UINT64_MAX = 2**64 - 1
_MANTISSA_LIMIT = 10**MAX_DECIMAL_DIGITS


def _uint(message: Mapping[object, object], key: int, what: str) -> int:
    value = message.get(key)
    if not _is_int(value) or not 0 <= cast(int, value) <= _UINT64_MAX:
        raise PayloadDecodeError(f"v2 field {key} ({what}) must be an unsigned integer, "
                                 f"got {value!r}")
    return cast(int, value)


def check_v2(message: Mapping[object, object]) -> dict[str, object]:
    """The envelope and record shapes of a v2 reads message, with text keys."""
    unknown = set(message) - _TOP_KEYS
    if unknown:
        raise PayloadDecodeError(f"v2 reads message: unknown keys {sorted(map(str, unknown))}")
    gw = message.get(K_GW)
    if not isinstance(gw, str) or not gw:
        raise PayloadDecodeError("v2 field 1 (gateway id) must be non-empty text")
    epoch = _uint(message, K_EPOCH, "store epoch")
    seq = _uint(message, K_SEQ, "seq")
    ts = _uint(message, K_TS, "ts")
    binding = _uint(message, K_BINDING, "binding index")
    offset = message.get(K_T)
    if not _is_int(offset):
        raise PayloadDecodeError(f"v2 field 7 (ts - t) must be an integer, got {offset!r}")
    reads = message.get(K_READS)
    if not isinstance(reads, list) or not reads:
        raise PayloadDecodeError("v2 field 8 (reads) must be a non-empty list")
    records = 0
    for i, item in enumerate(reads):
        if type(item) is int:  # the common record: a mantissa (bool is not int here)
            records += 1
            continue
        if isinstance(item, list):
            if len(item) != 1 or not _is_int(item[0]):
                raise PayloadDecodeError(f"reads[{i}]: a time step is [milliseconds]")
            continue
        records += 1
        if isinstance(item, dict):
            _check_record_map(item, f"reads[{i}]")
        elif not (_is_int(item) or isinstance(item, float | Decimal)):
            raise PayloadDecodeError(f"reads[{i}]: a record is a number or a map, got {item!r}")
    if not records:
        raise PayloadDecodeError("a reads message carries at least one read")
    if K_HIST in message and message[K_HIST] is not True:
        raise PayloadDecodeError(f"v2 field 5 (hist) is only ever true, got {message[K_HIST]!r}")
    out: dict[str, object] = {
        "v": SCHEMA_VERSION_V2, "gw": gw, "id": durable_id(gw, epoch, seq), "epoch": epoch,
        "seq": seq, "ts": ts, "binding": binding, "t": ts - cast(int, offset), "reads": reads,
    }
    if message.get(K_HIST) is True:
        out["hist"] = True
    return out


def _check_record_map(item: Mapping[object, object], where: str) -> None:
    for key in item:
        if isinstance(key, int) and not isinstance(key, bool):
            if key not in _NAMES:
                raise PayloadDecodeError(f"{where}: unknown record key {key}")
        elif not (isinstance(key, str) and key in _EXTRA_NAMES):
            raise PayloadDecodeError(f"{where}: unknown record field {key!r}")
        else:
            _text_keys_only(item[key], f"{where}.{key}")
    if RECORD_KEYS["alias"] in item and RECORD_KEYS["q"] in item:
        raise PayloadDecodeError(f"{where}: a record names an alias or a quantity, not both")


def _text_keys_only(value: object, where: str) -> None:
    """Free-form data (a field carried by name) keeps v1's rule: maps are keyed by text."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadDecodeError(f"{where}: map key {key!r} is not text")
            _text_keys_only(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _text_keys_only(item, where)


def _value(raw: object, decimal: bool, exponent: int | None, where: str) -> Decimal | float | None:
    if raw is None or isinstance(raw, float | Decimal):
        return raw
    if not _is_int(raw):
        raise PayloadDecodeError(f"{where}: a value is a number, got {raw!r}")
    mantissa = cast(int, raw)
    if exponent is None:
        raise PayloadDecodeError(f"{where}: an integer mantissa needs an alias with an exponent")
    if decimal:
        if abs(mantissa) >= 10**MAX_DECIMAL_DIGITS:
            raise PayloadDecodeError(f"{where}: mantissa beyond {MAX_DECIMAL_DIGITS} digits")
        return Decimal(f"{mantissa}E{exponent}")
    try:
        if exponent <= 0:
            return float(mantissa / 10**-exponent)  # int / int: correctly rounded
        return float(mantissa * 10**exponent)
    except OverflowError as exc:
        raise PayloadDecodeError(f"{where}: value out of float range") from exc


def records_v2(message: Mapping[str, object], binding: Binding) -> tuple[ReadRecord, ...]:
    """The records of a message :func:`check_v2` accepted, resolved against ``binding``."""
    plain = _plain_records(message, binding)
    if plain is not None:
        return plain
    return _records(message, binding)


#: Per alias table (by identity): each entry as ``(q, unit, exponent, decimal, divisor)``,
#: ``divisor`` the int ``10**-exponent`` of a float entry with exponent <= 0, else None.
_PLANS: dict[int, tuple[AliasTable, tuple[tuple[str, str, int | None, bool, int | None], ...]]] = {}


def _plan(table: AliasTable) -> tuple[tuple[str, str, int | None, bool, int | None], ...]:
    cached = _PLANS.get(id(table))
    if cached is not None and cached[0] is table:
        return cached[1]
    plan = tuple((e.q, e.unit, e.exponent, e.decimal,
                  10**-e.exponent if not e.decimal and e.exponent is not None
                  and e.exponent <= 0 else None) for e in table.entries)
    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[id(table)] = (table, plan)
    return plan


def _plain_records(message: Mapping[str, object], binding: Binding
                   ) -> tuple[ReadRecord, ...] | None:
    """The records of a message whose every item is a bare integer mantissa in table order (a
    poll's actual reads, which is what a correction's look-up decodes, gateway/store/versions.py),
    built as :func:`_records` builds them — the same value (``Decimal(f"{m}E{e}")`` or the
    correctly rounded ``m / 10**-e``) and :meth:`ReadRecord.actual` — without a dict of fields
    per item. None for anything else, even a message :func:`_records` would refuse: it decides,
    and says why (tests/test_payload_v2.py checks both give the same on any items)."""
    t = message["t"]
    items = message["reads"]
    if type(t) is not int or type(items) is not list:
        return None
    plan = _plan(binding.table)
    if len(items) > len(plan):
        return None
    actual = ReadRecord.actual
    out: list[ReadRecord] = []
    for item, (q, unit, exponent, decimal, divisor) in zip(items, plan, strict=False):
        if type(item) is not int or exponent is None or type(unit) is not str:
            return None
        if decimal:
            if not -_MANTISSA_LIMIT < item < _MANTISSA_LIMIT:
                return None
            value: Decimal | float = Decimal(f"{item}E{exponent}")
        else:
            try:
                value = float(item / divisor) if divisor is not None else \
                    float(item * 10**exponent)
            except OverflowError:
                return None
        try:
            out.append(actual(q, value, unit, t))
        except (PayloadEncodeError, TypeError):
            return None
    return tuple(out)


def _records(message: Mapping[str, object], binding: Binding) -> tuple[ReadRecord, ...]:
    """:func:`records_v2` for any message: every item through its dict of fields."""
    entries = binding.table.entries
    t = cast(int, message["t"])
    cursor = 0
    out: list[ReadRecord] = []
    for i, item in enumerate(cast(list[object], message["reads"])):
        where = f"reads[{i}]"
        if isinstance(item, list):
            t += cast(int, item[0])
            continue
        fields: dict[str, object] = (
            {(_NAMES[k] if isinstance(k, int) else str(k)): v
             for k, v in cast(dict[object, object], item).items()}
            if isinstance(item, dict) else {"val": item})
        alias = fields.pop("alias", None)
        q = fields.pop("q", None)
        if q is None:
            alias = cursor if alias is None else alias
            if not _is_int(alias) or not 0 <= cast(int, alias) < len(entries):
                raise PayloadDecodeError(f"{where}: alias {alias!r} is not in binding "
                                         f"{binding.index}'s table ({len(entries)} entries)")
            entry = entries[cast(int, alias)]
            q, decimal, exponent, unit = entry.q, entry.decimal, entry.exponent, entry.unit
            cursor = cast(int, alias) + 1
        else:
            decimal, exponent, unit = True, None, None
        if "val" not in fields:
            raise PayloadDecodeError(f"{where}: a record needs a value (null when quality is N)")
        fields["val"] = _value(fields["val"], decimal, exponent, f"{where}.val")
        if "raw" in fields:
            fields["raw"] = _value(fields["raw"], decimal, exponent, f"{where}.raw")
        fields.setdefault("unit", unit)
        if "reasons" in fields:
            reasons = fields["reasons"]
            if not isinstance(reasons, list):
                raise PayloadDecodeError(f"{where}: reasons must be a list of integers")
            fields["reasons"] = tuple(reasons)
        if "rev" in fields and (not _is_int(fields["rev"]) or cast(int, fields["rev"]) < 1):
            raise PayloadDecodeError(f"{where}: rev is a positive integer when present")
        if "hist" in fields and fields["hist"] is not True:
            raise PayloadDecodeError(f"{where}: hist is only ever true")
        if "sup" in fields:
            fields["sup"] = superseded(fields["sup"], f"{where}.sup")
        if not isinstance(fields["unit"], str):
            raise PayloadDecodeError(f"{where}: a record outside the table needs its unit")
        try:
            if len(fields) == 2 and fields["val"] is not None:  # only val and unit: actual
                # ReadRecord.actual: the same record and checks without the dataclass's
                # per-field init (a correction's look-up decodes a whole stored poll message
                # to check one record, gateway/store/versions.py).
                out.append(ReadRecord.actual(q, fields["val"], fields["unit"], t))  # type: ignore[arg-type]
            else:
                out.append(ReadRecord(q=q, t=t, **fields))  # type: ignore[arg-type]
        except PayloadEncodeError as exc:
            raise PayloadDecodeError(f"{where}: {exc}") from exc
        except TypeError as exc:  # a field ReadRecord does not take
            raise PayloadDecodeError(f"{where}: {exc}") from exc
    return tuple(out)


def resolved_v2(message: dict[str, object], aliases: AliasBook) -> dict[str, object]:
    """A message :func:`check_v2` accepted, in the v1 shape (``meter``, ``reads`` as maps of
    exact values) when ``aliases`` knows its binding; else unchanged."""
    binding = aliases.get(cast(str, message["gw"]), cast(int, message["epoch"]),
                          cast(int, message["binding"]))
    if binding is None:
        return message
    out = {k: v for k, v in message.items() if k not in ("reads", "hist")}
    out["meter"] = binding.meter
    out["reads"] = [_record_json(r) for r in records_v2(message, binding)]
    if message.get("hist") is True:
        out["hist"] = True
    return out


def _record_json(record: ReadRecord) -> dict[str, object]:
    """A record as a v1 read map: the five fields always there, the others when set."""
    out: dict[str, object] = {"q": record.q, "val": record.val, "unit": record.unit,
                              "t": record.t, "quality": record.quality}
    for name in ReadRecord.__dataclass_fields__:
        if name in out:
            continue
        value = getattr(record, name)
        if value != ReadRecord.__dataclass_fields__[name].default and value != ():
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def unresolved_v2(items: list[object]) -> list[object]:
    """The records as sent, for a reader without the birth: each with its alias number
    (implied ones spelled out) and ``mantissa`` or explicit ``val``; time steps as
    ``step_ms``."""
    out: list[object] = []
    cursor = 0
    for item in items:
        if isinstance(item, list):
            out.append({"step_ms": item[0]})
            continue
        fields: dict[str, object] = (
            {(_NAMES[k] if isinstance(k, int) else str(k)): v
             for k, v in cast(dict[object, object], item).items()}
            if isinstance(item, dict) else {"val": item})
        if "q" not in fields:
            alias = fields.pop("alias", cursor)
            cursor = cast(int, alias) + 1
            fields = {"alias": alias, **fields}
        if _is_int(fields.get("val")):
            fields["mantissa"] = fields.pop("val")
        out.append(fields)
    return out
