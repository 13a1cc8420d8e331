"""The real daemon on a data filesystem that fails (issue 12): an ext4 that goes read-only after
an error, a tmpfs that fills up. Alarms reach MQTT without the store, health says so, and nothing
committed or polled is lost — across a restart (spill) or without one (1 MB freed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Observer
from tests.fs_faults import ext4, tmpfs
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until


def configure(rig: GatewayRig, **store: object) -> None:
    assert rig.config_path is not None
    lines = ["", "[store]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in store.items()]
    rig.config_path.write_text(rig.config_path.read_text() + "\n".join(lines) + "\n")


def alarms(observer: Observer, rig: GatewayRig, kind: str) -> list[dict[str, Any]]:
    return [m for _, m in decoded(observer, rig.topic("alarms")) if m.get("kind") == kind]


def failing_health(observer: Observer, rig: GatewayRig) -> list[dict[str, Any]]:
    return [m["stats"]["store"] for _, m in decoded(observer, rig.topic("health"))
            if m["stats"].get("store", {}).get("state") == "failing"]


def durable_seqs(observer: Observer, rig: GatewayRig) -> set[int]:
    """Seqs of the durable messages received (ephemeral ids have more ':'-separated parts)."""
    return {m["seq"] for _, m in decoded(observer, rig.topic("")) if m["id"].count(":") == 2}


def read_times(observer: Observer, rig: GatewayRig) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for _, m in decoded(observer, rig.topic("reads/")):
        out.setdefault(m["meter"], set()).update(r["t"] for r in m["reads"])
    return out


def test_a_data_filesystem_gone_read_only_alarms_at_once_and_loses_nothing(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=1.0) as rig, ext4(tmp_path, rig.workdir / "var") as fs:
        configure(rig, spill_dir=str(tmp_path / "spill"), disk_alarm_free_mb=1,
                  disk_check_interval_s=1)
        with Observer(rig.broker, "mtr/v1/#", client_id="ro-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(read_times(observer, rig)) == 2, 30), rig.log_text()
            fs.fail()
            failed_at = time.monotonic()
            assert wait_until(lambda: alarms(observer, rig, "store.failed"), 10), \
                rig.log_text()[-3000:]
            assert time.monotonic() - failed_at <= 10
            raised = alarms(observer, rig, "store.failed")[0]
            assert raised["state"] == "raised" and ":alarm:" in raised["id"]  # outside the store
            assert "read-only" in raised["details"]["hint"]
            assert wait_until(lambda: failing_health(observer, rig), 10)
            time.sleep(3)  # polls go on into the memory hold
            polled_while_failed = time.time_ns() // 1_000_000
            assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
            assert "spilled to" in rig.log_text() and "LOST" not in rig.log_text()
            fs.repair()
            rig.start_daemon()
            assert wait_until(lambda: [a for a in alarms(observer, rig, "store.failed")
                                       if a["state"] == "cleared"], 30), rig.log_text()[-3000:]
            # Everything held while read-only arrived: reads polled up to the stop, and the
            # durable seqs have no gap.
            assert wait_until(lambda: all(
                max(times) >= polled_while_failed - 1500
                for times in read_times(observer, rig).values()), 30)
            seqs = durable_seqs(observer, rig)
            assert seqs == set(range(1, max(seqs) + 1))
            assert rig.stop_daemon() == 0


def test_a_stop_with_messages_held_and_no_spill_location_says_so_and_exits_1(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=1.0) as rig, ext4(tmp_path, rig.workdir / "var") as fs:
        configure(rig, disk_alarm_free_mb=1)
        with Observer(rig.broker, "mtr/v1/#", client_id="nospill-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(read_times(observer, rig)) == 2, 30), rig.log_text()
            fs.fail()
            assert wait_until(lambda: alarms(observer, rig, "store.failed"), 10)
            time.sleep(2)
            assert rig.stop_daemon() == 1
        text = rig.log_text()
        assert "are LOST with this stop" in text and "no [store] spill_dir" in text
        assert "stopped cleanly" not in text


@pytest.mark.slow
def test_a_full_disk_alarms_and_recovers_without_a_restart_once_1_mb_is_freed(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0) as rig, tmpfs(rig.workdir / "var", "6m") as fs:
        # No ballast here: the reserve would buy the store minutes on this small disk (that is
        # its job, shown in test_store_faults.py); this test is about what happens after.
        configure(rig, disk_alarm_free_mb=2, ballast_mb=0, disk_check_interval_s=1)
        with Observer(rig.broker, "mtr/v1/#", client_id="full-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(read_times(observer, rig)) == 3, 30), rig.log_text()
            filler = fs.fill()
            assert wait_until(lambda: alarms(observer, rig, "disk.low"), 10)
            assert wait_until(lambda: alarms(observer, rig, "disk.full"), 60), \
                rig.log_text()[-3000:]
            time.sleep(3)
            fs.free(filler, 1 << 20)
            fs.free(filler, 4 << 20)  # and below the disk.low threshold again
            assert wait_until(lambda: [a for a in alarms(observer, rig, "disk.full")
                                       if a["state"] == "cleared"], 30), rig.log_text()[-3000:]
            t_free = time.time_ns() // 1_000_000
            assert wait_until(lambda: all(max(times) > t_free
                                          for times in read_times(observer, rig).values()), 20)
            seqs = durable_seqs(observer, rig)
            assert seqs == set(range(1, max(seqs) + 1))
            assert rig.stop_daemon() == 0


@pytest.mark.slow
def test_disk_full_with_the_broker_down_then_a_stop_spills_and_the_next_start_delivers(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=1.0) as rig, tmpfs(rig.workdir / "var", "6m") as fs:
        configure(rig, spill_dir=str(tmp_path / "spill"), disk_alarm_free_mb=1, ballast_mb=0)
        with Observer(rig.broker, "mtr/v1/#", client_id="spill-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(read_times(observer, rig)) == 2, 30), rig.log_text()
            observer.stop()
            rig.broker.stop()
            filler = fs.fill()
            assert wait_until(lambda: "cannot be written" in rig.log_text(), 30)
            time.sleep(3)
            stopped_ms = time.time_ns() // 1_000_000
            assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
            assert "spilled to" in rig.log_text()
            fs.free(filler, 2 << 20)
            rig.broker.start()
        with Observer(rig.broker, "mtr/v1/#", client_id="spill-observer-2") as observer:
            rig.start_daemon()
            assert wait_until(lambda: all(max(times) >= stopped_ms - 1500
                                          for times in read_times(observer, rig).values())
                              and len(read_times(observer, rig)) == 2, 40), \
                rig.log_text()[-3000:]
            assert "adopted" in rig.log_text()
            assert rig.stop_daemon() == 0
