"""NEM12 export read back by a parser we did not write (``nemreader``).

A day of 15-minute register reads for two meters goes through the consumer's real ingest path
into SQLite and PostgreSQL; ``edge-central export nem12`` writes the files (with ``nemwriter``);
``nemreader`` parses them; every interval's value, quality-method and reason must equal what
``current_reads`` says, derived here independently: register at the interval's end minus
register at its start, graded by the closing read.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pytest

from central.cli import main
from central.storage import open_database
from central.storage.ingest import ingest
from protocols.payload import ReadRecord
from tests.central.support import reads_msg

nemreader = pytest.importorskip("nemreader")

DAY = dt.date(2026, 12, 6)
START_MS = int(dt.datetime(2026, 12, 6, tzinfo=dt.UTC).timestamp() * 1000)
STEP = 900_000
Q = "energy.active.import.total"


def _day_of_reads(seed: int) -> list[ReadRecord]:
    """97 boundary reads (00:00 … 24:00) with estimates, substitutes, a null and a hole."""
    rng = random.Random(seed)
    register = Decimal("5321.125")
    out = []
    for k in range(97):
        register += Decimal(rng.randint(0, 900)) / 1000
        t = START_MS + k * STEP
        if k == 40:
            continue  # never arrived, nothing estimated: intervals 40 and 41 are null
        if k in (10, 11, 12):
            out.append(ReadRecord(Q, register, "kWh", t, quality="E", method=17, reasons=(76,)))
        elif k == 60:
            out.append(ReadRecord(Q, register, "kWh", t, quality="S", method=24,
                                  reasons=(74, 18), raw=register * 10))
        elif k == 70:
            out.append(ReadRecord(Q, None, "kWh", t, quality="N", reasons=(45,)))
        else:
            out.append(ReadRecord(Q, register, "kWh", t))
    return out


def _expected(db_url: str, meter: str) -> list[tuple[Decimal, str, str | None]]:
    db = open_database(db_url)
    by_t = {int(t): (None if v is None else Decimal(str(v)), q, m, r) for t, v, q, m, r in
            db.execute("SELECT t_ms, value, quality, method, reasons FROM current_reads WHERE "
                       "meter = ? ORDER BY t_ms", (meter,))}
    db.close()
    out = []
    for k in range(1, 97):
        opening, closing = by_t.get(START_MS + (k - 1) * STEP), by_t.get(START_MS + k * STEP)
        codes = sorted(int(c) for c in closing[3].split(";") if c) if closing else []
        if opening is None or closing is None or opening[0] is None or closing[0] is None:
            null_reason = str(codes[0]) if closing is not None and codes else None
            out.append((Decimal(0), "N", null_reason))
            continue
        value, quality, method, _reasons = closing
        qm = quality if method is None else f"{quality}{method:02d}"
        out.append((value - opening[0], qm, str(codes[0]) if codes else None))
    return out


def test_nem12_day_read_back_by_nemreader_equals_current_reads(db_url: str,
                                                               tmp_path: Path) -> None:
    db = open_database(db_url)
    messages = [reads_msg("gw-1", i + 1, meter, [record])
                for i, (meter, record) in enumerate(
                    [("m-1", r) for r in _day_of_reads(1)] + [("m-2", r) for r in _day_of_reads(2)])]
    ingest(db, messages, 1)
    db.close()
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    out = tmp_path / "nem12"
    assert main(["export", "nem12", "--config", str(config), "--date", DAY.isoformat(),
                 "--out", str(out)]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["NEM12_gw-1_m-1_20261206.csv", "NEM12_gw-1_m-2_20261206.csv"]
    for path, meter in zip(files, ("m-1", "m-2"), strict=True):
        parsed = nemreader.read_nem_file(str(path))
        readings = parsed.readings[meter]["E1"]
        assert len(readings) == 96
        got = [(Decimal(repr(r.read_value)), r.quality_method, r.event_code or None)
               for r in readings]
        assert got == _expected(db_url, meter)
        assert readings[0].t_start == dt.datetime(2026, 12, 6, 0, 0)
        assert readings[-1].t_end == dt.datetime(2026, 12, 7, 0, 0)
        assert {r.uom for r in readings} == {"kWh"}
        # what the reader saw is what was stored: estimates and substitutes kept their marks
        assert [g[1] for g in got].count("E17") == 3 and "S24" in [g[1] for g in got]


def test_export_rejects_a_bad_zone_in_one_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "c.sqlite"}"\n')
    assert main(["export", "nem12", "--config", str(config), "--date", "2026-12-06", "--out",
                 str(tmp_path), "--tz", "Mars/Olympus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-central: --tz 'Mars/Olympus'") and "\n" not in err
