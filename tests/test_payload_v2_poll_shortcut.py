"""encode_reads_v2's shortcut for the common message (protocols/payload/compact.py,
``_plain_poll``: a poll's actual reads in table order, read at one time) against the encoder as it
was before the shortcut, kept here as the oracle: the same bytes, or the same error, for any
records — plain polls, polls with one thing changed, and anything else."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.payload import AliasEntry, AliasTable, Binding, PayloadEncodeError, ReadRecord
from protocols.payload.compact import (
    _FIELDS,
    _KEY,
    _MANTISSA_LIMIT,
    _PLAIN,
    K_BINDING,
    K_READS,
    K_T,
    K_TS,
    _message_start,
    _pack16,
    _record_map,
    _sint,
    _Slot,
    _uint,
    encode_reads_v2,
    value_bytes,
)
from protocols.payload.schema import MAX_PAYLOAD_BYTES
from protocols.reads_encoder import _head
from tests.test_payload_v2 import records, tables

GW = "gw-0001"
EPOCH = 0x0123456789ABCDEF


def _oracle_plan(table: AliasTable) -> dict[str, _Slot]:
    plan: dict[str, _Slot] = {}
    for i, e in enumerate(table.entries):
        scale = (10 ** -e.exponent if not e.decimal and e.exponent is not None
                 and -22 <= e.exponent <= 0 else None)
        plan[e.q] = (i, e.unit, e.exponent, e.decimal, scale,
                     float(scale) if scale is not None else None)
    return plan


def oracle(gw: str, epoch: int, seq: int, ts: int, binding: Binding,
           reads: Sequence[ReadRecord]) -> bytes:
    """encode_reads_v2 before the shortcut (its per-record loop is ``_items`` now)."""
    if not reads:
        raise PayloadEncodeError(f"meter {binding.meter}: a reads message needs at least one read")
    if not (0 <= epoch <= 2**64 - 1 and 0 <= seq <= 2**64 - 1 and 0 <= ts <= 2**64 - 1):
        raise PayloadEncodeError("envelope numbers must fit in 64 bits")
    get = _oracle_plan(binding.table).get
    current_t = reads[0].t
    offset = _sint(ts - current_t)
    if offset is None:
        raise PayloadEncodeError("ts - t must fit in 64 bits")
    items: list[bytes] = []
    cursor = 0
    for record in reads:
        f = _FIELDS(record)
        t = f[3]
        if t != current_t:
            items.append(b"\x81" + (_sint(t - current_t) or b""))
            current_t = t
        slot = get(f[0])
        if slot is None:
            items.append(_record_map(record, None, cursor))
            continue
        val = f[1]
        if slot[0] == cursor and f[4:] == _PLAIN and f[2] == slot[1] and val is not None:
            scale = slot[5]
            if type(val) is float and scale is not None:
                product = val * scale
                if 0.0 < product < _MANTISSA_LIMIT:
                    mantissa = int(product + 0.5)
                    if mantissa / scale == val:
                        if 0xFF < mantissa < 0x10000:
                            items.append(_pack16(0x19, mantissa))
                        else:
                            items.append(_uint(mantissa))
                        cursor += 1
                        continue
            items.append(value_bytes(val, slot))
        else:
            items.append(_record_map(record, slot, cursor))
        cursor = slot[0] + 1
    data = b"".join((_message_start(gw, epoch), _uint(seq), _KEY[K_TS], _uint(ts),
                     _KEY[K_BINDING], _uint(binding.index), _KEY[K_T], offset, _KEY[K_READS],
                     _head(4, len(items)), b"".join(items)))
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadEncodeError(f"reads message of {binding.meter} would be {len(data)} bytes, "
                                 f"over the {MAX_PAYLOAD_BYTES}-byte limit; split it")
    return data


def outcome(encode: object, *args: object) -> object:
    try:
        return encode(*args)  # type: ignore[operator]
    except PayloadEncodeError as exc:
        return ("error", str(exc))


# Values at an entry's resolution (the shortcut's bare mantissas), and anything else.
any_float = st.floats(allow_nan=False, allow_infinity=False)
any_decimal = st.builds(lambda m, e: Decimal(f"{m}E{e}"), st.integers(-(10**25), 10**25),
                        st.integers(-30, 6))


@st.composite
def value_for(draw: st.DrawFn, entry: AliasEntry) -> Decimal | float:
    if entry.exponent is not None and draw(st.integers(0, 3)):
        mantissa = draw(st.one_of(st.integers(0, 0x1FFFF), st.integers(-(10**20), 10**20)))
        exact = Decimal(f"{mantissa}E{entry.exponent}")
        return exact if entry.decimal else float(exact)
    return draw(st.one_of(any_float, any_decimal))


@st.composite
def plain_polls(draw: st.DrawFn, table: AliasTable) -> list[ReadRecord]:
    """The table's first entries in order, actual, one time — then maybe one thing changed."""
    t = draw(st.integers(0, 2**44))
    count = draw(st.integers(1, len(table.entries)))
    reads = [ReadRecord(e.q, draw(value_for(e)), e.unit, t) for e in table.entries[:count]]
    k = draw(st.integers(0, count - 1))
    change = draw(st.sampled_from(["none", "none", "t", "unit", "quality", "null", "hist", "rev",
                                   "order", "drop", "foreign"]))
    r = reads[k]
    if change == "t":
        reads[k] = ReadRecord(r.q, r.val, r.unit, draw(st.integers(0, 2**44)))
    elif change == "unit":
        reads[k] = ReadRecord(r.q, r.val, r.unit + "x", r.t)
    elif change == "quality":
        reads[k] = ReadRecord(r.q, r.val, r.unit, r.t, quality="E", method=draw(
            st.one_of(st.none(), st.integers(0, 300))))
    elif change == "null":
        reads[k] = ReadRecord(r.q, None, r.unit, r.t, quality="N", reasons=(73,), raw=r.val)
    elif change == "hist":
        reads[k] = ReadRecord(r.q, r.val, r.unit, r.t, hist=True)
    elif change == "rev":
        reads[k] = ReadRecord(r.q, r.val, r.unit, r.t, rev=1, sup=("gw:1:2", 0))
    elif change == "order" and count > 1:
        reads.reverse()
    elif change == "drop" and count > 1:
        del reads[k]
    elif change == "foreign":
        reads.insert(k, ReadRecord("not.in.table", r.val, r.unit, r.t))
    return reads


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), table=tables, seq=st.integers(0, 2**64 - 1), index=st.integers(1, 2**20),
       ts=st.integers(-5, 2**45))
