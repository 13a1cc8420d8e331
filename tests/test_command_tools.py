"""gwtool keygen / sign-command / send-command, round trips with the gateway's own verifier.

send-command runs as a real process against a real mosquitto; the gateway side is a small
responder in the test built from the real verifier, journal and result signer (the daemon's
wiring of them is tested with the daemon).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware_tools.cli import main as gwtool
from gateway.config.loader import load_config
from gateway.control.commands import CommandVerifier, Journal, ResultSigner, TrustedClock
from protocols import cose
from protocols.commands import parse_envelope, parse_private_key, raw_public_key
from protocols.ed25519 import SigningKey
from protocols.payload import Envelope
from tests.broker import MosquittoBroker

GW = "gw-0001"
PREFIX = "mtr/v1"
GWTOOL = str(Path(sys.executable).with_name("gwtool"))


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GWTOOL, *args], capture_output=True, text=True, timeout=timeout)


def _keygen(directory: Path, name: str) -> tuple[Path, Path]:
    done = _run("keygen", "--out", str(directory / name))
    assert done.returncode == 0, done.stderr
    return directory / f"{name}.key", directory / f"{name}.pub"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    # In-process (the same entry point, without an interpreter start per key); the keygen test
    # below runs the installed gwtool as a process.
    for name in ("op-a", "op-b", "gateway"):
        assert gwtool(["keygen", "--out", str(tmp_path / name)]) == 0
    return {name: (tmp_path / f"{name}.key", tmp_path / f"{name}.pub")
            for name in ("op-a", "op-b", "gateway")}  # fmt: skip


def _config(tmp_path: Path, keys: dict[str, tuple[Path, Path]]) -> Path:
    meters = "".join(
        f'\n[[meters]]\nid = "m-{i:03d}"\nbus = "rs485-1"\naddress = "{i:012d}"\n'
        f'profile = "dlt645-2007"\n'
        for i in range(1, 13)
    )
    members = ", ".join(f'{{ meter = "m-{i:03d}" }}' for i in range(1, 13))
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
id = "{GW}"
data_dir = "var"

[mqtt]
host = "127.0.0.1"

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "/dev/null"
{meters}
[[groups]]
id = "feeder-a"
members = [{members}]

[[operators]]
kid = "op-a"
public_key = "{keys["op-a"][1].name}"
roles = ["OPERATOR"]

[[operators]]
kid = "op-b"
public_key = "{keys["op-b"][1].name}"
roles = ["OPERATOR"]

[commands]
clock_trusted = true
two_person_threshold = 10
gateway_key = "{keys["gateway"][0].name}"
"""
    )
    return path


# ------------------------------------------------------------------------ keygen


def test_keygen_writes_a_private_pem_0600_and_a_hex_public_key(tmp_path: Path) -> None:
    private, public = _keygen(tmp_path, "op-1")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    hex_text = public.read_text().strip()
    assert len(hex_text) == 64
    assert bytes.fromhex(hex_text) == raw_public_key(parse_private_key(private.read_bytes(), str(private)))
    again = _run("keygen", "--out", str(tmp_path / "op-1"))
    assert again.returncode == 1 and "exists" in again.stderr
    assert private.read_text() == private.read_text()  # untouched
    forced = _run("keygen", "--out", str(tmp_path / "op-1"), "--force")
    assert forced.returncode == 0
    assert bytes.fromhex(public.read_text().strip()) != bytes.fromhex(hex_text)


# ------------------------------------------------------------------------ sign-command


