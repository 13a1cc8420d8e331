"""``edge-central status`` and ``outages`` on a database filled through the real ingest path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from central.cli import main
from central.storage import open_database
from central.storage.gaps import scan_gaps
from central.storage.ingest import ingest
from tests.central.support import EPOCH, alarm_msg, birth_msg, reads_msg, register


def test_status_and_outage_feed_as_json_lines(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    db = open_database(url)
    ingest(db, [birth_msg("gw-1", 0), reads_msg("gw-1", 1, "m-1", [register(900_000, "1")]),
                alarm_msg("gw-1", 2, "outage.phase", ts=7_000),
                alarm_msg("gw-1", 3, "outage.phase", "cleared", ts=9_000),
                alarm_msg("gw-1", 5, "comm.bus", ts=9_500),
                reads_msg("gw-2", 1, "m-1", [register(900_000, "1")])], 20_000)
    db.close()
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    assert main(["status", "--config", str(config)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(s["gw"], s["last_seq"], s["open_gaps"]) for s in lines] == [("gw-1", 5, 0),
                                                                          ("gw-2", 1, 0)]
    assert lines[0]["last_birth_ms"] == 20_000 and lines[1]["last_birth_ms"] is None
    assert main(["outages", "--config", str(config), "--since", "1970-01-01T00:00:08Z"]) == 0
    feed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(f["kind"], f["state"], f["ts_ms"]) for f in feed] == [
        ("outage.phase", "cleared", 9_000), ("comm.bus", "raised", 9_500)]
    assert main(["outages", "--config", str(config), "--since", "1970-01-01T00:00:08+01:00"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # an offset is honoured


def test_status_detail_and_watch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--detail`` adds values per meter, gaps and alarm events (what the demo's view shows);
    ``--watch`` repeats the lines until SIGTERM, then exits 0 without a word on stderr."""
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    db = open_database(url)
    ingest(db, [birth_msg("gw-1", 0),
                reads_msg("gw-1", 1, "m-1", [register(900_000, "1"), register(1_800_000, "2")]),
                reads_msg("gw-1", 2, "m-2", [register(900_000, "5")]),
                alarm_msg("gw-1", 3, "meter.cover_open", ts=7_000, meter="m-2"),
                alarm_msg("gw-1", 5, "comm.bus", ts=9_500)], 20_000)
    assert scan_gaps(db, 60_000, 1_000) == [("gw-1", EPOCH, 4, 4)]  # seq 4 never came
    db.close()
    config = tmp_path / "central.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    assert main(["status", "--config", str(config), "--detail"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["values_by_meter"] == {"m-1": 2, "m-2": 1} and line["values_stored"] == 3
    assert [(g["from_seq"], g["to_seq"], g["filled_ms"]) for g in line["gaps"]] == [(4, 4, None)]
    assert line["open_gaps"] == 1 and line["alarms_total"] == 2
    assert [(a["kind"], a["meter"], a["state"]) for a in line["alarms"]] == [
        ("comm.bus", None, "raised"), ("meter.cover_open", "m-2", "raised")]  # newest first
    assert main(["status", "--config", str(config), "--watch", "0"]) == 2

    watcher = subprocess.Popen([sys.executable, "-m", "central.cli", "status", "--config",
                                str(config), "--detail", "--watch", "0.2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        lines = [json.loads(watcher.stdout.readline()) for _ in range(2)]
        assert lines[1]["now_ms"] > lines[0]["now_ms"] and lines[1]["values_stored"] == 3
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0 and err == ""
