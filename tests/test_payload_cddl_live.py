"""Every message kind a real daemon publishes, validated against docs/payloads.cddl by pycddl.

The daemon runs as a subprocess against simulated DL/T 645 meters on a pty and a simulated
Modbus TCP meter, with a real mosquitto; the test provokes each kind it can — reads (schema 2,
then schema 1 after a SIGHUP that sets ``[mqtt] payload_version = 1``), group totals and an
area's daily line loss (the meters' clock stepped over midnights), theft alarms (a meter's
phase voltage lost while current flows), meter status alarms (terminal cover opened), health,
the retained birth (with and without ``aliases``), command results and audit chain heads (a
signed command), and the death message — and checks every message received, byte for byte as
published, against its rule (alarms also against the rule of their kind's details). It also
resolves every v2 reads message through the births, as a consumer would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cbor2
import pytest

from protocols.payload import AliasBook, decode_message, parse_reads
from tests.broker import Observer
from tests.gateway_rig import gateway_rig, wait_until
from tests.test_payload_cddl import CDDL, Validator

REPO = Path(__file__).resolve().parent.parent
DAY_S = 86_400

EXTRA = """
[[groups]]
id = "subs"
members = [{{ meter = "{b}" }}, {{ meter = "{c}" }}]

[[areas]]
id = "tq-1"
master = "{a}"
subs = "subs"

[theft]
sustain_s = 2.0
evaluate_interval_s = 0.5

[commands]
clock_trusted = true
audit_head_interval_s = 1

