"""The v2 shortcut to COPY lines (central/copy_text.py) against the rows' way: for any schema-2
message the shortcut takes, the COPY text is the one the message's rows give
(``rows_v2`` → ``reads_copy_text``), and PostgreSQL stores the same rows either way — by COPY
and, for a batch that meets stored keys, by the upsert."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.copy_text import v2_copy_lines
from central.decoding import Decoder, ReadsIn, Stream
from central.storage import open_database
from central.storage.ingest import ingest
from central.storage.reads_copy import reads_copy_text
from protocols.payload import (
    AliasEntry,
    AliasTable,
    Binding,
    Envelope,
    PayloadDecodeError,
    ReadRecord,
    build_birth,
    build_reads_v2,
    rows_v2,
)
from tests.central.support import EPOCH, PREFIX, fresh_pg

T0 = 1_767_225_600_000
NOW = 1_767_225_999_000
names = st.sampled_from(["energy.active.import.total", "voltage.a", "q\twith tab",
                         "back\\slash", "new\nline", "kWh", "V", ""])
entries = st.builds(AliasEntry, q=names.filter(bool), unit=names,
                    exponent=st.one_of(st.none(), st.integers(-9, 6)), decimal=st.booleans())
tables = st.lists(entries, min_size=1, max_size=8, unique_by=lambda e: e.q).map(
    lambda es: AliasTable(tuple(es)))
items = st.one_of(
    st.integers(-(10**6), 10**6),
    st.integers(-(10**40), 10**40),
    st.integers(-(2**1100), 2**1100),  # a float entry's overflow
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=1),
)


def _rows_way(message: dict[str, object], binding: Binding, gw: str,
              message_id: str) -> ReadsIn:
    return ReadsIn(Stream(gw, EPOCH, 1), message_id, T0, binding.meter,
                   rows_v2(message, binding), False)


@settings(max_examples=500, deadline=None)
@given(table=tables, reads=st.lists(items, min_size=1, max_size=12),
       t=st.integers(-5, 2**64 + 5), gw=st.sampled_from(["gw-1", "gw\t2", "g\\w"]),
       meter=st.sampled_from(["m-1", "m\n2"]))
def test_lines_are_the_rows_copy_text(table: AliasTable, reads: list[object], t: int, gw: str,
                                      meter: str) -> None:
    binding = Binding(1, meter, table)
    message: dict[str, object] = {"t": t, "reads": reads}
    message_id = f"{gw}:{EPOCH:016x}:1"
    plain = v2_copy_lines(message, binding, gw, meter, message_id)
    if plain is None:
        return  # the rows' way (the decoder then calls rows_v2 itself)
    lines, times = plain
    try:
        rows = _rows_way(message, binding, gw, message_id)
    except PayloadDecodeError:
        pytest.fail("the shortcut took a message the full decoder rejects")
    fast = ReadsIn(rows.stream, message_id, T0, meter, lambda: rows.rows, False, lines, times)
    assert reads_copy_text([fast], NOW) == reads_copy_text([rows], NOW)
    assert fast.count == len(rows.rows)
    assert times == [t for i, t in enumerate(rows.times) if i == 0 or t != rows.times[i - 1]]


def test_a_poll_takes_the_shortcut_and_anything_else_the_rows() -> None:
    table = AliasTable((AliasEntry("e", "kWh", -3, True), AliasEntry("v", "V", -1, False),
                        AliasEntry("big", "Wh", 2, True), AliasEntry("f", "Hz", 0, False)))
    binding = Binding(1, "m", table)
    plain = v2_copy_lines({"t": T0, "reads": [-5, 2301, [60_000], 7, 50]}, binding, "g", "m",
                          "g:0:1")
    assert plain == ([f"g\tm\te\t{T0}\t-0.005\tkWh\tA\t\\N\t\tg:0:1\t0\t\\N",
                      f"g\tm\tv\t{T0}\t230.1\tV\tA\t\\N\t\tg:0:1\t0\t\\N",
                      f"g\tm\tbig\t{T0 + 60_000}\t700\tWh\tA\t\\N\t\tg:0:1\t0\t\\N",
                      f"g\tm\tf\t{T0 + 60_000}\t50.0\tHz\tA\t\\N\t\tg:0:1\t0\t\\N"],
                     [T0, T0 + 60_000])
    for reads in ([1.5], [Decimal("1.5")], [{0: 1}], [1, 2, 3, 4, 5], [10**40]):
        assert v2_copy_lines({"t": T0, "reads": reads}, binding, "g", "m", "g:0:1") is None


GW = "gw-1"
TABLE = AliasTable((AliasEntry("energy.active.import.total", "kWh", -2, True),
                    AliasEntry("energy.active.export.total", "kWh", -1, True),
                    AliasEntry("voltage.a", "V", -2, False),
                    AliasEntry("frequency", "Hz", -3, False)))
BINDINGS = [Binding(i + 1, f"m-{i}", TABLE) for i in range(3)]


def _messages(decoder: Decoder, seq0: int, polls: int) -> list[ReadsIn]:
    out = []
    seq = seq0
    for p in range(polls):
        t = T0 + p * 900_000
        for b in BINDINGS:
            records = [ReadRecord("energy.active.import.total", Decimal(f"{1000 + p}.0{seq % 10}"),
                                  "kWh", t),
                       ReadRecord("energy.active.export.total", Decimal(f"{p}.5"), "kWh", t),
                       ReadRecord("voltage.a", 230.0 + seq / 100, "V", t),
                       ReadRecord("frequency", 49.987, "Hz", t)]
            if p == 1 and b.index == 2:  # an estimate: this message goes the rows' way
                records[2] = ReadRecord("voltage.a", 231.0, "V", t, quality="E", method=2,
                                        reasons=(3,))
            payload = build_reads_v2(Envelope(GW, EPOCH, seq, t + 500), b, records)
            message = decoder.decode(f"{PREFIX}/{GW}/reads/{b.meter}", payload)
            assert isinstance(message, ReadsIn)
            out.append(message)
            seq += 1
    return out


def _stored(url: str) -> list[tuple[object, ...]]:
    db = open_database(url)
    try:
        return db.execute("SELECT gw, meter, quantity, t_ms, value::text, unit, quality, method, "
                          "reasons, message_id, rev, raw::text, received_ms FROM current_reads "
                          "ORDER BY gw, meter, quantity, t_ms")
    finally:
        db.close()


def _without_lines(m: ReadsIn) -> ReadsIn:
    return ReadsIn(m.stream, m.message_id, m.ts, m.meter, m.rows, m.hist)


def test_postgres_stores_the_same_rows_by_either_way(pg_server: str) -> None:
    decoder = Decoder(PREFIX, {})
    decoder.decode(f"{PREFIX}/{GW}/state", build_birth(
        Envelope(GW, EPOCH, 0, 10), bdseq=1, version="t", config_sha256="0" * 64,
        meters=[b.meter for b in BINDINGS], bindings=BINDINGS))
    first = _messages(decoder, 1, 8)  # 24 messages, 96 values: above the COPY threshold
    # The same polls again under new seqs (a gateway that lost its store): stored keys, so the
    # COPY fails and the batch is upserted from the rows built on demand.
    again = _messages(decoder, 101, 8)
    assert sum(m.copy_lines is not None for m in first) == len(first) - 1
    urls = []
    for transform in (lambda m: m, _without_lines):
        url = fresh_pg(pg_server)
        db = open_database(url)
        db.create_schema()
        for batch in (first, again):
            report = ingest(db, [transform(m) for m in batch], NOW)
            assert report.stored == len(batch)
        db.close()
        urls.append(url)
    fast, rows = (_stored(u) for u in urls)
    assert fast == rows and len(fast) == 8 * 3 * 4
