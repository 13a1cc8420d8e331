"""The fast QoS 1 publish (gateway/uplink/paho_publish.py): the same bytes on the wire and the
same bookkeeping as paho's own publish, sent at once when nothing is queued, queued behind what
is, and completed by the PUBACK as paho completes it."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.uplink.paho_publish import FastPublishClient, remaining_length

PROTOCOLS = [paho.MQTTv311, paho.MQTTv5]

#: (topic, payload size, retain): remaining lengths on both sides of the 1-, 2- and 3-byte
#: encodings, an empty payload, a non-ASCII topic, a retained message.
CASES = [
    ("gw/1/m/a", 10, False),
    ("gw/1/m/a", 0, False),
    ("gw/ü/state", 5, True),
    ("t", 122, False),
    ("t", 123, False),
    ("t", 124, False),
    ("long/" + "x" * 300, 16_000, False),
    ("t", 16_377, False),
    ("t", 16_380, False),
    ("t", 300_000, True),
]


class Registrations:
    """Counts the writer (un)registrations paho asks of the event loop."""

    def __init__(self) -> None:
        self.registered = 0
        self.unregistered = 0

    def register(self, _c: Any, _u: Any, _s: Any) -> None:
        self.registered += 1

    def unregister(self, _c: Any, _u: Any, _s: Any) -> None:
        self.unregistered += 1


def make(cls: type[paho.Client], protocol: MQTTProtocolVersion,
         ) -> tuple[paho.Client, socket.socket, Registrations]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client = cls(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(100)
    regs = Registrations()
    client.on_socket_register_write = regs.register
    client.on_socket_unregister_write = regs.unregister
    client._sock = ours  # what paho's connect would have set
    return client, theirs, regs


def flush(client: paho.Client) -> None:
    """What the link's writer callback does while paho has packets queued."""
    for _ in range(1000):
        if not client.want_write():
            return
        client.loop_write()
    raise AssertionError("paho kept packets queued")


def deliver(client: paho.Client, peer: socket.socket) -> bytes:
    """Everything written, the loop writing while the peer reads (a packet may be larger than
    the socket's buffer)."""
    got = bytearray()
    for _ in range(10_000):
        got += read_all(peer)
        if not client.want_write():
            return bytes(got + read_all(peer))
        client.loop_write()
    raise AssertionError("paho kept packets queued")


def read_all(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        chunks.append(chunk)


def payload(size: int, salt: int) -> bytes:
    return bytes((salt + i) % 251 for i in range(size))


def message_fields(client: paho.Client) -> list[tuple[Any, ...]]:
    return [(m.mid, m.topic, bytes(m.payload), m.qos, m.retain, m.dup, m.state, m.properties,
             m.info.mid, m.info.rc, m.info.is_published())
            for m in client._out_messages.values()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_same_bytes_and_bookkeeping_as_paho(protocol: MQTTProtocolVersion) -> None:
    streams = []
    states = []
    for cls in (paho.Client, FastPublishClient):
        client, theirs, _regs = make(cls, protocol)
        infos = []
        for i, (topic, size, retain) in enumerate(CASES):
            infos.append(client.publish(topic, payload(size, i), qos=1, retain=retain))
            streams_part = deliver(client, theirs)  # paho's own client needs the loop
            assert streams_part, "nothing was written"
            streams.append((cls, streams_part))
        assert [(info.rc, info.mid) for info in infos] == [
            (MQTTErrorCode.MQTT_ERR_SUCCESS, n) for n in range(1, len(CASES) + 1)]
        states.append((message_fields(client), client._inflight_messages))
    plain = [data for cls, data in streams if cls is paho.Client]
    fast = [data for cls, data in streams if cls is FastPublishClient]
    assert fast == plain
    assert states[1] == states[0]


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152,
                                    268_435_455])
def test_remaining_length_is_pauls_encoding(length: int) -> None:
    expected = paho.Client(CallbackAPIVersion.VERSION2)._pack_remaining_length(bytearray(), length)
    assert remaining_length(length) == bytes(expected)


def test_remaining_length_too_large() -> None:
    with pytest.raises(ValueError, match="Packet too large"):
        remaining_length(268_435_456)


def test_sent_from_publish_without_asking_the_loop() -> None:
    client, theirs, regs = make(FastPublishClient, paho.MQTTv311)
    info = client.publish("a/b", b"xyz", qos=1)
    assert read_all(theirs) == b"\x32\x0a\x00\x03a/b\x00\x01xyz"
    assert not client.want_write()
    assert (regs.registered, regs.unregistered) == (0, 0)
    assert info.mid in client._out_messages and client._inflight_messages == 1


def test_queued_behind_packets_already_waiting_and_sent_in_order() -> None:
    client, theirs, regs = make(FastPublishClient, paho.MQTTv311)
    client.subscribe("cmd", qos=1)  # paho queues it and asks the loop to write it
    assert client.want_write() and regs.registered == 1
    client.publish("a", b"1", qos=1)
    assert read_all(theirs) == b""  # nothing overtakes the SUBSCRIBE
    flush(client)
    data = read_all(theirs)
    subscribe = b"\x82\x08\x00\x01\x00\x03cmd\x01"
    assert data == subscribe + b"\x32\x06\x00\x01a\x00\x021"
    assert regs.unregistered == 1


