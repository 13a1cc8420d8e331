"""Wall-clock steps end to end (issue 12 item 7): the daemon as a subprocess under libfaketime,
simulated DL/T 645 meters on real time in this process, a real mosquitto. The test steps the
daemon's wall clock at run time through ``FAKETIME_TIMESTAMP_FILE`` (``FAKETIME_NO_CACHE=1``:
the file is read on every clock call; ``FAKETIME_DONT_FAKE_MONOTONIC=1``: the monotonic clock
keeps running, as it does on a gateway whose RTC or NTP steps). A day forward, then an hour
back: exactly one ``clock.step`` alarm each, no theft alarm, no VEE estimate or VEE alarm."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hil_tests.dlt645_sim import MeterSpec
from hil_tests.load_model import ManualClock
from hil_tests.sim import run_dlt645_line
from tests.broker import MosquittoBroker, Observer
from tests.gateway_rig import REPO, GatewayRig, decoded, reads_by_meter, wait_until, write_config

LIBFAKETIME = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"),
                                Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"),
                                Path("/usr/lib/faketime/libfaketimeMT.so.1")) if p.exists()), None)
POLL_S = 1.0
SETTLE_S = 12.0  # a theft window is 16 polls; most of one passes after each step

pytestmark = pytest.mark.slow


def _start_under_faketime(rig: GatewayRig, offset_file: Path) -> None:
    assert rig.config_path is not None and LIBFAKETIME is not None
    log = open(rig.workdir / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, PYTHONUNBUFFERED="1", LD_PRELOAD=str(LIBFAKETIME),
               FAKETIME_TIMESTAMP_FILE=str(offset_file), FAKETIME_NO_CACHE="1",
               FAKETIME_DONT_FAKE_MONOTONIC="1")
    rig.process = subprocess.Popen(
        [sys.executable, "-m", "gateway.app.cli", "run", "--config", str(rig.config_path)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()


def test_a_day_forward_and_an_hour_back_raise_one_clock_step_each_and_nothing_else(
        tmp_path: Path) -> None:
    if LIBFAKETIME is None:
        print("SKIPPED: libfaketime is not installed (apt-get install faketime)")
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    rig = GatewayRig(tmp_path, broker, ManualClock(0.0))
    addresses = ["000000000101", "000000000102", "000000000103", "000000000104"]
    # Real time on the meters (their registers advance with this process's monotonic clock):
    # ~4-6 kW moves a 0.01 kWh register every ~7 s, so most pairs of polls show it still —
    # what theft.meter_stopped sees as "stopped" when a step makes a day pass between them.
    specs = [MeterSpec(a, base_kw=4.0 + k) for k, a in enumerate(addresses)]
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    with contextlib.ExitStack() as stack:
        stack.callback(broker.kill)
        line = stack.enter_context(run_dlt645_line(specs, baudrate=9600, seed=7,
                                                   clock=time.monotonic))
        write_config(rig, [{"name": "rs485-1", "protocol": "dlt645", "port": line.device,
                            "baudrate": 9600, "parity": "N", "timeout_ms": 200, "retries": 1}],
                     [{"id": f"m-{a[-4:]}", "bus": "rs485-1", "address": a,
                       "profile": "test-dlt645", "poll_interval_s": POLL_S} for a in addresses],
                     "\n[theft]\nevaluate_interval_s = 0.5\n")
        with Observer(broker, "mtr/v1/#", client_id="clock-observer") as observer:
            stack.callback(lambda: rig.process is not None and rig.kill_daemon())
            _start_under_faketime(rig, offset)

            def alarms(prefix: str) -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if str(m.get("kind", "")).startswith(prefix)]

            def steps() -> list[dict[str, Any]]:
                return [a for a in alarms("clock.step") if a["state"] == "raised"]

            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/m-0104"))) >= 3,
                              30), rig.log_text()[-3000:]
            time.sleep(SETTLE_S / 2)  # a window of honest polls before the step
            offset.write_text("+1d\n")
            assert wait_until(lambda: len(steps()) >= 1, 15), rig.log_text()[-3000:]
            time.sleep(SETTLE_S)
            offset.write_text("+23h\n")  # an hour back from a day ahead
            assert wait_until(lambda: len(steps()) >= 2, 15), rig.log_text()[-3000:]
            time.sleep(SETTLE_S)
            log = rig.log_text()
            assert rig.stop_daemon() == 0, log[-3000:]

            raised = steps()
            assert len(raised) == 2, raised
            forward, back = (a["details"] for a in raised)
            assert forward["step_s"] == pytest.approx(86_400, abs=5)
            assert back["step_s"] == pytest.approx(-3_600, abs=5)
            assert forward["after_ms"] - forward["before_ms"] == pytest.approx(86_400_000, abs=5000)
            assert [a for a in alarms("theft.") + alarms("tamper.") + alarms("vee.")
                    if a["state"] == "raised"] == [], "false alarms across a clock step"
            records = [r for messages in reads_by_meter(observer, rig).values()
                       for m in messages for r in m["reads"]]
            assert records, "no reads reached the broker"
            assert [r for r in records if r.get("quality") == "E"] == [], "VEE estimated"
            assert log.count("clock: the wall clock stepped") == 2, log[-3000:]
            # polling went on after each step: reads stamped a day (less an hour) ahead
            latest = max(int(r["t"]) for r in records)
            assert latest > time.time() * 1000 + 22 * 3_600_000
