"""``gwtool time-sync`` against simulated meters on a real pty: a meter 10 minutes fast is set
by a broadcast (08H) and by an addressed write (14H), and the residual read back shows it; a
wrong password and a missing target are one line and exit 1."""

from __future__ import annotations

import json
import time

from hil_tests.dlt645_sim import MeterSpec
from hil_tests.sim import run_dlt645_line
from tests.test_gwtool import gwtool

A1, A2 = "000000000021", "000000000022"


def _line(offset_s: float):  # type: ignore[no-untyped-def]
    # The meters' true time is this machine's clock (their zone is UTC+8, gwtool's default).
    return run_dlt645_line([MeterSpec(A1, clock_offset_s=offset_s),
                            MeterSpec(A2, clock_offset_s=-offset_s)], baudrate=9600,
                           start_epoch=time.time(), clock=time.monotonic)


def test_broadcast_sets_every_meter_and_reads_back_the_residual() -> None:
    with _line(600.0) as rig:
        done = gwtool("time-sync", "--port", rig.device, "--baud", "9600", "--parity", "N", "--broadcast",
                      "--address", A1, "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert abs(result["before_s"] - 600) <= 2, result
        assert abs(result["after_s"]) <= 2, result
        assert result["method"] == "broadcast"
        # the other meter on the line took the broadcast too
        assert rig.meters[A2].clock_syncs == 1
        assert abs(rig.meters[A2].offset_at(rig.model.now())) <= 2


def test_addressed_write_sets_one_meter_with_its_password() -> None:
    with _line(-600.0) as rig:
        done = gwtool("time-sync", "--port", rig.device, "--baud", "9600", "--parity", "N", "--address", A1)
        assert done.returncode == 0, done.stderr
        words = done.stdout.split()
        assert words[:3] == ["meter", f"{A1}:", "clock"], done.stdout
        assert abs(float(words[3]) + 600) <= 2 and abs(float(words[6])) <= 2, done.stdout
        assert done.stdout.rstrip().endswith("(write 14H)"), done.stdout
        assert rig.meters[A1].clock_syncs == 2  # date, then time
        assert abs(rig.meters[A1].offset_at(rig.model.now())) <= 2
        assert rig.meters[A2].clock_syncs == 0  # the other meter kept its clock
        refused = gwtool("time-sync", "--port", rig.device, "--baud", "9600", "--parity", "N", "--address", A2,
                         "--password", "123456")
        assert refused.returncode == 1
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "password" in lines[0], refused.stderr


def test_nothing_to_set_is_one_line() -> None:
    done = gwtool("time-sync", "--port", "/dev/null")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "gwtool: give --address A (write that meter's clock) or --broadcast (08H to every meter "
        "on the line)"]
