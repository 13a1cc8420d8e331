"""VEE end to end (issue 4): the real daemon, real mosquitto, simulated DL/T 645 meters on ptys.

The grid is compressed (``[vee] interval_seconds = 2``: the same code path as 15 minutes, a day
passes in 192 s) and the store starts with four weeks of history, written by the same
:class:`gateway.pipeline.vee_stage.VeeStage` the daemon restores it with — a gateway that has been running
for a month. One meter goes silent: its missing intervals are published as estimates; when it
answers again, the estimates are superseded under the same (meter, q, t).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_rules.codes import Method, Reason
from gateway.config import load_config
from gateway.pipeline.vee_stage import GRID_QUANTITY, VeeStage, vee_settings
from gateway.store import Store
from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, reads_by_meter, wait_until

VEE = """
[vee]
interval_seconds = 2
kernels = "numpy"

[vee.estimation]
snap_seconds = 450          # grid time: half an interval, 1 s on this 2 s grid
"""
LIKE_DAYS = 28
SIM_SECONDS_PER_SECOND = 300.0  # the meters' load model runs 300x: registers move every interval


def _seed_history(config_path: Path, store_path: Path, interval_kwh: float) -> None:
    config = load_config(config_path)
    meters = [m.id for m in config.meters]
    with Store.open(store_path) as store:
        stage = VeeStage(vee_settings(config), meters, time.time_ns() // 1_000_000, store)
        rows = np.arange(len(meters), dtype=np.int64)
        today = stage.grid.anchor_interval // 96
        for day in range(today - LIKE_DAYS - 1, today - 1):
            intervals = np.full((len(meters), 96), interval_kwh)
            daily = np.full((len(meters), 5), np.nan)
            daily[:, 0] = intervals.sum(axis=1)
            stage.engine.hist.put_day(rows, day, daily, np.zeros(len(meters), bool), intervals,
                                      np.zeros((len(meters), 96), bool))
        stage.save()


def _records(observer: Observer, rig: Any, meter: str) -> list[tuple[int, dict[str, Any]]]:
    """(seq, record) of every read record of ``meter`` that reached the broker."""
    out = []
    for message in reads_by_meter(observer, rig).get(meter, []):
        out += [(message["seq"], record) for record in message["reads"]]
    return out


# The same scenario as tests/test_e2e_vee_corrections.py's default test, which runs the same
# checks (check_estimated_then_superseded) and more: `make slow` (three meters, no corrections).
@pytest.mark.slow
def test_silent_meter_is_estimated_and_its_estimates_are_superseded(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0, timeout_ms=200) as rig:
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + VEE)
        _seed_history(rig.config_path, rig.store_path, interval_kwh=0.15)
        running = threading.Event()
        running.set()

        def advance() -> None:  # consumption: the meters' registers rise between intervals
            while running.is_set():
                rig.clock.advance(0.05 * SIM_SECONDS_PER_SECOND)
                time.sleep(0.05)

        ticker = threading.Thread(target=advance, daemon=True)
        ticker.start()
        line = rig.lines["rs485-1"]
        silent = sorted(line.meters)[1]
        silent_id = f"m-{silent[-4:]}"
        try:
            with Observer(rig.broker, "mtr/v1/#", client_id="e2e-vee") as observer:
                rig.start_daemon()
                assert wait_until(lambda: set(reads_by_meter(observer, rig)) >= set(rig.meters),
                                  20), rig.log_text()[-3000:]
                time.sleep(3)
                line.set_faults(silent, no_reply=True)
                silenced_ms = time.time_ns() // 1_000_000

                def estimates() -> list[dict[str, Any]]:
                    return [r for _, r in _records(observer, rig, silent_id)
                            if r["quality"] == "E" and r["t"] > silenced_ms]

                assert wait_until(lambda: len(estimates()) >= 4, 20), rig.log_text()[-3000:]
                line.set_faults(silent)  # answers again
                answered_ms = time.time_ns() // 1_000_000
                first = {r["t"]: r for r in estimates() if r.get("rev", 0) == 0}

                def superseded() -> bool:
                    later = [r for _, r in _records(observer, rig, silent_id)
                             if r["q"] == GRID_QUANTITY and r.get("rev", 0) >= 1]
                    return {r["t"] for r in later} >= set(first)

                assert wait_until(superseded, 25), rig.log_text()[-3000:]
                time.sleep(1)
                assert rig.stop_daemon() == 0
        finally:
            running.clear()
            ticker.join(2)
        check_estimated_then_superseded(observer, rig, silent_id, first, silenced_ms, answered_ms)


def check_estimated_then_superseded(observer: Observer, rig: Any, silent_id: str,
                                    first: dict[int, dict[str, Any]], silenced_ms: int,
                                    answered_ms: int) -> None:
    """What the consumer and the store show after a meter went silent at ``silenced_ms`` and
    answered again at ``answered_ms``; ``first``: its estimates published by then (rev 0), by t.
    Shared with tests/test_e2e_vee_corrections.py, whose default test runs the same scenario."""
    log = rig.log_text()
    assert (f"VEE: {len(rig.meters)} meters, NumPy kernels, 2 s intervals, history restored"
            in log), log[:3000]
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]

    # 1. every read record on MQTT carries its VEE flags
    everything = [r for _, m in decoded(observer, rig.topic("reads/")) for r in m["reads"]]
    assert everything and all(r["quality"] in ("A", "E", "S", "F", "N") for r in everything)
    assert all("method" in r for r in everything if r["quality"] in ("E", "S"))

    # 2. the silent meter's missing intervals were estimated from its like days, at the
    #    interval boundaries, as exact decimals with the communications-fault reason
    assert len(first) >= 4
    for t, record in first.items():
        assert record["method"] in (Method.AVERAGE_LIKE_DAY, Method.LIKE_DAY), record
        assert Reason.COMMUNICATIONS_FAULT in record["reasons"]
        assert isinstance(record["val"], Decimal) and silenced_ms - 2000 < t < answered_ms + 3000

    # 3. once it answered, every estimate was superseded under the same (meter, q, t): the
    #    newest revision is bracketed by the actual reads around the gap
    records = _records(observer, rig, silent_id)
    actual = sorted((r["t"], r["val"]) for _, r in records
                    if r["q"] == GRID_QUANTITY and r["quality"] == "A")
    for t, estimate in first.items():
        revisions = sorted((r.get("rev", 0), seq, r) for seq, r in records
                           if r["q"] == GRID_QUANTITY and r["t"] == t)
        rev, _, newest = revisions[-1]
        assert rev >= 1 and [x[0] for x in revisions] == list(range(rev + 1)), revisions
        before = max(v for at, v in actual if at < t)
        after = min(v for at, v in actual if at > t)
        assert before <= newest["val"] <= after, (estimate, newest, before, after)
        assert newest["quality"] == "A" or newest["method"] in (
            Method.LINEAR, Method.DATA_SCALING, Method.AVERAGE_LIKE_DAY, Method.LIKE_DAY)

    # 4. the history and the open window were saved for the next start
    con = sqlite3.connect(rig.store_path)
    saved = con.execute("SELECT saved_ms, length(data) FROM vee_state WHERE name = 'engine'"
                        ).fetchone()
    con.close()
    assert saved is not None and saved[0] > answered_ms and saved[1] > 10_000
