"""Signed commands against the real daemon: trip via the priority lane, rejections that never
touch the bus, results on P/G/cmd/result, and a clean audit journal (issue 6, direct actions)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.broker import Observer
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until

REPO = Path(__file__).resolve().parent.parent


def gwtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _setup(rig: GatewayRig, tmp: Path, protected: str) -> Path:
    assert gwtool("keygen", "--out", str(tmp / "op1")).returncode == 0
    assert rig.config_path is not None
    text = rig.config_path.read_text()
    text = text.replace(f'address = "{protected}"', f'address = "{protected}"\nprotected = true')
    text += (f'\n[commands]\nclock_trusted = true\n\n[[operators]]\nkid = "op-1"\n'
             f'public_key = "{tmp / "op1.pub"}"\nroles = ["OPERATOR"]\n')
    rig.config_path.write_text(text)
    return tmp / "op1.key"


def _send(rig: GatewayRig, key: Path, tmp: Path, name: str, *extra: str,
          until: str = "outcome", timeout: float = 20) -> dict[str, object]:
    out = tmp / f"{name}.cose"
    signed = gwtool("sign-command", "--key", str(key), "--kid", "op-1", "--aud", rig.gateway_id,
                    "--out", str(out), *extra)
    assert signed.returncode == 0, signed.stderr
    sent = gwtool("send-command", str(out), "--port", str(rig.broker.port), "--gateway",
                  rig.gateway_id, "--timeout", str(timeout), "--until", until)
    return {"code": sent.returncode, "out": sent.stdout, "err": sent.stderr}


def test_signed_trip_executes_and_bad_commands_never_reach_the_bus(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=2.0) as rig:
        line = rig.lines["rs485-1"]
        addresses = sorted(line.meters)
        target, protected = addresses[0], addresses[2]
        key = _setup(rig, tmp_path, protected)
        with Observer(rig.broker, "mtr/v1/#", client_id="cmd-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 3, 30)

            # Rejections first: none of them may put a frame on the bus.
            rejected = {
                "protected meter": _send(rig, key, tmp_path, "p", "--action", "trip", "--targets",
                                         f"m-{protected[-4:]}", "--ctr", "1"),
                "wrong audience": _send(rig, key, tmp_path, "a", "--action", "trip", "--targets",
                                        f"m-{target[-4:]}", "--ctr", "2", "--aud", "gw-other"),
                "expired": _send(rig, key, tmp_path, "e", "--action", "trip", "--targets",
                                 f"m-{target[-4:]}", "--ctr", "3", "--iat",
                                 str(int(time.time()) - 3600)),
            }
            for why, result in rejected.items():
                assert result["code"] == 1 and "rejected" in str(result["out"]), (why, result)
            # No frame acted: no relay operation was ever logged by any simulated meter.
            assert all(line.meters[a].sim.snapshot().relay_trips.count == 0 for a in addresses)

            ok = _send(rig, key, tmp_path, "t", "--action", "trip", "--targets", f"m-{target[-4:]}",
                       "--ctr", "10")
            assert ok["code"] == 0 and "executed" in str(ok["out"]), ok
            assert line.meters[target].sim.snapshot().status.relay_open
            assert line.meters[target].sim.snapshot().relay_trips.count == 1
            assert line.meters[protected].sim.snapshot().relay_trips.count == 0

            replay = subprocess.run([sys.executable, "-m", "firmware_tools.cli", "send-command",
                                     str(tmp_path / "t.cose"), "--port", str(rig.broker.port),
                                     "--gateway", rig.gateway_id, "--timeout", "20"],
                                    cwd=REPO, capture_output=True, text=True, timeout=60)
            assert replay.returncode == 1 and "replay" in replay.stdout.lower(), replay.stdout

            events = [(m["kind"], m["state"]) for _t, m in decoded(observer, rig.topic("alarms"))
                      if str(m.get("kind", "")).startswith("load_control.")]
            # The CRM hears of the trip before it happens, then that it happened.
            assert events == [("load_control.trip_pending", "raised"),
                              ("load_control.trip_pending", "cleared"),
                              ("load_control.tripped", "raised")], events
            assert rig.stop_daemon() == 0
        audit = gwtool("audit", "verify", str(rig.workdir / "var" / "audit.db"))
        assert audit.returncode == 0, audit.stdout + audit.stderr
        print(json.dumps({"rejected": list(rejected)}))


def test_kill_9_between_journal_and_action_never_acts_twice(tmp_path: Path) -> None:
    import os

    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0) as rig:
        line = rig.lines["rs485-1"]
        target = sorted(line.meters)[0]
        key = _setup(rig, tmp_path, sorted(line.meters)[1])
        with Observer(rig.broker, "mtr/v1/#", client_id="crash-cmd-observer") as observer:
            os.environ["EDGE_GATEWAY_FAILPOINT"] = "after-accept"
            try:
                proc = rig.start_daemon()
            finally:
                del os.environ["EDGE_GATEWAY_FAILPOINT"]
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 2, 30)
            first = _send(rig, key, tmp_path, "t", "--action", "trip", "--targets",
                          f"m-{target[-4:]}", "--ctr", "5", until="accepted", timeout=4)
            # The "accepted" result was committed but the daemon died before publishing it.
            assert first["code"] == 1, first
            proc.wait(20)
            assert proc.returncode == -9  # died between the journal entry and the action
            rig.process = None
            assert line.meters[target].sim.snapshot().relay_trips.count == 0
            rig.start_daemon()  # restart without the failpoint
            assert wait_until(lambda: any(
                "interrupted" in str(m.get("reason", ""))
                for _t, m in decoded_results(observer, rig)), 30), rig.log_text()[-2000:]
            again = subprocess.run([sys.executable, "-m", "firmware_tools.cli", "send-command",
                                    str(tmp_path / "t.cose"), "--port", str(rig.broker.port),
                                    "--gateway", rig.gateway_id, "--timeout", "20"],
                                   cwd=REPO, capture_output=True, text=True, timeout=60)
            assert again.returncode == 1 and "replay" in again.stdout.lower(), again.stdout
            assert line.meters[target].sim.snapshot().relay_trips.count == 0  # never acted
            assert rig.stop_daemon() == 0


def decoded_results(observer: Observer, rig: GatewayRig) -> list[tuple[str, dict[str, object]]]:
    """Command results are COSE_Sign1 messages: unwrap the payload without verifying here."""
    import cbor2

    out = []
    for topic, payload, _r in observer.messages(rig.topic("cmd/result")):
        tag = cbor2.loads(payload)
        inner = cbor2.loads(tag.value[2])
        out.append((topic, inner))
    return out


def test_signed_group_limit_alarms_then_trips_rounds_and_restores(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        line = rig.lines["rs485-1"]
        addresses = sorted(line.meters)
        ids = [f"m-{a[-4:]}" for a in addresses]
        key = _setup(rig, tmp_path, protected="none")
        assert rig.config_path is not None
        members = ", ".join(f'{{ meter = "{m}" }}' for m in ids)
        rig.config_path.write_text(rig.config_path.read_text() + f"""
