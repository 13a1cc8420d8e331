"""``gwtool vee`` end to end, as a subprocess (DESIGN §2 contract)."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from hil_tests.synthetic_reads import FleetSpec, SyntheticFleet, write_csv

REPO = Path(__file__).resolve().parent.parent
PRIMARY = "energy.active.import.total"
#: Local midnight of 2025-03-03 in China (UTC+8), the tool's default local time.
MIDNIGHT = dt.datetime(2025, 3, 2, 16, 0, tzinfo=dt.UTC)


def gwtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_tools.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def at(k: int) -> str:
    return (MIDNIGHT + dt.timedelta(minutes=15 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def reads(tmp_path: Path) -> Path:
    """Two meters over two local days: a 45-minute gap, a read below the previous one and
    three malformed lines on meter a; meter b has a voltage out of band and a drifting clock."""
    lines = ["meter,time,quantity,value"]
    for k in range(0, 193):
        value = 1000.0 + 0.25 * k
        if k in (30, 31, 32):
            continue  # the gap
        if k == 60:
            value = 990.0  # a decrease
        lines.append(f"a,{at(k)},{PRIMARY},{value:.2f}")
        if k == 20:
            lines.append(f"a,not-a-time,{PRIMARY},1005.00")
            lines.append(f"a,{at(k)},{PRIMARY},lots")
            lines.append(f"a,{at(k)},{PRIMARY}")
        if k % 4 == 0:
            lines.append(f"b,{at(k)},{PRIMARY},{50.0 + 0.1 * k:.2f}")
    lines.append(f"b,{at(40)},voltage.a,241.0")
    lines.append(f"b,{at(40)},voltage.b,221.0")
    lines.append(f"b,{at(96)},clock.offset,420.0")
    lines.append(f"b,{at(96)},status.text,ok")
    path = tmp_path / "reads.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_output_keeps_rows_in_order_adds_flags_and_estimates(reads: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = gwtool("vee", "--input", str(reads), "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    assert rows[0] == ["meter", "time", "quantity", "value", "quality", "method", "reasons"]
    body = rows[1:]
    # malformed rows: reported with their line number; kept as N unless they lack fields
    stderr = result.stderr
    text = reads.read_text().splitlines()
    bad_time = text.index(f"a,not-a-time,{PRIMARY},1005.00") + 1
    assert f"line {bad_time}: time 'not-a-time' is not an ISO 8601 time" in stderr
    assert f"line {bad_time + 1}: value 'lots' is not a number" in stderr
    assert f"line {bad_time + 2}: expected 4 fields" in stderr
    input_rows = list(csv.reader(reads.read_text().splitlines()))[1:]
    kept = [r for r in input_rows if len(r) == 4]
    originals = [r[:4] for r in body if r[4] in ("A", "N") or r[:4] in kept]
    assert [r for r in originals if r in kept] == kept  # every input row, in input order
    assert ["a", "not-a-time", PRIMARY, "1005.00", "N", "", ""] in body
    # the gap: three estimated rows (linear, reason 76) just before the read that ends it
    estimated = [r for r in body if r[4] == "E" and r[0] == "a"]
    assert [r[1] for r in estimated] == [at(30), at(31), at(32)]
    assert {r[5] for r in estimated} == {"17"} and {r[6] for r in estimated} == {"76"}
    values = [float(r[3]) for r in estimated]
    assert 1007.25 < values[0] < values[1] < values[2] < 1008.25
    position = body.index(estimated[-1])
    assert body[position + 1][:3] == ["a", at(33), PRIMARY]
    # the decrease: the read itself is N (18) and its substitute S follows it
    bad = body.index(["a", at(60), PRIMARY, "990.00", "N", "", "18"])
    substitute = body[bad + 1]
    assert substitute[:3] == ["a", at(60), PRIMARY] and substitute[4:] == ["S", "17", "18"]
    assert float(substitute[3]) == pytest.approx(1015.0, abs=0.02)
    # meter b: voltage above 235.4 V (reason 28, warn keeps A), clock 7 min off (89)
    assert ["b", at(40), "voltage.a", "241.0", "A", "", "28"] in body
    assert ["b", at(40), "voltage.b", "221.0", "A", "", ""] in body
    assert ["b", at(96), "clock.offset", "420.0", "A", "", "89"] in body
    assert ["b", at(96), "status.text", "ok", "A", "", ""] in body
    # b reads hourly: its three missing quarter hours per hour are estimated, and its actual
    # reads stay actual
    assert all(r[4] == "A" for r in body if r[0] == "b" and r[2] == PRIMARY and r[4] != "E")
    assert "estimated (E)" in stderr and "3 malformed" in stderr


def test_header_order_and_extra_columns_are_kept(tmp_path: Path) -> None:
    lines = ["value,note,time,meter,quantity"]
    for k in range(0, 12):
        if k != 5:
            lines.append(f"{100 + k * 0.5:.2f},x{k},{at(k)},m,{PRIMARY}")
    source = tmp_path / "in.csv"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    result = gwtool("vee", "--input", str(source), "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    assert rows[0] == ["value", "note", "time", "meter", "quantity", "quality", "method", "reasons"]
    estimated = [r for r in rows if r[5:6] == ["E"]]
    assert len(estimated) == 1 and estimated[0][2:5] == [at(5), "m", PRIMARY]
    assert float(estimated[0][0]) == pytest.approx(102.5) and estimated[0][1] == ""


def test_bad_rules_and_missing_input_exit_1_with_one_line(reads: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[vee]\n[[vee.rules]]\nname = "spike"\nfactor = -1\n')
    result = gwtool(
        "vee", "--input", str(reads), "--output", str(tmp_path / "o.csv"), "--rules", str(rules)
    )
    assert result.returncode == 1
    assert "vee.rules[0].factor" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()
    missing = gwtool(
        "vee", "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv")
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_rules_file_changes_the_verdict(reads: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[vee]\n[[vee.rules]]\nname = "voltage"\nseverity = "fail"\n'
        '[[vee.rules]]\nname = "missing"\nseverity = "info"\n'
    )
    out = tmp_path / "out.csv"
    result = gwtool("vee", "--input", str(reads), "--output", str(out), "--rules", str(rules))
    assert result.returncode == 0, result.stderr
    body = read_rows(out)[1:]
    assert ["b", at(40), "voltage.a", "241.0", "N", "", "28"] in body
    assert {r[6] for r in body if r[4] == "E"} == {""}  # info: estimated, reason not published


def test_file_order_does_not_change_the_verdicts(tmp_path: Path) -> None:
    """Sorted by time or by meter, the same rows get the same flags (streaming either way)."""
    fleet = SyntheticFleet(FleetSpec(meters=6, days=9, seed=7, fault_rate=0.15))
    by_time = tmp_path / "by_time.csv"
    with by_time.open("w", newline="") as handle:
        write_csv(fleet, handle)
    rows: list[list[str]] = read_rows(by_time)
    by_meter = tmp_path / "by_meter.csv"
    with by_meter.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(rows[0])
        by_meter_rows = sorted(rows[1:], key=lambda r: (r[0], r[1]))
        writer.writerows(by_meter_rows)
    outputs = []
    for source in (by_time, by_meter):
        out = tmp_path / (source.stem + ".out.csv")
        result = gwtool("vee", "--input", str(source), "--output", str(out))
        assert result.returncode == 0, result.stderr
        body = read_rows(out)[1:]
        originals = [r for r in body if r[4] not in ("E", "S")]
        assert len(originals) == len(rows) - 1
        assert any(r[4] == "E" for r in body) and any(r[4] == "N" for r in body)
        outputs.append(sorted(map(tuple, body)))
    # the same rows, flags and estimates — only their order follows the input
    assert outputs[0] == outputs[1]
