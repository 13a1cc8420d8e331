"""MqttLink against a real mosquitto: birth/will/death with bdseq, dead-link detection,
reconnection, persistent sessions for commands, MQTT 3.1.1, TLS with client certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import ConfigError, TlsSettings, load_config
from gateway.store.bdseq import BdseqCounter
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import LinkState, MqttLink, reconnect_delay
from gateway.uplink.state_messages import GatewayStateMessages
from protocols.payload import decode_message
from tests.broker import (
    Endpoint,
    MosquittoBroker,
    Observer,
    free_port,
    publish_once,
    retained,
)

REPO = Path(__file__).resolve().parents[1]
GW = "gw-link-1"
PREFIX = "mtr/v1"
STATE = f"{PREFIX}/{GW}/state"
CMD = f"{PREFIX}/{GW}/cmd"


def settings_for(broker: MosquittoBroker, **overrides: Any) -> LinkSettings:
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": GW,
        "topic_prefix": PREFIX,
        "keepalive_s": 2,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "connect_timeout_s": 2.0,
    }
    values.update(overrides)
    return LinkSettings(**values)


def make_link(settings: LinkSettings, tmp_path: Path) -> MqttLink:
    state = GatewayStateMessages(
        gateway_id=settings.client_id,
        version="0.1.0-test",
        config_sha256="ab" * 32,
        meters=("m-001", "m-002"),
        position=lambda: (0x1234, 0),
    )
    return MqttLink(settings, state=state, next_bdseq=BdseqCounter.open(tmp_path / "mqtt_bdseq").next)


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro_fn())


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def state_messages(observer: Observer) -> list[dict[str, object]]:
    return [decode_message(payload) for _, payload, _ in observer.messages(STATE)]


# --------------------------------------------------------------------------------------------
# pure parts
# --------------------------------------------------------------------------------------------


def test_reconnect_delay_grows_exponentially_with_jitter_within_bounds() -> None:
    rng = random.Random(7)
    for failures in range(12):
        ceiling = min(30.0, 0.5 * 2**failures)
        for _ in range(200):
            delay = reconnect_delay(failures, 0.5, 30.0, rng)
            assert max(0.5, ceiling / 2) <= delay <= ceiling
    # jitter: a fleet does not retry in lock-step
    assert len({round(reconnect_delay(5, 0.5, 30.0, rng), 6) for _ in range(50)}) > 40


def test_settings_reject_what_would_break_the_contract(tmp_path: Path) -> None:
    """The MQTT rules live once, in the config declarations; the link takes what they let by."""
    minimal = (Path(__file__).resolve().parents[1] / "configs" / "minimal.toml").read_text()
    (tmp_path / "c.pem").write_text("not checked here\n")

    def problems(old: str, new: str) -> str:
        path = tmp_path / "gateway.toml"
        path.write_text(minimal.replace(old, new, 1))
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        return str(caught.value)

    host = 'host = "127.0.0.1"'
    assert "gateway.id: expected an id" in problems('id = "gw-0001"', 'id = "gw/1"')
    assert "mqtt.keepalive_s: expected an integer between 1 and 65535" in problems(
        host, host + "\nkeepalive_s = 0"
    )
    assert "mqtt.reconnect_min_s: must not exceed reconnect_max_s" in problems(
        host, host + "\nreconnect_min_s = 5\nreconnect_max_s = 1"
    )
    assert "mqtt.tls.key_file: cert_file and key_file must be given together" in problems(
        host, host + '\ntls = { cert_file = "c.pem" }'
    )
    assert "mqtt.password: MQTT 3.1.1 does not allow a password" in problems(
        host, host + '\nprotocol = "3.1.1"\npassword = "pw"'
    )
    settings = LinkSettings(host="h", port=1883, client_id="gw-1", topic_prefix="mtr/v1",
                            username="u", password="secret")
    assert "secret" not in repr(settings)


# --------------------------------------------------------------------------------------------
# birth / death / will
# --------------------------------------------------------------------------------------------


def test_birth_then_clean_stop_publishes_death_and_no_will(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async def main() -> None:
        with Observer(mosquitto, STATE) as observer:
            link = make_link(settings_for(mosquitto), tmp_path)
            await link.start()
            assert await link.wait_connected(5)
            assert await until(lambda: len(state_messages(observer)) == 1, 5)
            birth = state_messages(observer)[0]
            assert birth["online"] is True
            assert birth["bdseq"] == 1 == link.status().bdseq
            assert birth["gw"] == GW and birth["meters"] == ["m-001", "m-002"]
            assert birth["config_sha256"] == "ab" * 32

            await link.stop()
            assert link.state is LinkState.STOPPED
            assert await until(lambda: len(state_messages(observer)) == 2, 5)
            await asyncio.sleep(1.0)  # a will would arrive right after the connection closes
            messages = state_messages(observer)
            assert [m["online"] for m in messages] == [True, False], messages
            assert messages[1]["bdseq"] == 1
            held = retained(mosquitto, STATE)
            assert held is not None and decode_message(held) == messages[1]
            assert link.status().connection_losses == 0

    run(main)


CHILD = r"""
import asyncio, sys
from pathlib import Path
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import MqttLink
from gateway.store.bdseq import BdseqCounter
from gateway.uplink.state_messages import GatewayStateMessages

