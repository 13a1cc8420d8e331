"""The daemon end to end: real mosquitto, real ptys, the daemon as a real subprocess (issue 3)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.broker import Observer
from tests.gateway_rig import (
    GatewayRig,
    decoded,
    gateway_rig,
    reads_by_meter,
    simulator_registers,
    wait_until,
)


def test_every_meter_is_published_with_the_simulators_exact_registers(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=2, meters_per_bus=8, modbus_meters=2) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="e2e-observer") as observer:
            rig.start_daemon()
            ok = wait_until(lambda: set(reads_by_meter(observer, rig)) >= set(rig.meters), 40)
            by_meter = reads_by_meter(observer, rig)
            assert ok, f"missing reads from {sorted(set(rig.meters) - set(by_meter))}\n{rig.log_text()[-3000:]}"
            assert rig.stop_daemon() == 0
        for meter_id, ref in rig.meters.items():
            expected = simulator_registers(ref)
            message = by_meter[meter_id][-1]
            published = {r["q"]: r for r in message["reads"]}
            assert published["energy.active.import.total"]["quality"] == "A"
            value = published["energy.active.import.total"]["val"]
            assert isinstance(value, Decimal), "register values travel as decimal fractions"
            if meter_id.startswith("m-"):
                for q in ("energy.active.import.total", "energy.active.import.t1",
                          "energy.active.import.t4", "voltage.a", "power.active.total"):
                    assert published[q]["val"] == expected[q], (meter_id, q)
            else:  # Modbus float32 registers: exact after the profile's resolution
                assert value == expected["energy.active.import.total"]
        log = rig.log_text()
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def _read_times(observer: Observer, rig: GatewayRig, meter_id: str, since_ms: int) -> list[int]:
    return sorted(m["reads"][0]["t"] for m in reads_by_meter(observer, rig).get(meter_id, [])
                  if m["reads"][0]["t"] >= since_ms)


# About 35 s of watching polls: `make slow`. The default run guards its parts with
# tests/test_e2e_meter_outage.py (a muted meter's comm_loss raised, then cleared, over MQTT)
# and tests/test_schedule.py::test_failing_meter_backs_off_and_returns_when_it_answers.
@pytest.mark.slow
def test_silent_meter_raises_comm_loss_and_clears_without_slowing_the_others(tmp_path: Path) -> None:
    interval = 2.0
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=4, modbus_meters=0,
                     poll_interval_s=interval, timeout_ms=200) as rig:
        line = rig.lines["rs485-1"]
        silent = sorted(line.meters)[0]
        silent_id = f"m-{silent[-4:]}"
        with Observer(rig.broker, "mtr/v1/#", client_id="e2e-observer2") as observer:
            rig.start_daemon()
            assert wait_until(lambda: set(reads_by_meter(observer, rig)) >= set(rig.meters), 30)
            line.set_faults(silent, no_reply=True)

            def alarm(state: str) -> bool:
                return any(m.get("kind") == "comm_loss" and m.get("state") == state
                           and m.get("meter") == silent_id
                           for _t, m in decoded(observer, rig.topic("alarms")))

            assert wait_until(lambda: alarm("raised"), 20), rig.log_text()[-2000:]
            since = time.time_ns() // 1_000_000
            time.sleep(12)
            for meter_id in rig.meters:
                if meter_id == silent_id:
                    continue
                times = _read_times(observer, rig, meter_id, since)
                gaps = [b - a for a, b in itertools.pairwise(times)]
                # The others keep their 2 s rate: on average exactly one poll per slot. A silent
                # neighbour polled before them shifts a reply by its timeout share (2 attempts of
                # 200 ms + wire time), never more, and is then backed off.
                mean_gap = sum(gaps) / len(gaps)
                assert len(times) >= 5 and mean_gap <= interval * 1000 * 1.05, (meter_id, gaps)
                assert max(gaps) <= interval * 1000 + 2 * (200 + 120), (meter_id, gaps)
            line.set_faults(silent)  # healthy again
            assert wait_until(lambda: alarm("cleared"), 40), rig.log_text()[-2000:]
            assert rig.stop_daemon() == 0


def test_store_rows_all_reach_the_broker_after_a_clean_stop(tmp_path: Path) -> None:
    """Outbox invariant: after a clean stop, every committed row has been acknowledged."""
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="e2e-observer3"):
            rig.start_daemon()
            assert wait_until(lambda: rig.store_path.exists(), 10)
            time.sleep(6)
            assert rig.stop_daemon() == 0
        con = sqlite3.connect(rig.store_path)
        unacked = con.execute("SELECT count(*) FROM outbox WHERE acked_ms IS NULL").fetchone()[0]
        total = con.execute("SELECT count(*) FROM outbox").fetchone()[0]
        con.close()
        assert total > 0 and unacked == 0


def test_group_totals_are_published_from_member_power(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        assert rig.config_path is not None
        ids = sorted(rig.meters)
        rig.config_path.write_text(rig.config_path.read_text().replace(
            f'id = "{ids[2]}"', f'id = "{ids[2]}"\nct_ratio = 40') + f"""
[[groups]]
id = "g-all"
members = [{{ meter = "{ids[0]}" }}, {{ meter = "{ids[1]}" }}, {{ meter = "{ids[2]}", sign = "-" }}]
""")
        with Observer(rig.broker, "mtr/v1/#", client_id="groups-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("groups/g-all"))) >= 1, 30), \
                rig.log_text()[-2000:]
            # A 3-meter gateway runs the group kernels through their NumPy twins: numba (53 MiB)
            # must not be in its memory even after group totals were computed.
            assert rig.process is not None
            maps = Path(f"/proc/{rig.process.pid}/maps").read_text()
            assert "llvmlite" not in maps and "/numba/" not in maps, "a small gateway loaded numba"
            assert rig.stop_daemon() == 0
        message = decoded(observer, rig.topic("groups/g-all"))[-1][1]
        total = message["totals"][0]
        power = {m: simulator_registers(rig.meters[m])["power.active.total"] for m in ids}
        expected = float(power[ids[0]]) + float(power[ids[1]]) - 40 * float(power[ids[2]])
        assert total["q"] == "power.active.total" and total["quality"] == "A"
        assert total["coverage"] == 1.0
        assert abs(total["val"] - expected) < 1e-9


def test_cover_open_event_raises_an_alarm_within_one_poll_cycle(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=2.0) as rig:
        assert rig.config_path is not None
        (tmp_path / "profiles" / "test-dlt645.toml").write_text(
            (tmp_path / "profiles" / "test-dlt645.toml").read_text()
            + '\n[[reads]]\ndi = "04000507"\n\n[[reads]]\ndi = "04000504"\n')
        line = rig.lines["rs485-1"]
        address = sorted(line.meters)[1]
        meter_id = f"m-{address[-4:]}"
        with Observer(rig.broker, "mtr/v1/#", client_id="cover-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 2, 30)

            def alarm(kind: str) -> bool:
                return any(m.get("kind") == kind and m.get("meter") == meter_id
                           and m.get("state") == "raised"
                           for _t, m in decoded(observer, rig.topic("alarms")))

            t0 = time.monotonic()
            line.meters[address].open_cover()
            assert wait_until(lambda: alarm("meter.cover_open"), 10), rig.log_text()[-2000:]
            assert time.monotonic() - t0 <= 2.0 * 2 + 1  # within one poll cycle (+ the poll itself)
            line.meters[address].set_loss_of_voltage("a", True)
            assert wait_until(lambda: alarm("meter.voltage_loss"), 10), rig.log_text()[-2000:]
            assert rig.stop_daemon() == 0