[[operators]]
kid = "op-1"
public_key = "{pub}"
roles = ["OPERATOR"]
"""

FREEZES = """
[[reads]]
di = "0202FF00"      # currents, for the theft indicators
[[reads]]
di = "05060001"      # time of the last daily freeze
optional = true
[[reads]]
di = "05060101"      # import registers frozen then
optional = true
"""

#: Alarm kinds with a rule for their details: (kind prefix, rule prefix).
DETAIL_RULES = (("theft.", "theft"), ("comm.bus", "comm-bus"), ("outage.area", "outage"))


def gwtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def classify(topic: str, payload: bytes) -> tuple[str, bytes]:
    """(CDDL rule, the bytes it describes) of a message as published on ``topic``; ("", b"")
    for the commands going in on P/G/cmd (their schema is docs/commands.md)."""
    kind = topic.split("/", 3)[3]
    if kind == "cmd":
        return "", b""
    if kind == "state":
        return ("state-birth" if decode_message(payload).get("online") else "state-death"), payload
    if kind.startswith("reads/"):
        return ("reads-message" if decode_message(payload)["v"] == 1 else "reads-message-v2"), payload
    if kind.startswith("groups/"):
        return "groups-message", payload
    if kind == "alarms":
        return "alarm-message", payload
    if kind == "health":
        return "health-message", payload
    if kind == "cmd/result":  # COSE_Sign1: tag 18 [protected, unprotected, payload, signature]
        inner = cbor2.loads(payload).value[2]
        return ("audit-head" if "audit_head" in decode_message(inner) else "cmd-result"), inner
    raise AssertionError(f"message on an unexpected topic {topic}")


@pytest.mark.slow
def test_every_kind_the_daemon_publishes_matches_the_cddl(tmp_path: Path) -> None:
    validator = Validator(CDDL.read_text(encoding="utf-8"))
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=1,
                     poll_interval_s=1.0) as rig:
        line = rig.lines["rs485-1"]
        a, b, c = (f"m-{address[-4:]}" for address in sorted(line.meters))
        assert gwtool("keygen", "--out", str(tmp_path / "op1")).returncode == 0
        assert rig.config_path is not None
        config = rig.config_path.read_text() + EXTRA.format(a=a, b=b, c=c,
                                                            pub=tmp_path / "op1.pub")
        rig.config_path.write_text(config)
        profile = tmp_path / "profiles" / "test-dlt645.toml"
        profile.write_text(profile.read_text() + FREEZES)
        sims = {f"m-{address[-4:]}": line.meters[address].sim for address in line.meters}
        with Observer(rig.broker, "mtr/v1/#", client_id="cddl-live") as observer:
            rig.start_daemon()

            def seen(rule: str, where: str = "") -> list[bytes]:
                out = []
                for topic, payload, _retained in observer.messages(rig.topic("")):
                    if payload and where in topic:
                        found, body = classify(topic, payload)
                        if found == rule:
                            out.append(body)
                return out

            def alarms(prefix: str) -> list[dict[str, object]]:
                return [m for m in map(decode_message, seen("alarm-message"))
                        if str(m["kind"]).startswith(prefix)]

            assert wait_until(lambda: len(seen("reads-message-v2")) >= 8, 40), rig.log_text()[-3000:]
            # Two midnights: the first freeze opens a day, the second closes it -> area loss.
            for _ in range(3):  # each freeze is taken once two polls of every meter agree
                before = len(seen("reads-message-v2", f"/reads/{c}"))
                rig.clock.advance(DAY_S)
                assert wait_until(lambda n=before: len(seen("reads-message-v2", f"/reads/{c}"))
                                  >= n + 3, 30), rig.log_text()[-3000:]
            sims[a].set_loss_of_voltage("a", True)
            sims[b].open_cover()
            key = tmp_path / "op1.key"
            signed = gwtool("sign-command", "--key", str(key), "--kid", "op-1", "--aud",
                            rig.gateway_id, "--out", str(tmp_path / "trip.cose"), "--action",
                            "trip", "--targets", c, "--ctr", "1")
            assert signed.returncode == 0, signed.stderr
            sent = gwtool("send-command", str(tmp_path / "trip.cose"), "--port",
                          str(rig.broker.port), "--gateway", rig.gateway_id, "--timeout", "30",
                          "--until", "outcome")
            assert sent.returncode in (0, 1), sent.stderr  # executed or failed: both answered
            assert wait_until(lambda: alarms("theft.") and any(
                "loss" in decode_message(p) for p in seen("groups-message")), 60), (
                rig.log_text()[-3000:])
            sims[a].set_loss_of_voltage("a", False)
            assert wait_until(lambda: any(m["state"] == "cleared" for m in alarms("theft.")),
                              30), rig.log_text()[-3000:]
            # Schema 1 for old consumers: reload with payload_version = 1.
            rig.config_path.write_text(config.replace(
                "[mqtt]\n", "[mqtt]\npayload_version = 1\n", 1))
            assert rig.process is not None
            rig.process.send_signal(signal.SIGHUP)
            assert wait_until(lambda: len(seen("reads-message")) >= 4, 30), rig.log_text()[-3000:]
            assert rig.stop_daemon() == 0
            assert wait_until(lambda: seen("state-death"), 10)
            messages = [(t, p) for t, p, _r in observer.messages(rig.topic(""))
                        if p and not t.endswith("/cmd")]

    counts: Counter[str] = Counter()
    book = AliasBook()
    for topic, payload in messages:
        rule, body = classify(topic, payload)
        counts[rule] += 1
        validator.check_message(rule, body, topic)
        validator.check_bytes("payload", body, topic)
        message = decode_message(body)
        if rule == "state-birth":
            book.learn(message)
        elif rule == "alarm-message":
            for prefix, rule_prefix in DETAIL_RULES:
                if str(message["kind"]).startswith(prefix):
                    validator.check(f"{rule_prefix}-{message['state']}-details",
                                    message["details"], str(message["key"]))
        elif rule == "reads-message-v2":
            reads = parse_reads(body, book)  # resolvable through the births seen before it
            assert topic.endswith(f"/reads/{reads.meter}")
    wanted = {"state-birth", "state-death", "reads-message-v2", "reads-message", "groups-message",
              "alarm-message", "health-message", "cmd-result", "audit-head"}
    assert wanted <= set(counts), counts
    assert any("loss" in decode_message(p) for t, p in messages if "/groups/" in t)
    kinds = {str(decode_message(p)["kind"]) for t, p in messages if t.endswith("/alarms")}
    assert any(k.startswith("theft.") for k in kinds), kinds