def test_the_same_bytes_as_before_on_polls(data: st.DataObject, table: AliasTable, seq: int,
                                           index: int, ts: int) -> None:
    reads = data.draw(plain_polls(table))
    binding = Binding(index, "m-001", table)
    assert outcome(encode_reads_v2, GW, EPOCH, seq, ts, binding, reads) == outcome(
        oracle, GW, EPOCH, seq, ts, binding, reads)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), table=tables, seq=st.integers(0, 2**64 - 1), ts=st.integers(0, 2**45))
def test_the_same_bytes_as_before_on_any_records(data: st.DataObject, table: AliasTable, seq: int,
                                                 ts: int) -> None:
    reads = data.draw(records(table))
    binding = Binding(7, "m-001", table)
    assert outcome(encode_reads_v2, GW, EPOCH, seq, ts, binding, reads) == outcome(
        oracle, GW, EPOCH, seq, ts, binding, reads)


def test_a_modbus_poll_takes_the_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness meter's poll (../shared/bench, issue 18) is recognised as the common message:
    the per-record path is not used for it."""
    from protocols.payload import compact

    table = AliasTable((AliasEntry("voltage.a", "V", -1, False),
                        AliasEntry("current.a", "A", -2, False),
                        AliasEntry("power.active.total", "kW", -5, False),
                        AliasEntry("energy.active.import.total", "kWh", -2, True),
                        AliasEntry("power.factor.total", "", -3, False)))
    t = 1_796_677_575_301
    reads = [ReadRecord.actual("voltage.a", 233.1, "V", t),
             ReadRecord.actual("current.a", 14.39, "A", t),
             ReadRecord.actual("power.active.total", 0.7667, "kW", t),
             ReadRecord.actual("energy.active.import.total", Decimal("20927.30"), "kWh", t),
             ReadRecord.actual("power.factor.total", 0.973, "", t)]
    expected = oracle(GW, EPOCH, 9, t + 3, Binding(1, "m-001", table), reads)

    def per_record(*args: object) -> list[bytes]:
        raise AssertionError("the common message took the per-record path")

    monkeypatch.setattr(compact, "_items", per_record)
    assert encode_reads_v2(GW, EPOCH, 9, t + 3, Binding(1, "m-001", table), reads) == expected