[[groups]]
id = "g1"
members = [{members}]

[load_control]
power_step_s = 1
power_window_s = 2
alarm_delay_s = 2
settle_s = 3
after_record_s = 2
after_record_grace_s = 2
power_up_protect_s = 0
restore_delay_min_s = 0
restore_delay_max_s = 2

[load_control.groups.g1]
rounds = [["{ids[0]}"], ["{ids[1]}"], ["{ids[2]}"]]
""")
        with Observer(rig.broker, "mtr/v1/#", client_id="limit-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 6, 30)
            limit = _send(rig, key, tmp_path, "limit", "--action", "limit", "--targets", "group:g1",
                          "--params", '{"kind": "business_suspension", "limit_kw": 0.001}',
                          "--ctr", "20", timeout=30)
            assert limit["code"] == 0, limit
            # Round 1 trips after its alarm; round 2 only because the group is still over.
            assert wait_until(lambda: line.meters[addresses[0]].sim.snapshot().status.relay_open, 30), \
                rig.log_text()[-3000:]
            assert wait_until(lambda: line.meters[addresses[1]].sim.snapshot().status.relay_open, 30)
            kinds = [(m["kind"], m["state"]) for _t, m in decoded(observer, rig.topic("alarms"))]
            pre = kinds.index(("customer.pre_trip", "raised"))
            trip = kinds.index(("customer.trip", "raised"))
            assert pre < trip, kinds  # the CRM hears of it first
            cancel = _send(rig, key, tmp_path, "cancel", "--action", "cancel", "--targets", "group:g1",
                           "--ctr", "21", timeout=30)
            assert cancel["code"] == 0, cancel
            # Restores in reverse order, within the configured random delay.
            assert wait_until(lambda: not any(line.meters[a].sim.snapshot().status.relay_open
                                              for a in addresses), 30), rig.log_text()[-3000:]
            assert rig.stop_daemon() == 0
