"""The daemon end to end over mutual TLS, through the shipped broker templates and ACL
(issue 16): reads reach a consumer holding the central identity on the central worker's own
shared subscription; an operator's signed trip sent by ``gwtool send-command --cert/--key``
is executed and answered; the central identity can ask for a replay but its VIEWER key cannot
trip a meter; ``gwtool`` without a client certificate is refused in one line; a real
``edge-central`` worker with its own certificate stores the reads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cbor2

from central.config import CentralConfig, MqttSettings, load_config
from central.errors import ConfigError
from central.worker import subscriptions
from protocols.commands import build_envelope, parse_private_key, sign_command
from protocols.payload import AliasBook, decode_message
from tests.gateway_rig import gateway_rig, wait_until
from tests.secure_broker import Client, Pki, make_pki, secure_broker

REPO = Path(__file__).resolve().parent.parent
P = "mtr/v1"


def gwtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=90)


def _results(central: Client, gw: str) -> dict[bytes, tuple[str, str]]:
    out = {}
    for topic, payload in list(central.messages):
        if topic == f"{P}/{gw}/cmd/result":
            inner = cbor2.loads(cbor2.loads(payload).value[2])
            if "cmd" in inner:
                out[inner["cmd"]] = (inner["status"], inner["reason"])
    return out


def _decoded(central: Client, suffix: str) -> list[dict[str, Any]]:
    """Messages under ``suffix``; schema-2 reads resolved through the births seen."""
    messages = list(central.messages)
    book = AliasBook()
    for topic, payload in messages:
        if topic.endswith("/state") and payload:
            book.learn(decode_message(payload))
    return [decode_message(p, book) for t, p in messages if t.startswith(suffix)]


def test_daemon_over_mtls_with_the_acl(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", gateways=("gw-test",))
    broker = secure_broker(tmp_path / "broker", pki)
    broker.start()
    # The test's own eyes hold a second central identity: with use_username_as_clientid two
    # connections with one certificate would throw each other off (docs/security.md).
    central = Client(broker, pki, "central/witness")
    worker: subprocess.Popen[bytes] | None = None
    try:
        with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                         broker=broker) as rig:
            gw = rig.gateway_id
            ident = pki.identities[gw]
            for name in ("op1", "central1"):
                assert gwtool("keygen", "--out", str(tmp_path / name)).returncode == 0
            assert rig.config_path is not None
            text = rig.config_path.read_text().replace(
                "keepalive_s = 5\n",
                f'keepalive_s = 5\ntls = {{ ca_file = "{pki.ca}", cert_file = "{ident.cert}", '
                f'key_file = "{ident.key}" }}\n', 1)
            text += ("\n[commands]\nclock_trusted = true\n"
                     f'[[operators]]\nkid = "op-1"\npublic_key = "{tmp_path / "op1.pub"}"\n'
                     'roles = ["OPERATOR"]\n'
                     f'[[operators]]\nkid = "central-1"\npublic_key = "{tmp_path / "central1.pub"}"\n'
                     'roles = ["VIEWER"]\n')
            rig.config_path.write_text(text)

            assert central.connect()
            # The worker's filters in a share group of the witness's own (in the worker's group
            # the broker would split the messages between the two).
            config = CentralConfig(Path("central.toml"), "sqlite://",
                                   MqttSettings(topic_prefix=P, share_group="witness"))
            for f in subscriptions(config):
                assert central.subscribe(f) == "Granted QoS 1"
            worker = _start_central_worker(rig.workdir, broker.port, pki)
            rig.start_daemon()

            # Reads of every meter and the retained birth reach the central identity.
            assert wait_until(lambda: {m["meter"] for m in _decoded(central, f"{P}/{gw}/reads/")}
                              == set(rig.meters), 60), rig.log_text()[-3000:]
            births = _decoded(central, f"{P}/{gw}/state")
            assert births and births[-1]["online"] is True
            # ...and so do they to a real edge-central worker over mTLS, which stores them.
            assert wait_until(lambda: _stored_meters(rig.workdir) == set(rig.meters), 60), \
                (rig.workdir / "worker.log").read_text()

            # The operator's trip, sent with the operator's certificate, is executed.
            target = sorted(rig.meters)[0]
            signed = tmp_path / "trip.cose"
            assert gwtool("sign-command", "--key", str(tmp_path / "op1.key"), "--kid", "op-1",
                          "--aud", gw, "--action", "trip", "--targets", target, "--ctr", "1",
                          "--out", str(signed)).returncode == 0
            op = pki.identities["operator/op-1"]
            common = ("send-command", str(signed), "--port", str(broker.port), "--gateway", gw,
                      "--cafile", str(pki.ca), "--timeout", "30")
            sent = gwtool(*common, "--cert", str(op.cert), "--key", str(op.key))
            assert sent.returncode == 0 and "executed" in sent.stdout, (sent, rig.log_text()[-3000:])
            assert rig.meters[target].sim.snapshot().status.relay_open

            # Without a client certificate gwtool gets nowhere, and says so in one line.
            refused = gwtool(*common[:-2], "--timeout", "10")
            assert refused.returncode == 1
            assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            assert "client certificate" in refused.stderr and "Traceback" not in refused.stderr
            # A gateway's certificate is no operator's: the ACL refuses its command. (Another
            # gateway's: with this gateway's own, the broker would hand gwtool the daemon's
            # session, use_username_as_clientid, and throw the daemon off for a moment.)
            gw1 = pki.identities["gw-1"]
            as_gateway = gwtool(*common, "--cert", str(gw1.cert), "--key", str(gw1.key))
            assert as_gateway.returncode == 1 and "Not authorized" in as_gateway.stderr, as_gateway

            # Central may publish commands, but its VIEWER key only gets replays through.
            key = parse_private_key((tmp_path / "central1.key").read_bytes(), "central1.key")
            first = _decoded(central, f"{P}/{gw}/reads/")[0]
            epoch, seq = int(str(first["id"]).split(":")[1], 16), int(first["seq"])
            now = int(time.time())
            trip = build_envelope(aud=gw, action="trip", targets=[sorted(rig.meters)[1]], ctr=1,
                                  iat=now, ttl_s=60, role="VIEWER")
            replay = build_envelope(aud=gw, action="replay", targets=[gw], ctr=2, iat=now,
                                    ttl_s=60, role="VIEWER",
                                    params={"epoch": epoch, "from_seq": seq, "to_seq": seq})
            for env in (trip, replay):
                assert central.publish(f"{P}/{gw}/cmd",
                                       sign_command(env, [(key, "central-1")])) == "Success"
            assert wait_until(lambda: {trip.id, replay.id} <= set(_results(central, gw)), 30)
            results = _results(central, gw)
            assert results[trip.id][0] == "rejected" and "role" in results[trip.id][1], results
            assert wait_until(lambda: _results(central, gw)[replay.id][0] == "executed", 30), \
                _results(central, gw)[replay.id]
            assert wait_until(lambda: any(m.get("hist") and m["seq"] == seq
                                          for m in _decoded(central, f"{P}/{gw}/reads/")), 30)
            assert not rig.meters[sorted(rig.meters)[1]].sim.snapshot().status.relay_open
            assert rig.stop_daemon() == 0

            # The same gateway without its certificate: refused at TLS, and the log says why.
            births_before = len(_decoded(central, f"{P}/{gw}/state"))
            rig.config_path.write_text(text.replace(
                f', cert_file = "{ident.cert}", key_file = "{ident.key}"', ""))
            log_before = len(rig.log_text())
            rig.start_daemon()
            assert wait_until(lambda: "client certificate" in rig.log_text()[log_before:], 30), \
                rig.log_text()[log_before:]
            rig.kill_daemon()  # a clean stop would wait for a broker it never reaches
            # Nothing of that run reached the broker: the only new state is none at all.
            assert len(_decoded(central, f"{P}/{gw}/state")) == births_before
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        central.close()
        broker.kill()


def _start_central_worker(workdir: Path, port: int, pki: Pki) -> subprocess.Popen[bytes]:
    ident = pki.identities["central/central-1"]
    config = workdir / "central.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_prefix = "{P}"\n'
        f'tls = {{ ca_file = "{pki.ca}", cert_file = "{ident.cert}", key_file = "{ident.key}" }}\n'
        f'[database]\nurl = "sqlite:///{workdir / "central.sqlite"}"\n'
        '[ingest]\nbatch_wait_ms = 50\n')
    log = open(workdir / "worker.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "central.cli", "run", "--config",
                                 str(config), "--worker", "w1"], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
    finally:
        log.close()


def _stored_meters(workdir: Path) -> set[str]:
    try:
        con = sqlite3.connect(workdir / "central.sqlite", timeout=1)
        try:
            return {m for (m,) in con.execute("SELECT DISTINCT meter FROM current_reads")}
        finally:
            con.close()
    except sqlite3.Error:
        return set()


def test_central_tls_settings_are_checked_at_load(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ident = pki.identities["central/central-1"]
    other = pki.identities["gw-1"]

    def load(tls: str) -> str:
        path = tmp_path / "central.toml"
        path.write_text(f'[mqtt]\ntls = {tls}\n[database]\nurl = "sqlite:///c.sqlite"\n')
        try:
            config = load_config(path)
        except ConfigError as exc:
            return str(exc)
        return repr(config.mqtt.tls)

    good = load(f'{{ ca_file = "{pki.ca}", cert_file = "{ident.cert}", key_file = "{ident.key}" }}')
    assert "TlsSettings(" in good and str(ident.key) in good
    assert "must be given together" in load(f'{{ cert_file = "{ident.cert}" }}')
    assert "cannot load" in load(f'{{ ca_file = "{tmp_path / "missing.crt"}" }}')
    assert "cannot load" in load(
        f'{{ ca_file = "{pki.ca}", cert_file = "{ident.cert}", key_file = "{other.key}" }}')
    assert "unknown key" in load('{ cafile = "x" }')
    assert "expected a table" in load('"ca.crt"')
