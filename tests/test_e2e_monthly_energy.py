"""A monthly energy limit (月电控) end to end (issue 17): the daemon as a subprocess whose wall
clock libfaketime puts a minute before the end of a month in the gateway's local time
([load_control] utc_offset_min, +08:00), two DL/T 645 meters on a pty consuming in real time, a
real mosquitto, and a signed ``limit`` command with ``kind = "monthly_energy"``.

The month-to-date energy comes from the validated register reads; it crosses the limit, so the
rounds trip one after the other (alarm first); at local midnight on the 1st the month-to-date
starts again from the register at the boundary, falls under the limit, and every round is
restored — with no test knob in the daemon: only its clock is faked, and it runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hil_tests.dlt645_sim import MeterSpec
from hil_tests.load_model import DEFAULT_START_EPOCH, ManualClock
from hil_tests.sim import run_dlt645_line
from tests.broker import MosquittoBroker, Observer
from tests.gateway_rig import REPO, GatewayRig, decoded, wait_until, write_config
from tests.test_e2e_clock_step import LIBFAKETIME, _start_under_faketime

LOCAL = dt.timezone(dt.timedelta(hours=8))  # the default [load_control] utc_offset_min = 480
BEFORE_BOUNDARY_S = 45

pytestmark = pytest.mark.slow  # it waits for the month to turn: about a minute


def _gwtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _offset_to_month_end(before_s: float) -> int:
    """Seconds to add to the real clock so that it reads ``before_s`` before the next local
    month boundary."""
    now = dt.datetime.now(LOCAL)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    boundary = dt.datetime(year, month, 1, tzinfo=LOCAL).timestamp()
    return round(boundary - before_s - time.time())


def test_monthly_energy_limit_trips_rounds_and_restores_at_the_next_month(
        tmp_path: Path) -> None:
    if LIBFAKETIME is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    rig = GatewayRig(tmp_path, broker, ManualClock(0.0))
    addresses = ["000000000201", "000000000202"]
    ids = [f"m-{a[-4:]}" for a in addresses]
    # Real time on the meters, at their evening peak: ~30 kW each moves the 0.01 kWh register
    # about once a second.
    specs = [MeterSpec(a, base_kw=30.0) for a in addresses]
    offset = _offset_to_month_end(BEFORE_BOUNDARY_S)
    (tmp_path / "faketime").write_text(f"+{offset}\n")
    with contextlib.ExitStack() as stack:
        stack.callback(broker.kill)
        line = stack.enter_context(run_dlt645_line(
            specs, baudrate=9600, seed=3, clock=time.monotonic,
            start_epoch=DEFAULT_START_EPOCH + 19 * 3600))
        members = ", ".join(f'{{ meter = "{m}" }}' for m in ids)
        assert _gwtool("keygen", "--out", str(tmp_path / "op1")).returncode == 0
        write_config(rig, [{"name": "rs485-1", "protocol": "dlt645", "port": line.device,
                            "baudrate": 9600, "parity": "N", "timeout_ms": 200, "retries": 1}],
                     [{"id": m, "bus": "rs485-1", "address": a, "profile": "test-dlt645",
                       "poll_interval_s": 1.0, "customer": f"C-{m}"}
                      for m, a in zip(ids, addresses, strict=True)],
                     f"""
[theft]
enabled = false

[commands]
clock_trusted = true

[[operators]]
kid = "op-1"
public_key = "{tmp_path / 'op1.pub'}"
roles = ["OPERATOR"]

[[groups]]
id = "g1"
members = [{members}]

[load_control]
alarm_delay_s = 1
power_up_protect_s = 0
restore_delay_min_s = 0
restore_delay_max_s = 1

[load_control.groups.g1]
rounds = [["{ids[0]}"], ["{ids[1]}"]]
""")
        with Observer(broker, "mtr/v1/#", client_id="monthly-observer") as observer:
            stack.callback(lambda: rig.process is not None and rig.kill_daemon())
            _start_under_faketime(rig, tmp_path / "faketime")

            def alarms(kind: str, state: str) -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if m.get("kind") == kind and m.get("state") == state]

            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 4, 20), \
                rig.log_text()[-3000:]
            signed = _gwtool("sign-command", "--key", str(tmp_path / "op1.key"), "--kid", "op-1",
                             "--aud", rig.gateway_id, "--out", str(tmp_path / "limit.cose"),
                             "--action", "limit", "--targets", "group:g1", "--ctr", "1",
                             "--iat", str(int(time.time()) + offset), "--params",
                             '{"kind": "monthly_energy", "limit_kwh": 0.05, "alarm_pct": 50}')
            assert signed.returncode == 0, signed.stderr
            sent = _gwtool("send-command", str(tmp_path / "limit.cose"), "--port",
                           str(broker.port), "--gateway", rig.gateway_id, "--timeout", "20")
            assert sent.returncode == 0 and "executed" in sent.stdout, sent.stdout + sent.stderr

            # Over the limit before the month ends: round 1, then round 2, each after an alarm.
            assert wait_until(lambda: all(line.meters[a].sim.sample().status.relay_open
                                          for a in addresses), 30), rig.log_text()[-3000:]
            tripped = alarms("customer.trip", "raised")
            assert [a["meter"] for a in tripped] == ids, tripped
            assert all(_local(a["ts"]).day != 1 for a in tripped), tripped
            assert alarms("group.energy_alarm", "raised"), "no energy alarm before the trips"
            pre = alarms("customer.pre_trip", "raised")
            assert pre and pre[0]["ts"] <= tripped[0]["ts"]

            # The month turns (local midnight on the 1st): both rounds restored, last first.
            assert wait_until(lambda: len(alarms("customer.trip", "cleared")) >= 2,
                              BEFORE_BOUNDARY_S + 30), rig.log_text()[-3000:]
            restored = alarms("customer.trip", "cleared")[:2]
            assert [a["meter"] for a in restored] == ids[::-1], restored
            assert all(_local(a["ts"]).day == 1 for a in restored), restored
            assert all(a["details"]["customer"] == f"C-{a['meter']}" for a in restored)
            assert rig.stop_daemon() == 0, rig.log_text()[-3000:]


def _local(ts_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ms / 1000, LOCAL)