async def main():
    host, port, data = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    settings = LinkSettings(host=host, port=port, client_id="gw-link-1", topic_prefix="mtr/v1",
                            keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0)
    state = GatewayStateMessages("gw-link-1", "0.1.0-test", "ab" * 32, ("m-001",),
                                 position=lambda: (0x1234, 0))
    link = MqttLink(settings, state=state, next_bdseq=BdseqCounter.open(data / "mqtt_bdseq").next)
    await link.start()
    if not await link.wait_connected(10):
        sys.exit("no connection")
    print(link.status().bdseq, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def test_killed_gateway_leaves_retained_will_with_the_birth_bdseq(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    BdseqCounter.open(tmp_path / "mqtt_bdseq", floor=41)  # as left by earlier runs
    with Observer(mosquitto, STATE) as observer:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, mosquitto.host, str(mosquitto.port), str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            bdseq = int(child.stdout.readline())
            assert bdseq == 42
            assert observer.wait_for(lambda: len(observer.messages(STATE)) == 1, 5)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(5)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert observer.wait_for(lambda: len(observer.messages(STATE)) == 2, 5)
    birth, will = (decode_message(p) for _, p, _ in observer.messages(STATE))
    assert birth["online"] is True and birth["bdseq"] == 42
    assert will["online"] is False and will["bdseq"] == 42
    held = retained(mosquitto, STATE)
    assert held is not None and decode_message(held) == will


# --------------------------------------------------------------------------------------------
# liveness and reconnection
# --------------------------------------------------------------------------------------------


def test_frozen_broker_is_noticed_within_one_and_a_half_keepalives(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    keepalive = 2

    async def main() -> None:
        link = make_link(settings_for(mosquitto, keepalive_s=keepalive), tmp_path)
        await link.start()
        try:
            assert await link.wait_connected(5)
            await asyncio.sleep(keepalive * 1.2)  # idle link: pings keep it alive
            assert link.connected
            mosquitto.freeze()
            frozen_at = time.monotonic()
            assert await until(lambda: not link.connected, 3 * keepalive)
            detected = time.monotonic() - frozen_at
            # our watchdog fires after 1.5 keepalives without a byte from the broker; the timer
            # resolution is keepalive/4
            assert detected <= 1.5 * keepalive + keepalive / 4 + 0.3, detected
            assert "presumed dead" in (link.status().last_error or "")
            mosquitto.thaw()
            assert await link.wait_connected(10)
            assert link.status().bdseq == 2  # every connection gets a fresh bdseq
            assert link.status().connection_losses == 1
        finally:
            await link.stop()

    run(main)


def test_link_retries_until_the_broker_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MosquittoBroker(tmp_path / "late-broker")
    caplog.set_level(logging.DEBUG, logger="gateway.uplink.mqtt_link")

    async def main() -> None:
        link = make_link(settings_for(broker, reconnect_max_s=0.3), tmp_path)
        await link.start()
        try:
            assert await until(lambda: link.status().last_error is not None, 5)
            assert "refused" in (link.status().last_error or "")
            assert not link.connected
            assert link.publish(f"{PREFIX}/{GW}/reads/m-001", b"x", 1) is None
            # Several refused attempts (every 0.2-0.3 s), logged as one line, no traceback.
            assert await until(lambda: (link.status().bdseq or 0) >= 4, 5)
            refused = [r for r in caplog.records
                       if r.levelno >= logging.WARNING and "refused" in r.getMessage()]
            assert len(refused) == 1 and refused[0].exc_info is None
            broker.start()
            assert await link.wait_connected(5)
            assert any("working again after" in r.getMessage() for r in caplog.records)
        finally:
            await link.stop()
            broker.kill()

    run(main)


def test_connect_without_connack_is_abandoned(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """A frozen broker still completes TCP handshakes from its listen backlog; the CONNECT then
    goes unanswered. The attempt must time out and be retried, not hang."""

    async def main() -> None:
        mosquitto.freeze()
        link = make_link(settings_for(mosquitto, keepalive_s=5, connect_timeout_s=1.0), tmp_path)
        await link.start()
        try:
            assert await until(lambda: "CONNACK" in (link.status().last_error or ""), 3)
            assert "connect_timeout_s" in (link.status().last_error or "")
            assert await until(lambda: (link.status().bdseq or 0) >= 3, 6)  # retried
            assert not link.connected
            mosquitto.thaw()
            assert await link.wait_connected(8)
        finally:
            await link.stop()

    run(main)


# --------------------------------------------------------------------------------------------
# commands and the persistent session
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_command_sent_while_gateway_is_away_arrives_after_reconnect(
    mosquitto: MosquittoBroker, tmp_path: Path, protocol: str
) -> None:
    async def main() -> None:
        settings = settings_for(mosquitto, protocol=protocol)
        link = make_link(settings, tmp_path)
        await link.start()
        assert await link.wait_connected(5)
        # proves the subscription is in place before we leave
        await asyncio.to_thread(publish_once, mosquitto, CMD, b"first")
        first = await asyncio.wait_for(link.commands.get(), 5)
        assert first.payload == b"first" and first.topic == CMD
        await link.stop()

        await asyncio.to_thread(publish_once, mosquitto, CMD, b"while-away")

        # a new link object: the session lives in the broker, keyed by the client id
        link = make_link(settings, tmp_path)
        await link.start()
        try:
            assert await link.wait_connected(5)
            queued = await asyncio.wait_for(link.commands.get(), 5)
            assert queued.payload == b"while-away"
            assert link.status().commands_received == 1
        finally:
            await link.stop()

    run(main)


def test_command_queue_is_bounded(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async def main() -> None:
        link = make_link(settings_for(mosquitto, command_queue_size=2), tmp_path)
        await link.start()
        try:
            assert await link.wait_connected(5)
            for i in range(4):
                await asyncio.to_thread(publish_once, mosquitto, CMD, f"c{i}".encode())
            assert await until(
                lambda: link.status().commands_received + link.status().commands_dropped == 4, 5
            )
            status = link.status()
            assert (status.commands_received, status.commands_dropped) == (2, 2)
            assert "command queue full" in (status.last_error or "")
            assert [link.commands.get_nowait().payload for _ in range(2)] == [b"c0", b"c1"]
        finally:
            await link.stop()

    run(main)


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


def _write_pki(directory: Path) -> dict[str, Path]:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, all fresh."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(
        subject: str,
        subject_key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
        san: x509.GeneralName | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(subject_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    paths: dict[str, Path] = {}

    def save(label: str, obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> None:
        path = directory / f"{label}.pem"
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(
                obj.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        paths[label] = path

    import ipaddress

    ca_key, other_ca_key, server_key, client_key = key(), key(), key(), key()
    save("ca", cert("test-ca", ca_key, "test-ca", ca_key, ca=True))
    save("other_ca", cert("other-ca", other_ca_key, "other-ca", other_ca_key, ca=True))
    server_san = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    save("server", cert("127.0.0.1", server_key, "test-ca", ca_key, ca=False, san=server_san))
    save("server_key", server_key)
    save("client", cert(GW, client_key, "test-ca", ca_key, ca=False))
    save("client_key", client_key)
    return paths


def test_tls_with_client_certificate(tmp_path: Path) -> None:
    pki = _write_pki(tmp_path / "pki")
    plain_port = free_port()
    broker = MosquittoBroker(
        tmp_path / "tls-broker",
        extra_config=(
            f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
            "require_certificate true\n"
            f"listener {plain_port} 127.0.0.1\n"  # a plain listener for the test's observer
        ),
    )
    broker.start()

    async def main() -> None:
        good = settings_for(
            broker,
            tls=TlsSettings(ca_file=pki["ca"], cert_file=pki["client"], key_file=pki["client_key"]),
        )
        link = make_link(good, tmp_path)
        await link.start()
        try:
            assert await link.wait_connected(5), link.status().last_error
        finally:
            await link.stop()

        wrong_ca = settings_for(
            broker,
            client_id="gw-link-2",
            tls=TlsSettings(
                ca_file=pki["other_ca"], cert_file=pki["client"], key_file=pki["client_key"]
            ),
        )
        link = make_link(wrong_ca, tmp_path)
        await link.start()
        try:
            assert await until(lambda: link.status().last_error is not None, 5)
            assert "certificate" in (link.status().last_error or "")
            assert not link.connected
        finally:
            await link.stop()

    try:
        run(main)
        # the clean stop over TLS left its death retained; read it through the plain listener
        held = retained(Endpoint("127.0.0.1", plain_port), STATE)
        assert held is not None and decode_message(held)["online"] is False
    finally:
        broker.kill()


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    settings = LinkSettings(
        host="127.0.0.1",
        port=8883,
        client_id=GW,
        topic_prefix=PREFIX,
        tls=TlsSettings(ca_file=tmp_path / "missing-ca.pem"),
    )
    with pytest.raises(ValueError, match=r"\[mqtt\] tls"):
        make_link(settings, tmp_path)


def test_settings_from_a_loaded_config(tmp_path: Path) -> None:
    from gateway.config import load_config

    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("")
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(
        """
[gateway]
id = "gw-0042"
data_dir = "var"

[mqtt]
host = "broker.example"
port = 8883
protocol = "3.1.1"
keepalive_s = 7
inflight_window = 32
username = "gw"
password = "pw"
tls = { ca_file = "ca.pem", cert_file = "client.pem", key_file = "client.key" }

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "/dev/ttyUSB0"

[[meters]]
id = "m-001"
bus = "rs485-1"
address = "000102030425"
profile = "dlt645-2007"
"""
    )
    settings = LinkSettings.from_config(load_config(config_file))
    assert (settings.host, settings.port, settings.client_id) == ("broker.example", 8883, "gw-0042")
    assert (settings.protocol, settings.keepalive_s, settings.inflight_window) == ("3.1.1", 7, 32)
    assert (settings.username, settings.password) == ("gw", "pw")
    assert settings.tls == TlsSettings(
        ca_file=tmp_path / "ca.pem",
        cert_file=tmp_path / "client.pem",
        key_file=tmp_path / "client.key",
    )
    assert settings.state_topic == "mtr/v1/gw-0042/state"
    assert settings.command_topic == "mtr/v1/gw-0042/cmd"
