"""Backfill end to end (issue 4): a silent meter's estimates are superseded by its own records.

The real daemon, real mosquitto, simulated DL/T 645-2007 meters on a pty. The VEE grid is
compressed (``interval_seconds = 2``: 15 minutes of grid time every 2 s) and the meters' load
model is driven so that *its* clock is grid time — the simulated meters then store a load record
at every grid boundary, as a real meter does every 15 minutes of its real clock. One meter goes
silent across several boundaries (a comm fault: it keeps measuring and recording), gets ``E``
records, answers again, and the gateway reads the missing intervals back from its load records:
the same (meter, q, t) keys arrive with quality ``A``, a higher ``rev``, ``hist: true`` and exactly
the register the simulated meter stored at each boundary.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from edge_rules.codes import Reason
from gateway.acquisition.backfill import LOCAL_EPOCH, boundary_local
from gateway.config import load_config
from gateway.pipeline.vee_stage import GRID_QUANTITY, Grid, VeeStage, vee_settings
from gateway.store import Store
from hil_tests.load_model import LoadModel
from tests.broker import Observer
from tests.gateway_rig import TEST_PROFILE, gateway_rig, reads_by_meter, wait_until

VEE = """
[vee]
interval_seconds = 2
kernels = "numpy"

[vee.estimation]
snap_seconds = 450          # grid time: half an interval, 1 s on this 2 s grid

[vee.backfill]
max_records = 3             # several transactions for one gap: the bound is exercised
"""
PROFILE = TEST_PROFILE.replace('description = "test profile: energy block, voltages, power"\n',
                               'description = "test profile with load records"\n'
                               "load_records = true\n")
LIKE_DAYS = 28
UTC_OFFSET_S = 8 * 3600  # the load model's and [vee]'s default local time (UTC+8)


def _seed_history(config_path: Path, store_path: Path, interval_kwh: float) -> Grid:
    """Four weeks of history in the store, as a gateway that has been running; returns the grid
    the daemon will restore with it (so the test knows which wall time is which boundary)."""
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
        return stage.grid


def _sim_epoch(grid: Grid, wall_ms: float) -> float:
    """The simulated UTC time whose local (UTC+8) clock shows grid time at ``wall_ms``."""
    grid_local_s = (grid.anchor_interval + (wall_ms - grid.anchor_ms) / grid.interval_ms) * 900
    return grid_local_s - UTC_OFFSET_S


def _interval_of(grid: Grid, t_ms: int) -> int:
    """The grid interval whose boundary record is published at ``t_ms``."""
    return grid.anchor_interval + (t_ms - grid.anchor_ms) // grid.interval_ms - 1


def test_silent_meter_estimates_are_superseded_by_its_load_records(tmp_path: Path) -> None:
    # Simulated time starts two grid days back; the ticker below brings it to grid time.
    start = time.time() - 2 * 86_400
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0, timeout_ms=200, start_epoch=start) as rig:
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + VEE)
        (rig.workdir / "profiles" / "test-dlt645.toml").write_text(PROFILE)
        grid = _seed_history(rig.config_path, rig.store_path, interval_kwh=0.15)
        line = rig.lines["rs485-1"]
        model: LoadModel = line.model
        running = threading.Event()
        running.set()

        def follow_grid_time() -> None:
            while running.is_set():
                behind = _sim_epoch(grid, time.time_ns() / 1e6) - model.now()
                if behind > 0:
                    rig.clock.advance(behind)
                time.sleep(0.02)

        ticker = threading.Thread(target=follow_grid_time, daemon=True)
        ticker.start()
        silent = sorted(line.meters)[1]
        silent_id = f"m-{silent[-4:]}"

        def records() -> list[dict[str, Any]]:
            return [r for m in reads_by_meter(observer, rig).get(silent_id, [])
                    for r in m["reads"] if r["q"] == GRID_QUANTITY]

        try:
            with Observer(rig.broker, "mtr/v1/#", client_id="e2e-backfill") as observer:
                rig.start_daemon()
                assert wait_until(lambda: set(reads_by_meter(observer, rig)) >= set(rig.meters),
                                  20), rig.log_text()[-3000:]
                time.sleep(2)
                line.set_faults(silent, no_reply=True)
                silenced_ms = time.time_ns() // 1_000_000

                def estimates() -> dict[int, dict[str, Any]]:
                    return {r["t"]: r for r in records()
                            if r["quality"] == "E" and r["t"] > silenced_ms}

                assert wait_until(lambda: len(estimates()) >= 3, 20), rig.log_text()[-3000:]
                line.set_faults(silent)  # answers again
                estimated = estimates()

                def superseded() -> bool:
                    actual = {r["t"] for r in records() if r["quality"] == "A" and r.get("hist")}
                    return actual >= set(estimated)

                assert wait_until(superseded, 30), rig.log_text()[-3000:]
                assert rig.stop_daemon() == 0
        finally:
            running.clear()
            ticker.join(2)
        log = rig.log_text()
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]

        # 1. the silent stretch was estimated: E with a method code and the comm-fault reason
        assert len(estimated) >= 3
        for record in estimated.values():
            assert isinstance(record.get("method"), int), record
            assert Reason.COMMUNICATIONS_FAULT in record["reasons"], record

        # 2. each estimate was superseded under the same (meter, q, t) by the meter's own record:
        #    quality A, a higher rev, hist, and exactly the register stored at that boundary
        sim_meter = line.meters[silent].sim
        stored = {round(e.at): e.import_ for e in sim_meter.load_records(0, 10_000)}
        everything = records()
        for t, estimate in estimated.items():
            revisions = sorted((r.get("rev", 0), i, r) for i, r in enumerate(everything)
                               if r["t"] == t)
            newest = revisions[-1][2]
            assert newest["quality"] == "A" and newest.get("hist") is True, revisions
            assert newest["rev"] > estimate.get("rev", 0), revisions
            assert "method" not in newest, newest
            boundary = boundary_local(_interval_of(grid, t))
            at = round((boundary - LOCAL_EPOCH).total_seconds()) - UTC_OFFSET_S
            assert isinstance(newest["val"], Decimal) and newest["val"] == stored[at], (
                t, newest, stored.get(at))