def test_a_full_send_buffer_leaves_the_rest_to_the_loop() -> None:
    client, theirs, regs = make(FastPublishClient, paho.MQTTv311)
    big = payload(200_000, 7)  # more than a socketpair's buffer takes at once
    sent = []
    for i in range(20):
        client.publish("bulk", big, qos=1)
        sent.append(bytes((0x32,)) + remaining_length(2 + 4 + 2 + len(big))
                    + b"\x00\x04bulk" + struct.pack("!H", i + 1) + big)
    assert client.want_write() and regs.registered == 1
    assert deliver(client, theirs) == b"".join(sent)
    assert regs.unregistered == 1


def test_a_dead_socket_is_left_to_pahos_write_path() -> None:
    client, theirs, regs = make(FastPublishClient, paho.MQTTv311)
    lost: list[bool] = []
    client.on_disconnect = lambda *_a: lost.append(True)
    theirs.close()
    info = client.publish("a", b"1", qos=1)  # no exception, no callback from inside publish
    assert info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert client.want_write() and regs.registered == 1 and not lost
    client.loop_write()  # the loop found the socket writable: paho meets the error
    assert lost == [True]


def test_puback_completes_the_message_as_paho_does() -> None:
    client, theirs, _regs = make(FastPublishClient, paho.MQTTv311)
    acked: list[int] = []
    client.on_publish = lambda _c, _u, mid, _r, _p: acked.append(mid)
    info = client.publish("a", b"1", qos=1)
    waiter_saw: list[bool] = []

    def wait() -> None:
        info.wait_for_publish(5.0)
        waiter_saw.append(info.is_published())

    waiter = threading.Thread(target=wait)
    waiter.start()
    theirs.sendall(b"\x40\x02" + struct.pack("!H", info.mid))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    waiter.join(5.0)
    assert acked == [info.mid] and waiter_saw == [True]
    assert not client._out_messages and client._inflight_messages == 0


@pytest.mark.parametrize("kwargs", [
    {"qos": 0}, {"qos": 2}, {"qos": 1, "payload": bytearray(b"p")}, {"qos": 1, "payload": "s"},
])
def test_other_publishes_go_through_paho(kwargs: dict[str, Any]) -> None:
    fast, fast_peer, _ = make(FastPublishClient, paho.MQTTv311)
    plain, plain_peer, _ = make(paho.Client, paho.MQTTv311)
    args = {"payload": b"p", **kwargs}
    for client in (fast, plain):
        client.publish("x/y", **args)
        flush(client)
    assert read_all(fast_peer) == read_all(plain_peer)
    assert message_fields(fast) == message_fields(plain)


def test_properties_go_through_paho() -> None:
    client, theirs, _ = make(FastPublishClient, paho.MQTTv5)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = 60
    client.publish("p", b"v", qos=1, properties=props)
    flush(client)
    assert read_all(theirs) == b"\x32\x0c\x00\x01p\x00\x01\x05\x02\x00\x00\x00\x3cv"


def puback(peer: socket.socket, client: paho.Client, mid: int) -> None:
    peer.sendall(b"\x40\x02" + struct.pack("!H", mid))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_full_window_queues_in_paho_and_pubacks_release_the_queue(
        protocol: MQTTProtocolVersion) -> None:
    wire = []
    for cls in (paho.Client, FastPublishClient):
        client, theirs, _ = make(cls, protocol)
        client.max_inflight_messages_set(2)
        infos = [client.publish("a", bytes((49 + i,)), qos=1) for i in range(5)]
        assert [info.rc for info in infos] == [MQTTErrorCode.MQTT_ERR_SUCCESS] * 5
        assert [client._out_messages[i.mid].state for i in infos] == (
            [paho.mqtt_ms_wait_for_puback] * 2 + [paho.mqtt_ms_queued] * 3)
        steps = [deliver(client, theirs)]
        for info in infos:  # each PUBACK lets one queued message out, in order
            puback(theirs, client, info.mid)
            steps.append(deliver(client, theirs))
        assert not client._out_messages and client._inflight_messages == 0
        if isinstance(client, FastPublishClient):
            assert not client._queued_possible
        # The queue is empty again: new messages take the direct path once more.
        client.publish("a", b"z", qos=1)
        steps.append(deliver(client, theirs))
        wire.append(steps)
    assert wire[1] == wire[0]
    assert wire[0][1] != b"" and wire[0][4] == b""  # the 3rd left on the 1st PUBACK, none on the 4th


def test_invalid_topics_are_refused() -> None:
    client, _theirs, _ = make(FastPublishClient, paho.MQTTv311)
    with pytest.raises(ValueError, match="wildcards"):
        client.publish("a/+", b"x", qos=1)
    with pytest.raises(ValueError, match="Invalid topic"):
        client.publish("", b"x", qos=1)