def test_signed_command_is_accepted_by_the_gateway_verifier(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    config = load_config(_config(tmp_path, keys))  # keys by file, as an operator would give them
    out = tmp_path / "trip.cose"
    signed = _run(
        "sign-command", "--key", str(keys["op-a"][0]), "--kid", "op-a", "--aud", GW,
        "--action", "trip", "--targets", "m-001,m-002", "--ctr", "1", "--out", str(out),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    summary = json.loads(signed.stdout)
    assert summary["format"] == "COSE_Sign1" and summary["exp"] - summary["iat"] == 60
    message = out.read_bytes()
    envelope = parse_envelope(cose.decode(message).payload)
    assert envelope.id.hex() == summary["id"] and envelope.targets_value() == ["m-001", "m-002"]
    with Journal.open(tmp_path / "audit.db") as journal:
        decision = CommandVerifier.from_config(config, journal).verify(message, time.time())
    assert decision.accepted, decision.reason


def test_two_keys_make_a_cose_sign_that_passes_the_two_person_rule(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    config = load_config(_config(tmp_path, keys))
    out = tmp_path / "mass.cose"
    signed = _run(
        "sign-command", "--key", str(keys["op-a"][0]), "--key", str(keys["op-b"][0]),
        "--kid", "op-a", "--kid", "op-b", "--aud", GW, "--action", "limit",
        "--targets", "group:feeder-a", "--params", '{"limit_kw": 120, "rounds": 2}',
        "--ctr", "3", "--ttl", "90", "--out", str(out),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    message = cose.decode(out.read_bytes())
    assert isinstance(message, cose.SignMessage) and len(message.signatures) == 2
    with Journal.open(tmp_path / "audit.db") as journal:
        verifier = CommandVerifier.from_config(config, journal)
        decision = verifier.verify(out.read_bytes(), time.time())
    assert decision.accepted, decision.reason
    assert decision.command is not None
    assert dict(decision.command.params) == {"limit_kw": 120, "rounds": 2}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kid", "op-b"], "one --kid per --key"),
        (["--params", "{not json"], "--params is not JSON"),
        (["--params", "[1]"], "JSON object"),
        (["--targets", "group:"], "group id"),
        (["--ttl", "0"], "--ttl"),
        (["--id", "zz"], "32 hex digits"),
        (["--id", "00"], "16 bytes"),
    ],
)
def test_sign_command_refuses_bad_input(
    tmp_path: Path,
    keys: dict[str, tuple[Path, Path]],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    base = ["sign-command", "--key", str(keys["op-a"][0]), "--kid", "op-a", "--aud", GW,
            "--action", "trip", "--targets", "m-001", "--ctr", "1",
            "--out", str(tmp_path / "x.cose")]  # fmt: skip
    # Later options override earlier ones for single-valued flags; --kid appends.
    assert gwtool([*base, *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.cose").exists()


def test_sign_command_with_a_public_key_file_says_so(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    code = gwtool(["sign-command", "--key", str(keys["op-a"][1]), "--kid", "op-a", "--aud", GW,
                   "--action", "trip", "--targets", "m-001", "--ctr", "1",
                   "--out", str(tmp_path / "x.cose")])  # fmt: skip
    assert code == 1
    assert "not an unencrypted PEM private key" in capsys.readouterr().err


# ------------------------------------------------------------------------ send-command


class Responder:
    """The gateway's command path in miniature: verifier → signed results (accepted, then
    executed) on P/G/cmd/result. Optionally publishes a forged result first."""

    def __init__(self, broker: MosquittoBroker, config_path: Path, journal_path: Path,
                 forge_with: SigningKey | None = None,
                 audit_heads: bool = False) -> None:  # fmt: skip
        self.audit_heads = audit_heads
        config = load_config(config_path)
        assert config.commands.gateway_key is not None
        self.signer = ResultSigner.from_pem(config.commands.gateway_key, GW)
        self.journal = Journal.open(journal_path)
        self.verifier = CommandVerifier.from_config(config, self.journal,
                                                    clock=TrustedClock(True))  # fmt: skip
        self.forger = ResultSigner(forge_with, GW) if forge_with is not None else None
        self.seq = 0
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="responder",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/{GW}/cmd", qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def _publish(self, signer: ResultSigner, cmd: bytes, status: str, reason: str) -> None:
        self.seq += 1
        env = Envelope(GW, 0xABCDEF, self.seq, int(time.time() * 1000))
        self.client.publish(f"{PREFIX}/{GW}/cmd/result", signer.sign(env, cmd, status, reason),
                            qos=1)  # fmt: skip

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        decision = self.verifier.verify(bytes(msg.payload), time.time())
        cmd = decision.command_id or bytes(16)
        if self.forger is not None:
            self._publish(self.forger, cmd, "executed", "forged")
        if self.audit_heads:  # the daemon's periodic chain head shares the result topic
            self.seq += 1
            head = ResultSigner.audit_head_message  # built as the daemon builds it
            message = head(self.signer, topic_prefix=PREFIX, epoch=0xABCDEF, ts=int(time.time() * 1000),
                           head=self.journal.head(), records=self.journal.record_count())
            self.client.publish(message.topic, message.build(self.seq), qos=1)
        self._publish(self.signer, cmd, decision.status, decision.reason)
        if decision.accepted:
            self.journal.record_outcome(cmd, "executed", "2 relays open",
                                        now_ms=int(time.time() * 1000))  # fmt: skip
            self._publish(self.signer, cmd, "executed", "2 relays open")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.journal.close()


@pytest.fixture
def gateway_side(
    tmp_path: Path, mosquitto: MosquittoBroker, keys: dict[str, tuple[Path, Path]]
) -> Iterator[Responder]:
    responder = Responder(mosquitto, _config(tmp_path, keys), tmp_path / "audit.db")
    try:
        yield responder
    finally:
        responder.close()


def _sign(tmp_path: Path, keys: dict[str, tuple[Path, Path]], *extra: str) -> Path:
    out = tmp_path / "cmd.cose"
    args = ["sign-command", "--key", str(keys["op-a"][0]), "--kid", "op-a",
            "--action", "trip", "--targets", "m-001,m-002", "--out", str(out), *extra]  # fmt: skip
    if "--aud" not in extra:
        args += ["--aud", GW]
    assert gwtool(args) == 0
    return out


def _send(broker: MosquittoBroker, command: Path, keys: dict[str, tuple[Path, Path]],
          *extra: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return _run(
        "send-command", str(command), "--host", broker.host, "--port", str(broker.port),
        "--topic-prefix", PREFIX, "--gateway", GW,
        "--gateway-pub", str(keys["gateway"][1]), *extra,
    )  # fmt: skip


def test_send_command_prints_verified_results_until_the_outcome(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    keys: dict[str, tuple[Path, Path]],
    gateway_side: Responder,
) -> None:
    command = _sign(tmp_path, keys, "--ctr", "1")
    done = _send(mosquitto, command, keys, "--timeout", "20")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["status"] for line in lines] == ["accepted", "executed"]
    assert all(line["signature"] == "verified" and line["gw"] == GW for line in lines)
    cmd = parse_envelope(cose.decode(command.read_bytes()).payload).id.hex()
    assert all(line["cmd"] == cmd for line in lines)
    # Sent again: the gateway refuses the replay and send-command exits 1 with the reason.
    again = _send(mosquitto, command, keys, "--timeout", "20")
    assert again.returncode == 1
    [rejected] = [json.loads(line) for line in again.stdout.splitlines()]
    assert rejected["status"] == "rejected" and rejected["reason"].startswith("replayed:")


def test_send_command_reports_a_rejection_with_its_reason(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    keys: dict[str, tuple[Path, Path]],
    gateway_side: Responder,
) -> None:
    command = _sign(tmp_path, keys, "--ctr", "1", "--aud", "gw-0002")
    done = _send(mosquitto, command, keys, "--timeout", "20")
    assert done.returncode == 1
    [line] = [json.loads(x) for x in done.stdout.splitlines()]
    assert line["status"] == "rejected" and line["reason"].startswith("wrong_audience:")


def test_send_command_passes_over_the_audit_chain_head_on_the_result_topic(
    tmp_path: Path, mosquitto: MosquittoBroker, keys: dict[str, tuple[Path, Path]]
) -> None:
    responder = Responder(mosquitto, _config(tmp_path, keys), tmp_path / "audit.db",
                          audit_heads=True)  # fmt: skip
    try:
        done = _send(mosquitto, _sign(tmp_path, keys, "--ctr", "1"), keys, "--timeout", "20")
    finally:
        responder.close()
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["status"] for x in done.stdout.splitlines()] == ["accepted", "executed"]
    assert "ignored" not in done.stderr  # a head is not a forged or broken result


def test_send_command_ignores_a_forged_result(
    tmp_path: Path, mosquitto: MosquittoBroker, keys: dict[str, tuple[Path, Path]]
) -> None:
    responder = Responder(mosquitto, _config(tmp_path, keys), tmp_path / "audit.db",
                          forge_with=SigningKey.generate())  # fmt: skip
    try:
        command = _sign(tmp_path, keys, "--ctr", "1")
        done = _send(mosquitto, command, keys, "--timeout", "20")
    finally:
        responder.close()
    assert done.returncode == 0, done.stderr
    assert "ignored a message on the result topic" in done.stderr
    assert "forged" not in done.stdout
    assert [json.loads(x)["status"] for x in done.stdout.splitlines()] == ["accepted", "executed"]


def test_send_command_times_out_without_a_gateway(
    tmp_path: Path, mosquitto: MosquittoBroker, keys: dict[str, tuple[Path, Path]]
) -> None:
    command = _sign(tmp_path, keys, "--ctr", "1")
    done = _send(mosquitto, command, keys, "--timeout", "1")
    assert done.returncode == 1
    assert "no result for command" in done.stderr and "is the gateway online" in done.stderr


def test_send_command_refuses_a_file_that_is_not_a_command(
    tmp_path: Path, mosquitto: MosquittoBroker, keys: dict[str, tuple[Path, Path]]
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    done = _send(mosquitto, junk, keys, "--timeout", "1")
    assert done.returncode == 1 and "not a signed command" in done.stderr
