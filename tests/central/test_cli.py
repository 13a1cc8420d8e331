"""``edge-central status`` and ``outages`` on a database filled through the real ingest path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from central.cli import main
from central.storage import open_database
from central.storage.ingest import ingest
from tests.central.support import alarm_msg, birth_msg, reads_msg, register


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
