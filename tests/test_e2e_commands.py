"""Signed commands against the real daemon: trip via the priority lane, rejections that never
touch the bus, results on P/G/cmd/result, and a clean audit journal (issue 6, direct actions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.control.commands import Journal, read_kernel_time_state
from protocols import cose
from protocols.commands import (
    AuditHeadMessage,
    build_envelope,
    parse_private_key,
    raw_public_key,
    read_result_topic,
)
from protocols.ed25519 import SigningKey
from tests.broker import Observer, publish_once
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until

REPO = Path(__file__).resolve().parent.parent


def _load_key(path: Path) -> SigningKey:
    return parse_private_key(path.read_bytes(), str(path))


def gwtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _setup(rig: GatewayRig, tmp: Path, protected: str, commands: str = "") -> Path:
    assert gwtool("keygen", "--out", str(tmp / "op1")).returncode == 0
    assert rig.config_path is not None
    text = rig.config_path.read_text()
    text = text.replace(f'address = "{protected}"', f'address = "{protected}"\nprotected = true')
    text += (f'\n[commands]\nclock_trusted = true\n{commands}\n[[operators]]\nkid = "op-1"\n'
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


def _signed(key: SigningKey, kid: str, *, aud: str, targets: list[str], ctr: int,
            action: str = "trip", role: str = "OPERATOR") -> tuple[bytes, bytes]:
    """(command id, COSE_Sign1 bytes) built with the library gwtool uses, so that the test can
    then spoil exactly one thing about an otherwise acceptable command."""
    envelope = build_envelope(aud=aud, action=action, targets=targets, ctr=ctr,
                              iat=int(time.time()), ttl_s=60, role=role)
    message = cose.sign1(envelope.to_cbor(), key,
                         protected=cose.ed25519_protected(kid.encode("utf-8")))
    return envelope.id, message


def _answer(rig: GatewayRig, observer: Observer, cmd: bytes, message: bytes,
            timeout: float = 20) -> tuple[str, str, int]:
    """Publish ``message`` on P/G/cmd and wait for the result about ``cmd``: (status, reason,
    ts of the result)."""
    publish_once(rig.broker, rig.topic("cmd"), message)
    found: list[tuple[str, str, int]] = []

    def answered() -> bool:
        found[:] = [(str(m["status"]), str(m["reason"]), int(m["ts"]))  # type: ignore[call-overload]
                    for _t, m in decoded_results(observer, rig) if m.get("cmd") == cmd]
        return bool(found)

    assert wait_until(answered, timeout), rig.log_text()[-2000:]
    return found[-1]


def _printed_verdict(result: dict[str, object]) -> tuple[bytes, str, str]:
    """(command id, status, reason) of the last result line ``gwtool send-command`` printed."""
    last = json.loads(str(result["out"]).splitlines()[-1])
    return bytes.fromhex(last["cmd"]), last["status"], last["reason"]


def _control_frames(rig: GatewayRig) -> dict[str, int]:
    """1CH frames each simulated meter has seen on the line (not only those it obeyed)."""
    return {a: s.control_frames for a, s in rig.lines["rs485-1"].stats.items()}


def _audit_heads(observer: Observer, rig: GatewayRig) -> list[dict[str, Any]]:
    return [m for _t, m in decoded_results(observer, rig) if "audit_head" in m]


def test_every_rejection_is_journaled_answered_and_puts_no_frame_on_the_bus(
        tmp_path: Path) -> None:
    """Each way a command can be refused, through the real daemon: the result names the reason,
    the journal holds it, and no meter ever sees a 1CH frame for it. One trip that is accepted
    shows the counter really counts; a second daemon start without trusted time covers the
    clock. The published audit chain head must match ``gwtool audit verify``."""
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=2.0) as rig:
        line = rig.lines["rs485-1"]
        addresses = sorted(line.meters)
        target, other, protected = addresses
        meter = {a: f"m-{a[-4:]}" for a in addresses}
        key_path = _setup(rig, tmp_path, protected,
                          "two_person_threshold = 2\naudit_head_interval_s = 1\n")
        op1 = _load_key(key_path)
        assert gwtool("keygen", "--out", str(tmp_path / "viewer")).returncode == 0
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + (
            f'\n[[operators]]\nkid = "op-v"\npublic_key = "{tmp_path / "viewer.pub"}"\n'
            'roles = ["VIEWER"]\n'))
        viewer = _load_key(tmp_path / "viewer.key")
        stranger = SigningKey.generate()  # a valid key the gateway was never told about
        gw = rig.gateway_id
        with Observer(rig.broker, "mtr/v1/#", client_id="cmd-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 3, 30)

            # Rejections first: none of them may put a frame on the bus.
            rejected = {
                "protected_meter": _send(rig, key_path, tmp_path, "p", "--action", "trip",
                                         "--targets", meter[protected], "--ctr", "1"),
                "wrong_audience": _send(rig, key_path, tmp_path, "a", "--action", "trip",
                                        "--targets", meter[target], "--ctr", "2", "--aud",
                                        "gw-other"),
                "expired": _send(rig, key_path, tmp_path, "e", "--action", "trip", "--targets",
                                 meter[target], "--ctr", "3", "--iat",
                                 str(int(time.time()) - 3600)),
            }
            ids: dict[str, bytes] = {}
            for code, result in rejected.items():
                assert result["code"] == 1, (code, result)
                cmd, status, reason = _printed_verdict(result)
                assert (status, reason.split(":")[0]) == ("rejected", code), (code, reason)
                ids[code] = cmd
            cmd, good = _signed(op1, "op-1", aud=gw, targets=[meter[target]], ctr=4)
            forged = bytearray(good)
            forged[-1] ^= 0x01  # the signature is the last item: one bit of it flipped
            cases = {
                "bad_signature": (cmd, bytes(forged)),
                "unknown_key": _signed(stranger, "op-9", aud=gw, targets=[meter[target]], ctr=1),
                "insufficient_role": _signed(viewer, "op-v", aud=gw, targets=[meter[target]],
                                             ctr=1, role="VIEWER"),
                # Two meters reach two_person_threshold = 2: one signature is not enough.
                "two_person_required": _signed(op1, "op-1", aud=gw, ctr=5,
                                               targets=[meter[target], meter[other]]),
            }
            for code, (cmd, message) in cases.items():
                status, reason, _ts = _answer(rig, observer, cmd, message)
                assert (status, reason.split(":")[0]) == ("rejected", code), (code, reason)
                ids[code] = cmd
            assert _control_frames(rig) == {a: 0 for a in addresses}
            # No relay ever operated either.
            assert all(line.meters[a].sim.snapshot().relay_trips.count == 0 for a in addresses)

            ok = _send(rig, key_path, tmp_path, "t", "--action", "trip", "--targets",
                       meter[target], "--ctr", "10")
            assert ok["code"] == 0 and "executed" in str(ok["out"]), ok
            assert line.meters[target].sim.snapshot().status.relay_open
            assert line.meters[target].sim.snapshot().relay_trips.count == 1
            assert _control_frames(rig) == {target: 1, other: 0, protected: 0}

            # Counter 6 was never used, but 10 was: a fresh id with an old counter is refused.
            cmd, message = _signed(op1, "op-1", aud=gw, targets=[meter[target]], ctr=6,
                                   action="close")
            status, reason, _ts = _answer(rig, observer, cmd, message)
            assert (status, reason.split(":")[0]) == ("rejected", "stale_counter"), reason
            ids["stale_counter"] = cmd
            replay = gwtool("send-command", str(tmp_path / "t.cose"), "--port",
                            str(rig.broker.port), "--gateway", gw, "--timeout", "20")
            assert replay.returncode == 1, replay.stdout + replay.stderr
            cmd, status, reason = _printed_verdict({"out": replay.stdout})
            assert (status, reason.split(":")[0]) == ("rejected", "replayed"), reason
            ids["replayed"] = cmd
            assert _control_frames(rig) == {target: 1, other: 0, protected: 0}

            events = [(m["kind"], m["state"]) for _t, m in decoded(observer, rig.topic("alarms"))
                      if str(m.get("kind", "")).startswith("load_control.")]
            # The CRM hears of the trip before it happens, then that it happened.
            assert events == [("load_control.trip_pending", "raised"),
                              ("load_control.trip_pending", "cleared"),
                              ("load_control.tripped", "raised")], events
            assert rig.stop_daemon() == 0

            # Untrusted time: no clock_trusted, and a kernel error bound of 0 ms that no kernel
            # with a real error estimate meets (this host: see the precondition).
            kernel = read_kernel_time_state()
            assert kernel is None or not kernel.synchronised(0), kernel
            rig.config_path.write_text(rig.config_path.read_text().replace(
                "clock_trusted = true", "clock_max_error_ms = 0"))
            seen = len(decoded(observer, rig.topic("reads/")))
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) > seen + 2, 30)
            cmd, message = _signed(op1, "op-1", aud=gw, targets=[meter[other]], ctr=20)
            status, reason, last_ts = _answer(rig, observer, cmd, message)
            assert (status, reason.split(":")[0]) == ("rejected", "untrusted_clock"), reason
            assert "clock_trusted" in reason, reason  # the reason says how to fix it
            ids["untrusted_clock"] = cmd
            assert _control_frames(rig) == {target: 1, other: 0, protected: 0}
            # A chain head published after the last verdict, i.e. covering it.
            assert wait_until(lambda: any(h["ts"] > last_ts for h in _audit_heads(observer, rig)),
                              10)
            # Having verified commands and signed results and heads, the daemon has not loaded
            # cryptography's extension (issue 18: protocols.ed25519 uses the mapped libcrypto).
            assert rig.process is not None
            maps = Path(f"/proc/{rig.process.pid}/maps").read_text()
            assert "/cryptography/" not in maps and "libcrypto" in maps
            assert rig.stop_daemon() == 0

        # Every verdict is on the journal's record, with its code.
        with Journal.open(rig.workdir / "var" / "audit.db") as journal:
            for code, cmd in ids.items():
                kinds = [(r.kind, r.details.get("code")) for r in journal.commands(cmd)]
                assert ("rejected", code) in kinds, (code, kinds)
        # The last published head is the journal's head: what gwtool audit verify reports.
        head = _audit_heads(observer, rig)[-1]["audit_head"]
        audit = gwtool("audit", "verify", str(rig.workdir / "var" / "audit.db"))
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert f"intact, {head['records']} records, head {head['seq']}:{head['hash'].hex()}" \
            in audit.stdout, (audit.stdout, head)
        anchored = gwtool("audit", "verify", str(rig.workdir / "var" / "audit.db"), "--head",
                          f"{head['seq']}:{head['hash'].hex()}")
        assert anchored.returncode == 0, anchored.stdout + anchored.stderr
        # And the head is signed by the gateway's result key, like every result.
        gateway_key = _load_key(rig.workdir / "var" / "gateway-result.key")
        last = [payload for _t, payload, _r in observer.messages(rig.topic("cmd/result"))][-1]
        signed = read_result_topic(last, raw_public_key(gateway_key))
        assert isinstance(signed, AuditHeadMessage) and signed.signed_by == gw
        assert len(ids) == 10, sorted(ids)
        print(json.dumps({"rejected": sorted(ids)}))


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
            # Round 3 as well: the limit (0.001 kW) is below any load, so every round goes.
            assert wait_until(lambda: line.meters[addresses[2]].sim.snapshot().status.relay_open, 30)
            # An operator trips round 1's customer directly as well: that trip is the operator's,
            # and the end of the limit must not undo it.
            direct = _send(rig, key, tmp_path, "direct", "--action", "trip", "--targets", ids[0],
                           "--ctr", "21")
            assert direct["code"] == 0 and "executed" in str(direct["out"]), direct
            cancel = _send(rig, key, tmp_path, "cancel", "--action", "cancel", "--targets", "group:g1",
                           "--ctr", "22", timeout=30)
            assert cancel["code"] == 0, cancel
            cancelled = time.monotonic()
            # Restores in reverse round order (round 3 before round 2), each within the configured
            # random delay (0-2 s) of the cancel — but not ids[0], which the operator tripped.
            closed: dict[str, float] = {}
            deadline = cancelled + 30
            while len(closed) < 2 and time.monotonic() < deadline:
                for a in addresses[1:]:
                    if a not in closed and not line.meters[a].sim.snapshot().status.relay_open:
                        closed[a] = time.monotonic()
                time.sleep(0.02)
            assert len(closed) == 2, (closed, rig.log_text()[-3000:])
            assert closed[addresses[2]] <= closed[addresses[1]], f"{closed}\n" + rig.log_text()[-6000:]
            # Upper bound: restore_delay_max_s + the close frame on the bus behind at most one
            # routine exchange + the status-word check (1 s of slack at 9600 baud).
            assert all(t - cancelled <= 2.0 + 1.0 for t in closed.values()), \
                {a: round(t - cancelled, 3) for a, t in closed.items()}
            time.sleep(3)  # restore_delay_max_s = 2: any restore of ids[0] would have come by now
            assert line.meters[addresses[0]].sim.snapshot().status.relay_open
            close = _send(rig, key, tmp_path, "close", "--action", "close", "--targets", ids[0],
                          "--ctr", "23")
            assert close["code"] == 0 and "executed" in str(close["out"]), close
            assert not line.meters[addresses[0]].sim.snapshot().status.relay_open
            assert rig.stop_daemon() == 0


def test_every_command_with_a_readable_id_gets_a_signed_rejection(tmp_path: Path) -> None:
    """Issue 17: commands signed by an independent COSE implementation (tests/independent_cose.py)
    with ``exp`` before ``iat``, an unknown action, or targets that are not a list each get a
    result signed by the gateway's key: ``rejected``, the reason naming the field. Bytes with
    no readable id are journaled and stay unanswered, as before."""
    from tests import independent_cose

    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=2.0) as rig:
        target = f"m-{sorted(rig.lines['rs485-1'].meters)[0][-4:]}"
        assert gwtool("keygen", "--out", str(tmp_path / "gw")).returncode == 0
        key_path = _setup(rig, tmp_path, "none", f'gateway_key = "{tmp_path / "gw.key"}"\n')
        op1 = independent_cose.load_key(key_path.read_bytes())
        gateway_public = _load_key(tmp_path / "gw.key").public_bytes()
        now = int(time.time())
        base: dict[str, object] = {"v": 1, "aud": rig.gateway_id, "iat": now, "exp": now + 60,
                                   "role": "OPERATOR", "action": "alarm", "targets": [target],
                                   "params": {}}
        cases = {
            "'exp'": {"exp": now - 60},
            "'action'": {"action": "reboot"},
            "'targets'": {"targets": target},
        }
        with Observer(rig.broker, "mtr/v1/#", client_id="answers") as observer:
            rig.start_daemon()
            # Reads arriving means the daemon is up and subscribed to its command topic.
            assert wait_until(lambda: bool(decoded(observer, rig.topic("reads/"))), 30)
            sent: dict[bytes, str] = {}
            for ctr, (field, change) in enumerate(cases.items(), start=1):
                cmd = os.urandom(16)
                message = independent_cose.sign1({**base, "id": cmd, "ctr": ctr, **change}, op1,
                                                 b"op-1")
                publish_once(rig.broker, rig.topic("cmd"), message)
                sent[cmd] = field
            # No id at all, and an id of the wrong size: journaled, never answered.
            publish_once(rig.broker, rig.topic("cmd"),
                         independent_cose.sign1({**base, "ctr": 9}, op1, b"op-1"))
            publish_once(rig.broker, rig.topic("cmd"),
                         independent_cose.sign1({**base, "id": b"short", "ctr": 10}, op1, b"op-1"))
            answers: dict[bytes, dict[str, object]] = {}

            def answered() -> bool:
                for _t, payload, _r in observer.messages(rig.topic("cmd/result")):
                    result = independent_cose.open_sign1(payload, gateway_public)
                    cmd = result.get("cmd")
                    if isinstance(cmd, bytes):
                        answers[cmd] = result
                return set(sent) <= set(answers)

            assert wait_until(answered, 30), rig.log_text()[-2000:]
            for cmd, field in sent.items():
                result = answers[cmd]
                assert result["status"] == "rejected", result
                reason = str(result["reason"])
                assert reason.startswith("malformed: ") and field in reason, reason
            time.sleep(2)  # the two messages without an id had their chance to be answered
            answered()
            assert set(answers) == set(sent), answers
            assert rig.stop_daemon() == 0
        journal = Journal.open(rig.workdir / "var" / "audit.db")
        try:
            rejected = [r for r in journal.records() if r.kind == "rejected"]
            assert len(rejected) == 5
            assert {r.cmd for r in rejected} == {*sent, None}
            # Signed by a configured operator: journaled with its bytes, as authentic.
            assert all(r.details["authentic"] for r in rejected)
        finally:
            journal.close()
