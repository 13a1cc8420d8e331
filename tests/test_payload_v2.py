"""Payload schema v2 (protocols/payload/compact.py): round trips, exactness, the trust boundary,
the birth's aliases, the store's bindings, and the size goal."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.acquisition.alias_tables import alias_table
from gateway.store import Store
from gateway.store.records import OutboxMessage
from protocols.payload import (
    AliasBook,
    AliasEntry,
    AliasTable,
    Binding,
    Envelope,
    PayloadDecodeError,
    ReadRecord,
    build_birth,
    build_reads_v2,
    decode_message,
    mark_hist,
    parse_reads,
)
from protocols.profiles import parse_profile

GW = "gw-0001"
EPOCH = 0x0123456789ABCDEF
TS = 1_767_225_604_200


def same(a: ReadRecord, b: ReadRecord) -> bool:
    """Equal, and exactly: a Decimal keeps its exponent (1.50 is not 1.5), a float its bits."""
    if a != b:
        return False
    for x, y in ((a.val, b.val), (a.raw, b.raw)):
        if isinstance(x, Decimal) and x.as_tuple().exponent != y.as_tuple().exponent:  # type: ignore[union-attr]
            return False
        if isinstance(x, float) and (type(y) is not float or x.hex() != y.hex()):
            return False
    return True


def book_of(*bindings: Binding, gw: str = GW, epoch: int = EPOCH) -> AliasBook:
    book = AliasBook()
    birth = build_birth(Envelope(gw, epoch, 1, TS), bdseq=1, version="x", config_sha256="0" * 64,
                        meters=[b.meter for b in bindings], bindings=list(bindings))
    assert book.learn(decode_message(birth)) == len(bindings)
    return book


# -- generated tables and records ---------------------------------------------------------------

names = st.from_regex(r"[a-z]{1,8}(\.[a-z0-9]{1,6}){0,3}", fullmatch=True)
units = st.sampled_from(["kWh", "V", "A", "kW", "", "Hz", "kvarh"])
entries = st.builds(AliasEntry, names, units, st.one_of(st.none(), st.integers(-6, 3)),
                    st.booleans())
tables = st.lists(entries, min_size=1, max_size=8, unique_by=lambda e: e.q).map(
    lambda es: AliasTable(tuple(es)))


def decimals() -> st.SearchStrategy[Decimal]:
    return st.builds(lambda m, e: Decimal(f"{m}E{e}"),
                     st.integers(-(10**20), 10**20), st.integers(-8, 4))


floats = st.floats(allow_nan=False, allow_infinity=False)
# Floats as a profile makes them: the double nearest to a decimal at the alias's resolution.
rounded = st.builds(lambda m, k: m / 10**k, st.integers(-(10**9), 10**9), st.integers(0, 4))
values = st.one_of(decimals(), floats, rounded)


@st.composite
def records(draw: st.DrawFn, table: AliasTable) -> list[ReadRecord]:
    out = []
    t = draw(st.integers(0, 2**42))
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            t = draw(st.integers(0, 2**42))
        if draw(st.integers(0, 3)) and table.entries:
            entry = draw(st.sampled_from(table.entries))
            q, unit = entry.q, draw(st.sampled_from([entry.unit, entry.unit, "kWh"]))
            if entry.exponent is not None and draw(st.booleans()):
                mantissa = draw(st.integers(-(10**12), 10**12))
                val: Decimal | float = (Decimal(f"{mantissa}E{entry.exponent}") if entry.decimal
                                        else float(Decimal(f"{mantissa}E{entry.exponent}")))
            else:
                val = draw(values)
        else:
            q, unit, val = draw(names), draw(units), draw(values)
        quality = draw(st.sampled_from("AAAAESFN"))
        if quality == "A":
            out.append(ReadRecord(q, val, unit, t, hist=draw(st.booleans()),
                                  rev=draw(st.integers(0, 3))))
        else:
            rejected = quality == "N"
            out.append(ReadRecord(q, None if rejected else val, unit, t, quality=quality,
                                  method=draw(st.one_of(st.none(), st.integers(0, 300))),
                                  reasons=tuple(draw(st.lists(st.integers(0, 2**32), max_size=3))),
                                  raw=draw(st.one_of(st.none(), values)),
                                  rev=draw(st.integers(0, 5))))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), table=tables, seq=st.integers(0, 2**64 - 1), index=st.integers(1, 2**20))
def test_encode_then_decode_gives_back_every_record_exactly(
        data: st.DataObject, table: AliasTable, seq: int, index: int) -> None:
    reads = data.draw(records(table))
    binding = Binding(index, "m-001", table)
    env = Envelope(GW, EPOCH, seq, data.draw(st.integers(0, 2**43)))
    payload = build_reads_v2(env, binding, reads)
    message = parse_reads(payload, book_of(binding))
    assert message.meter == "m-001" and message.seq == seq and message.ts == env.ts
    assert message.id == f"{GW}:{EPOCH:016x}:{seq}" and message.epoch == EPOCH
    assert len(message.reads) == len(reads)
    for got, sent in zip(message.reads, reads, strict=True):
        assert type(got) is ReadRecord and same(got, sent), (got, sent)
    hist = parse_reads(mark_hist(payload), book_of(binding))
    assert hist.hist and hist.reads == message.reads


def test_actual_reads_in_table_order_are_bare_mantissas() -> None:
    table = AliasTable((AliasEntry("voltage.a", "V", -2, False),
                        AliasEntry("energy.active.import.total", "kWh", -2, True)))
    reads = [ReadRecord.actual("voltage.a", 230.12, "V", TS - 50),
             ReadRecord.actual("energy.active.import.total", Decimal("12345.67"), "kWh", TS - 50)]
    raw = cbor2.loads(build_reads_v2(Envelope(GW, EPOCH, 9, TS), Binding(1, "m-1", table), reads))
    assert raw[8] == [23012, 1234567] and raw[7] == 50 and raw[6] == 1
    # A value the declared exponent cannot hold exactly travels as itself, still exact.
    odd = [ReadRecord.actual("voltage.a", 230.123, "V", TS),
           ReadRecord.actual("energy.active.import.total", Decimal("12345.678"), "kWh", TS)]
    raw = cbor2.loads(build_reads_v2(Envelope(GW, EPOCH, 9, TS), Binding(1, "m-1", table), odd))
    assert raw[8] == [230.123, Decimal("12345.678")]


# -- the trust boundary -------------------------------------------------------------------------

TABLE = AliasTable((AliasEntry("voltage.a", "V", -1, False),
                    AliasEntry("energy.active.import.total", "kWh", -2, True)))
BINDING = Binding(2, "m-001", TABLE)
SAMPLE = build_reads_v2(Envelope(GW, EPOCH, 77, TS), BINDING, [
    ReadRecord("voltage.a", 229.7, "V", TS),
    ReadRecord("energy.active.import.total", Decimal("1.50"), "kWh", TS - 900_000, quality="E",
               method=24, reasons=(76,), rev=1)])


def only_ours(data: bytes) -> None:
    """Decoding ``data`` succeeds or raises PayloadDecodeError with a one-line reason."""
    for decode in (decode_message, lambda d: parse_reads(d, book_of(BINDING)),
                   lambda d: decode_message(d, book_of(BINDING))):
        try:
            decode(data)
        except PayloadDecodeError as exc:
            assert "\n" not in str(exc) and str(exc)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_payload_decode_error(data: bytes) -> None:
    only_ours(data)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255), st.integers(0, len(SAMPLE)))
def test_damaged_v2_messages_raise_only_payload_decode_error(at: int, byte: int, cut: int) -> None:
    only_ours(SAMPLE[:at] + bytes([byte]) + SAMPLE[at + 1:])
    only_ours(SAMPLE[:cut])


cbor_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), floats,
                        st.text(max_size=5), st.binary(max_size=4), decimals(),
                        st.lists(st.integers(-(2**64), 2**64), max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.integers(-2, 12), st.one_of(
    cbor_leaves, st.lists(st.one_of(cbor_leaves, st.dictionaries(
        st.one_of(st.integers(-1, 12), st.text(max_size=4)), cbor_leaves, max_size=5)),
        max_size=5)), max_size=10))
def test_v2_shaped_nonsense_raises_only_payload_decode_error(message: dict[int, object]) -> None:
    message = {0: 2, **message}
    only_ours(cbor2.dumps(message))


def test_an_unknown_binding_is_named_and_the_birth_suggested() -> None:
    with pytest.raises(PayloadDecodeError, match=r"binding 2 of gateway 'gw-0001' .*birth"):
        parse_reads(SAMPLE)
    with pytest.raises(PayloadDecodeError, match="binding 2"):
        parse_reads(SAMPLE, book_of(Binding(3, "m-001", TABLE)))
    with pytest.raises(PayloadDecodeError):  # the same index of another store epoch
        parse_reads(SAMPLE, book_of(BINDING, epoch=EPOCH + 1))
    assert decode_message(SAMPLE)["id"] == f"{GW}:{EPOCH:016x}:77"


# -- the store's bindings -------------------------------------------------------------------------

def test_bindings_are_kept_reused_and_never_reused_for_another_table(tmp_path: Path) -> None:
    other = AliasTable((AliasEntry("voltage.a", "V", -2, False),))
    path = tmp_path / "gateway.sqlite"
    with Store.open(path) as store:
        first = store.bind_aliases({"m-1": TABLE, "m-2": TABLE})
        assert {b.index for b in first.values()} == {1, 2}
        assert store.bind_aliases({"m-1": TABLE, "m-2": TABLE}) == first
        changed = store.bind_aliases({"m-1": other, "m-2": TABLE})
        assert changed["m-1"].index == 3 and changed["m-2"] == first["m-2"]
        msg = OutboxMessage.for_reads(topic="mtr/v1/gw/reads/m-1", gw="gw", epoch=store.epoch,
                                      ts=TS, meter="m-1",
                                      reads=[ReadRecord.actual("voltage.a", 229.71, "V", TS)],
                                      binding=changed["m-1"])
        store.commit_poll([msg])
        epoch = store.epoch
    with Store.open(path) as store:  # after a restart: the same indexes, the old one kept
        assert [b.index for b in store.alias_bindings()] == [1, 2, 3]
        assert store.bind_aliases({"m-1": TABLE})["m-1"] == first["m-1"]
        assert store.bind_aliases({"m-3": TABLE})["m-3"].index == 4
        (stored,) = store.reads("m-1")
        assert stored.record.val == 229.71 and store.epoch == epoch


# -- the size goal ---------------------------------------------------------------------------------

def test_a_ten_value_modbus_poll_is_at_most_8_bytes_a_value() -> None:
    """The goal of issue 15 for the poll of bench/bench_modbus_cpu.py, with the envelope as it
    is for a long time on a large gateway: an 8-character gateway id, seq just below 2**32
    (1.4 years at 100 messages a second; docs/payloads.md counts the bytes beyond), binding
    100 (a hundred meters), the poll's time 200 ms before the message's. bench/bench_payload_size.py measures the real daemon."""
    from bench.bench_modbus_cpu import PROFILE

    table = alias_table(parse_profile(PROFILE, name="bench"))  # type: ignore[arg-type]
    values = {"voltage.a": 231.47, "voltage.b": 229.96, "voltage.c": 230.58, "current.a": 12.345,
              "current.b": 11.982, "current.c": 12.107, "power.active.total": 5.4321,
              "power.factor.total": 0.987, "frequency": 49.98,
              "energy.active.import.total": Decimal("123456.78")}
    reads = [ReadRecord.actual(e.q, values[e.q], e.unit, TS - 200) for e in table.entries]
    assert len(reads) == 10
    binding = Binding(100, "mb-100", table)
    payload = build_reads_v2(Envelope("gw-00001", 2**64 - 1, 2**32 - 1, TS), binding, reads)
    assert len(payload) <= 80, len(payload)
    decoded = parse_reads(payload, book_of(binding, gw="gw-00001", epoch=2**64 - 1))
    assert [r.val for r in decoded.reads] == [values[e.q] for e in table.entries]


def test_a_store_that_cannot_write_hands_out_no_unpersisted_binding(tmp_path: Path) -> None:
    """Disk full (SQLite at its page limit): the new binding fails with StoreError, the
    meters that had one keep it, and the failed index is not remembered — so it cannot be
    named by a message, declared by a birth, or given to another table after a restart."""
    from gateway.store.errors import StoreError

    other = AliasTable(tuple(AliasEntry(f"x.q{i}", "", -2, True) for i in range(400)))
    with Store.open(tmp_path / "gateway.sqlite") as store:
        first = store.bind_aliases({"m-1": TABLE})
        conn = store._conn
        assert conn is not None
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(StoreError):
            store.bind_aliases({"m-1": TABLE, "m-2": other})
        assert store.known_aliases({"m-1": TABLE, "m-2": other}) == first
        assert [b.index for b in store.alias_bindings()] == [1]
        conn.execute("PRAGMA max_page_count = 1000000")  # space freed
        assert store.bind_aliases({"m-2": other})["m-2"].index == 2
