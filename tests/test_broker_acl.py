"""The shipped broker templates (configs/mosquitto/) against a real mosquitto: every action of
the gateway, operator and central identities, allowed and refused, and the clients that must
not get in at all (issue 16, broker security).

Clients speak MQTT 5, so a refused publish comes back as PUBACK "Not authorized" instead of
being dropped in silence (MQTT 3.1.1). mosquitto 2.0 grants every SUBSCRIBE and filters what
it delivers by the ACL's read rules, so a refused read is shown by a message that never
arrives. A witness holding the central identity subscribes to everything and confirms that a
refused publish reached nobody.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.config import CentralConfig, MqttSettings
from central.worker import subscriptions
from tests.secure_broker import Client, Pki, make_pki, secure_broker

P = "mtr/v1"
#: PUBACK reasons: MQTT 5 says "No matching subscribers" (0x10) for an accepted message nobody
#: subscribed to; the witness subscribes to everything under P, so accepted means "Success".
OK, DENIED = "Success", "Not authorized"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Pki, Client]]:
    root = tmp_path_factory.mktemp("acl")
    pki = make_pki(root / "pki")
    broker = secure_broker(root / "broker", pki)
    broker.start()
    witness = Client(broker, pki, "central/witness")
    assert witness.connect()
    assert witness.subscribe(f"{P}/#") == "Granted QoS 1"
    try:
        yield broker, pki, witness
    finally:
        witness.close()
        broker.kill()


def _client(world: tuple[object, Pki, Client], cn: str | None, **kw: object) -> Client:
    broker, pki, _ = world
    client = Client(broker, pki, cn, **kw)  # type: ignore[arg-type]
    assert client.connect(), f"{cn} could not connect: {client.connack}"
    return client


def _arrives(client: Client, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.received(topic, payload):
            return True
        time.sleep(0.02)
    return False


def _never(client: Client, topic: str, payload: bytes, settle: float = 1.0) -> bool:
    time.sleep(settle)
    return not client.received(topic, payload)


def _payload(tag: str) -> bytes:
    return f"{tag}-{time.monotonic_ns()}".encode()


GATEWAY_OWN = ["state", "reads/m-001", "groups/tq-1", "alarms", "health", "cmd/result"]


@pytest.mark.parametrize("suffix", GATEWAY_OWN)
def test_gateway_publishes_under_its_own_topics(world: tuple[object, Pki, Client],
                                                suffix: str) -> None:
    gw = _client(world, "gw-1")
    try:
        body = _payload("own")
        assert gw.publish(f"{P}/gw-1/{suffix}", body) == OK
        assert _arrives(world[2], f"{P}/gw-1/{suffix}", body)
    finally:
        gw.close()


@pytest.mark.parametrize("topic", [
    *(f"{P}/gw-2/{s}" for s in GATEWAY_OWN),  # another gateway's topics
    f"{P}/gw-1/cmd",                           # commands, even to itself
    f"{P}/gw-1/reads",                         # not a topic of the layout
    f"{P}/gw-1/reads/m-001/extra",
    f"{P}/gw-1/debug",
    "other/gw-1/reads/m-001",                 # outside the prefix
])
def test_gateway_cannot_publish_anywhere_else(world: tuple[object, Pki, Client], topic: str) -> None:
    gw = _client(world, "gw-1")
    try:
        body = _payload("forged")
        assert gw.publish(topic, body) == DENIED
        if topic.startswith(P):
            assert _never(world[2], topic, body, settle=0.3)
    finally:
        gw.close()


def test_gateway_reads_only_its_own_command_topic(world: tuple[object, Pki, Client]) -> None:
    gw1, gw2, op = _client(world, "gw-1"), _client(world, "gw-2"), _client(world, "operator/op-1")
    try:
        for f in (f"{P}/gw-1/cmd", f"{P}/gw-2/cmd", f"{P}/+/cmd", f"{P}/#", "#"):
            gw1.subscribe(f)  # granted or refused, what matters is what gets delivered
        gw2.subscribe(f"{P}/gw-2/cmd")
        own, other = _payload("cmd-1"), _payload("cmd-2")
        assert op.publish(f"{P}/gw-1/cmd", own) == OK
        assert op.publish(f"{P}/gw-2/cmd", other) == OK
        assert _arrives(gw1, f"{P}/gw-1/cmd", own)
        assert _arrives(gw2, f"{P}/gw-2/cmd", other)  # delivered to its owner...
        assert _never(gw1, f"{P}/gw-2/cmd", other)     # ...and to nobody else
        # Nothing else reaches a gateway either: another gateway's reads, results, state.
        reads = _payload("reads-2")
        assert gw2.publish(f"{P}/gw-2/reads/m-001", reads) == OK
        assert gw2.publish(f"{P}/gw-2/state", reads) == OK
        assert _never(gw1, f"{P}/gw-2/reads/m-001", reads)
        assert not [t for t, _ in gw1.messages if t != f"{P}/gw-1/cmd"]
    finally:
        for c in (gw1, gw2, op):
            c.close()


def test_operator_publishes_commands_and_reads_results(world: tuple[object, Pki, Client]) -> None:
    op, gw = _client(world, "operator/op-1"), _client(world, "gw-1")
    try:
        for f in (f"{P}/+/cmd/result", f"{P}/+/state", f"{P}/+/reads/+", f"{P}/+/alarms",
                  f"{P}/+/cmd"):
            op.subscribe(f)
        result, state, reads, command = (_payload(k) for k in ("result", "state", "reads", "cmd"))
        assert gw.publish(f"{P}/gw-1/cmd/result", result) == OK
        assert gw.publish(f"{P}/gw-1/state", state) == OK
        assert gw.publish(f"{P}/gw-1/reads/m-001", reads) == OK
        assert gw.publish(f"{P}/gw-1/alarms", reads) == OK
        assert op.publish(f"{P}/gw-2/cmd", command) == OK
        assert _arrives(op, f"{P}/gw-1/cmd/result", result)
        assert _arrives(op, f"{P}/gw-1/state", state)  # births: is the gateway online?
        # An operator reads no meter data and no alarms, nor anyone's commands (its own
        # included): nothing but results and states.
        assert _never(op, f"{P}/gw-1/reads/m-001", reads)
        assert {t for t, _ in op.messages} <= {f"{P}/gw-1/cmd/result", f"{P}/gw-1/state",
                                               f"{P}/gw-2/state"}
        for topic in (f"{P}/gw-1/reads/m-001", f"{P}/gw-1/state", f"{P}/gw-1/cmd/result",
                      f"{P}/gw-1/alarms", f"{P}/gw-1/health"):
            body = _payload("op-forged")
            assert op.publish(topic, body) == DENIED, topic
            assert _never(world[2], topic, body, settle=0.2)
    finally:
        op.close()
        gw.close()


def test_an_operator_the_acl_does_not_name_can_do_nothing(world: tuple[object, Pki, Client]) -> None:
    stranger = _client(world, "operator/op-9")  # signed by the CA, but not in the ACL
    try:
        assert stranger.publish(f"{P}/gw-1/cmd") == DENIED
    finally:
        stranger.close()


def test_central_reads_everything_through_its_shared_subscription(
        world: tuple[object, Pki, Client]) -> None:
    config = CentralConfig(Path("central.toml"), "sqlite://", MqttSettings(topic_prefix=P))
    central, gw = _client(world, "central/central-1", client_id="central-w1"), _client(world, "gw-1")
    try:
        for f in subscriptions(config):  # the real worker's filters, $share/central/... included
            assert central.subscribe(f) == "Granted QoS 1", f
        sent = {}
        for suffix in GATEWAY_OWN:
            sent[suffix] = _payload(suffix)
            assert gw.publish(f"{P}/gw-1/{suffix}", sent[suffix], retain=suffix == "state") == OK
        for suffix, body in sent.items():
            assert _arrives(central, f"{P}/gw-1/{suffix}", body), suffix
    finally:
        central.close()
        gw.close()


def test_central_publishes_commands_and_nothing_else(world: tuple[object, Pki, Client]) -> None:
    central, gw = _client(world, "central/central-1", client_id="central-w2"), _client(world, "gw-1")
    try:
        gw.subscribe(f"{P}/gw-1/cmd")
        replay = _payload("replay")
        assert central.publish(f"{P}/gw-1/cmd", replay) == OK
        assert _arrives(gw, f"{P}/gw-1/cmd", replay)
        assert _arrives(world[2], f"{P}/gw-1/cmd", replay)  # central reads commands too
        for suffix in GATEWAY_OWN:
            body = _payload("central-forged")
            assert central.publish(f"{P}/gw-1/{suffix}", body) == DENIED, suffix
            assert _never(world[2], f"{P}/gw-1/{suffix}", body, settle=0.2)
    finally:
        central.close()
        gw.close()


def test_gateway_patterns_give_other_identities_nothing_a_consumer_reads(
        world: tuple[object, Pki, Client]) -> None:
    """mosquitto applies ``pattern`` lines to every user. For CN operator/op-1 the gateway
    pattern P/%u/reads/+ allows P/operator/op-1/reads/+ — a topic one level too deep for every
    P/+/... filter the central worker uses, so it reaches no consumer."""
    config = CentralConfig(Path("central.toml"), "sqlite://", MqttSettings(topic_prefix=P))
    central = _client(world, "central/central-1", client_id="central-w3")
    op = _client(world, "operator/op-1")
    try:
        for f in subscriptions(config):
            central.subscribe(f)
        body = _payload("pattern")
        assert op.publish(f"{P}/operator/op-1/reads/m-001", body) == OK
        assert op.publish(f"{P}/operator/op-1/state", body) == OK
        assert _arrives(world[2], f"{P}/operator/op-1/reads/m-001", body)  # accepted, yet...
        assert _never(central, f"{P}/operator/op-1/reads/m-001", body)
        assert not [t for t, _ in central.messages if t.startswith(f"{P}/operator/")]
    finally:
        central.close()
        op.close()


def test_will_only_on_the_gateways_own_state_topic(world: tuple[object, Pki, Client]) -> None:
    forged, real = _payload("forged-will"), _payload("real-will")
    liar = _client(world, "gw-1", will=(f"{P}/gw-2/state", forged))
    honest = _client(world, "gw-2", will=(f"{P}/gw-2/state", real))
    for client in (liar, honest):  # drop the TCP connection without DISCONNECT: wills fire
        client.client.loop_stop()
        sock = client.client.socket()
        assert sock is not None
        sock.close()
    assert _arrives(world[2], f"{P}/gw-2/state", real, timeout=10)
    assert not world[2].received(f"{P}/gw-2/state", forged)


def test_client_id_of_another_identity_takes_nothing_over(world: tuple[object, Pki, Client]) -> None:
    gw = _client(world, "gw-1")
    intruder = _client(world, "operator/op-1", client_id="gw-1")
    try:
        time.sleep(1.0)
        assert not gw.disconnected.is_set()  # the broker renamed the intruder to its CN
        gw.subscribe(f"{P}/gw-1/cmd")
        intruder.subscribe(f"{P}/gw-1/cmd")
        body = _payload("cmd")
        assert intruder.publish(f"{P}/gw-1/cmd", body) == OK
        assert _arrives(gw, f"{P}/gw-1/cmd", body)
        assert _never(intruder, f"{P}/gw-1/cmd", body)
    finally:
        gw.close()
        intruder.close()


@pytest.mark.parametrize("cn", [None, "rogue/gw-1"], ids=["no-certificate", "untrusted-ca"])
def test_client_without_a_trusted_certificate_is_refused_at_tls(
        world: tuple[object, Pki, Client], cn: str | None) -> None:
    broker, pki, _ = world
    client = Client(broker, pki, cn)  # type: ignore[arg-type]
    try:
        assert not client.connect(timeout=5)
        assert client.connack is None  # no CONNACK: the TLS handshake failed, MQTT never began
    finally:
        client.close()
    log = broker.log_text()  # type: ignore[attr-defined]
    expected = "peer did not return a certificate" if cn is None else "certificate verify failed"
    assert expected in log


def test_plain_tcp_is_refused(world: tuple[object, Pki, Client]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    broker = world[0]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    acked: list[object] = []
    client.on_connect = lambda *a: acked.append(a[3])
    client.connect(broker.host, broker.port)  # type: ignore[attr-defined]
    client.loop_start()
    try:
        time.sleep(2.0)
        assert not [r for r in acked if not r.is_failure]  # type: ignore[attr-defined]
    finally:
        client.loop_stop()

