"""The v2 encoder's ``known`` mantissas (protocols/payload/compact.py, ``encode_reads_v2``): a
value looked up gives the very bytes working it out gives, by hypothesis on polls whose values
repeat (the case the look-up is for), including zeros, negative zero, negatives, values the
exponent cannot hold and values beyond 2**53; and the look-up stays bounded."""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.payload import AliasEntry, AliasTable, Binding, ReadRecord, decode_message
from protocols.payload.compact import _KNOWN_LIMIT, _plan, encode_reads_v2
from protocols.payload.compact_decode import records_v2

T0 = 1_767_225_600_000

TABLE = AliasTable((AliasEntry("voltage.a", "V", -1, False),
                    AliasEntry("current.a", "A", -2, False),
                    AliasEntry("power.active.total", "kW", -5, False),
                    AliasEntry("power.factor.total", "", -3, False),
                    AliasEntry("frequency", "Hz", 0, False),
                    AliasEntry("energy.active.import.total", "kWh", -2, True)))
FLOATS = TABLE.entries[:5]

#: A small pool of values, drawn from again and again: scaled integers as a meter sends them,
#: and everything at the edges of the bare-mantissa path.
values = st.one_of(
    st.integers(-70_000, 70_000).map(lambda n: n / 10),
    st.integers(0, 2**32).map(lambda n: n / 100_000),
    st.sampled_from([0.0, -0.0, 2.0**53, 2.0**53 / 10, 1e300, 5e-324, 0.1 + 0.2, -230.1]),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _cold(binding: Binding, ts: int, records: tuple[ReadRecord, ...]) -> bytes:
    """The message worked out with nothing known (every lookup misses)."""
    for slot in _plan(binding.table).values():
        slot[6].clear()
    return encode_reads_v2("gw-1", 3, 17, ts, binding, records)


@settings(max_examples=300, deadline=None)
@given(pool=st.lists(values, min_size=1, max_size=6), data=st.data())
def test_known_mantissas_give_the_bytes_worked_out_ones_give(pool: list[float],
                                                             data: st.DataObject) -> None:
    binding = Binding(4, "m-1", TABLE)
    polls = []
    for n in range(4):
        t = T0 + 1000 * n
        chosen = data.draw(st.lists(st.sampled_from(pool), min_size=5, max_size=5))
        records = tuple(ReadRecord(e.q, v, e.unit, t) for e, v in zip(FLOATS, chosen, strict=True))
        records += (ReadRecord("energy.active.import.total", Decimal("1234.56") + n, "kWh", t),)
        polls.append((t + 20, records))
    # Warm: each poll after the ones before it, twice (the second time all values are known).
    warm = [encode_reads_v2("gw-1", 3, 17, ts, binding, records)
            for _ in range(2) for ts, records in polls]
    cold = [_cold(binding, ts, records) for _ in range(2) for ts, records in polls]
    assert warm == cold
    for payload, (_ts, records) in zip(warm, polls, strict=False):
        decoded = records_v2(decode_message(payload), binding)
        assert [(r, type(r.val)) for r in decoded] == [(r, type(r.val)) for r in records]
        for got, sent in zip(decoded, records, strict=True):
            if isinstance(sent.val, float):  # -0.0 == 0.0: the sign must survive as well
                assert math.copysign(1.0, got.val) == math.copysign(1.0, sent.val)  # type: ignore[arg-type]


def test_a_value_seen_before_is_looked_up_and_the_lookup_stays_bounded() -> None:
    binding = Binding(5, "m-2", TABLE)
    known = _plan(TABLE)["voltage.a"][6]
    known.clear()
    first = encode_reads_v2("gw-1", 3, 1, T0, binding, (ReadRecord("voltage.a", 230.1, "V", T0),))
    assert known == {230.1: b"\x19\x08\xfd"}  # 2301, the bare mantissa
    assert encode_reads_v2("gw-1", 3, 1, T0, binding,
                           (ReadRecord("voltage.a", 230.1, "V", T0),)) == first
    for n in range(1, _KNOWN_LIMIT + 10):
        encode_reads_v2("gw-1", 3, 1, T0, binding, (ReadRecord("voltage.a", n / 10, "V", T0),))
    assert 0 < len(known) <= _KNOWN_LIMIT
    # Values the bare mantissa cannot carry exactly are never kept.
    for slot in _plan(TABLE).values():
        slot[6].clear()
    encode_reads_v2("gw-1", 3, 1, T0, binding, (ReadRecord("voltage.a", 0.1 + 0.2, "V", T0),
                                                ReadRecord("current.a", -1.5, "A", T0),
                                                ReadRecord("power.active.total", 0.0, "kW", T0)))
    assert all(not slot[6] for slot in _plan(TABLE).values())
