"""A planned outage end to end (issue 14): the real daemon, simulated DL/T 645 meters on a pty, a
real mosquitto. An ENGINEER signs ``planned_outage`` for the area with ``gwtool sign-command``
and sends it with ``gwtool send-command``; the test then plays the UPS HAT (the power-fail input
file, as tests/test_e2e_outage.py): the ``outage.area`` alarm says ``planned: true``. After the
window is cancelled (the same action with ``params.cancel``), the next cut says false.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.broker import Observer
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until, write_config

REPO = Path(__file__).resolve().parent.parent


def gwtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _plan(rig: GatewayRig, key: Path, out: Path, ctr: int, params: dict[str, object]) -> str:
    """Sign and send a planned_outage for area tq-1; returns the command id (hex) once the
    gateway answered ``executed``."""
    signed = gwtool("sign-command", "--key", str(key), "--kid", "eng-1", "--aud",
                    rig.gateway_id, "--role", "ENGINEER", "--action", "planned_outage",
                    "--targets", "group:tq-1", "--params", json.dumps(params), "--ctr", str(ctr),
                    "--out", str(out))
    assert signed.returncode == 0, signed.stderr
    sent = gwtool("send-command", str(out), "--port", str(rig.broker.port), "--gateway",
                  rig.gateway_id, "--timeout", "10")
    assert sent.returncode == 0, sent.stdout + sent.stderr + rig.log_text()[-2000:]
    last = json.loads(sent.stdout.splitlines()[-1])
    assert last["status"] == "executed", last
    return str(last["cmd"])


def test_outage_in_a_planned_window_is_planned_and_after_cancel_is_not(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        line = rig.lines["rs485-1"]
        ids = sorted(rig.meters)
        master, subs = ids[0], ids[1:]
        meters = [{"id": m, "bus": "rs485-1", "address": rig.meters[m].address,
                   "profile": "test-dlt645", "poll_interval_s": 1.0} for m in ids]
        bus = {"name": "rs485-1", "protocol": "dlt645", "port": line.device, "baudrate": 9600,
               "parity": "N", "timeout_ms": 200, "retries": 1, "comm_loss_after": 2}
        fail = tmp_path / "power-fail"
        fail.write_text("0\n")
        assert gwtool("keygen", "--out", str(tmp_path / "eng")).returncode == 0
        members = ", ".join(f'{{ meter = "{m}" }}' for m in subs)
        write_config(rig, [bus], meters, extra=f"""
[[groups]]
id = "tq-1-subs"
members = [{members}]

[[areas]]
id = "tq-1"
master = "{master}"
subs = "tq-1-subs"

[power]
fail_input = "{fail}"

[outage]
min_duration_s = 2

[commands]
clock_trusted = true

[[operators]]
kid = "eng-1"
public_key = "{tmp_path / "eng.pub"}"
roles = ["ENGINEER"]
""")
        with Observer(rig.broker, "mtr/v1/#", client_id="planned-observer") as observer:
            rig.start_daemon()

            def outages() -> list[dict[str, Any]]:
                return [m for _t, m in decoded(observer, rig.topic("alarms"))
                        if m.get("kind") == "outage.area"]

            def cut(count_before: int) -> tuple[dict[str, Any], dict[str, Any]]:
                fail.write_text("1")
                assert wait_until(lambda: len(outages()) > count_before, 5.0), rig.log_text()
                fail.write_text("0")
                assert wait_until(lambda: len(outages()) > count_before + 1, 5.0), rig.log_text()
                raised, cleared = outages()[count_before:count_before + 2]
                assert (raised["state"], cleared["state"]) == ("raised", "cleared")
                return raised, cleared

            assert wait_until(lambda: decoded(observer, rig.topic("reads/")), 15), rig.log_text()
            now = int(time.time())
            cmd = _plan(rig, tmp_path / "eng.key", tmp_path / "plan.cose", 1,
                        {"start": now - 60, "end": now + 3600, "note": "transformer swap"})
            # Persisted before the result said executed (survives a restart).
            assert cmd in (rig.workdir / "var" / "planned_outages.json").read_text()

            raised, cleared = cut(0)
            assert raised["details"]["area"] == "tq-1"
            assert raised["details"]["planned"] is True
            assert cleared["details"]["planned"] is True

            _plan(rig, tmp_path / "eng.key", tmp_path / "cancel.cose", 2, {"cancel": cmd})
            raised, cleared = cut(2)
            assert raised["details"]["planned"] is False
            assert cleared["details"]["planned"] is False
        assert rig.stop_daemon() == 0
