"""The worker's receive path (central/paho_receive.py) against paho's own, on the same bytes.

Both clients read a socketpair that the test writes MQTT packets into, cut at many places; what
each hands the application (topic, payload, packet id, QoS, in order), what it writes back (a
PUBREC for QoS 2) and its return codes must be the same. The fast path must also actually be
taken for the plain PUBLISH packets (else this would compare paho with itself).
"""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

import paho.mqtt as paho_package
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from central.paho_receive import RECV_CHUNK, FastPublish, ReceiveClient

V5 = paho.MQTTv5
V311 = paho.MQTTv311


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 7, props: bytes = b"",
            v5: bool = True, retain: bool = False, dup: bool = False) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if v5:
        body += varint(len(props)) + props
    body += payload
    header = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    return bytes([header]) + varint(len(body)) + body


PINGRESP = b"\xd0\x00"


def mixed_stream(v5: bool) -> bytes:
    """Plain PUBLISHes around everything the fast path leaves to paho."""
    packets = [publish(b"P/gw1/reads/m1", b"\xa1\x00\x02", v5=v5)]
    packets += [publish(f"P/gw{i}/reads/m{i}".encode(), bytes([i]) * (i % 40), mid=100 + i,
                        v5=v5) for i in range(60)]
    packets += [
        publish(b"P/gw1/health", b"h", qos=0, v5=v5),
        publish(b"P/gw1/state", b"birth", retain=True, dup=True, mid=9, v5=v5),
        PINGRESP,
        publish(b"P/gw2/reads/m2", b"qos2", qos=2, mid=11, v5=v5),
        publish(b"P/\xff\xfe/reads/x", b"bad utf-8", mid=12, v5=v5),
        publish(b"P/gw3/reads/m3", b"x" * 300, mid=13, v5=v5),  # a 2-byte remaining length
        publish(b"P/gw4/reads/m4", b"", mid=14, v5=v5),
        publish(b"P/gw5/reads/m5", b"y" * (3 * RECV_CHUNK), mid=15, v5=v5),  # many reads
        publish(b"P/gw6/reads/m6", b"after", mid=16, v5=v5),
    ]
    if v5:  # a payload format indicator, a user property: paho decodes those
        packets.insert(5, publish(b"P/gw7/reads/m7", b"props", mid=17, props=b"\x01\x01"))
        packets.insert(9, publish(b"P/gw8/reads/m8", b"user", mid=18,
                                  props=b"\x26\x00\x01k\x00\x01v"))
    return b"".join(packets)


class Harness:
    """One client reading one end of a socketpair, everything it hands over in one list."""

    def __init__(self, cls: type[paho.Client], protocol: int) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.theirs.setblocking(False)
        self.client = cls(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
        self.got: list[tuple[str | None, bytes, int, int, str]] = []
        self.client.on_message = self._on_message
        if isinstance(self.client, ReceiveClient):
            self.client.on_publishes = self._on_publishes
        self.client._sock = self.ours  # what connect() would have set

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic: str | None = msg.topic
        except UnicodeDecodeError:
            topic = None
        self.got.append((topic, bytes(msg.payload), msg.mid, msg.qos, "paho"))

    def _on_publishes(self, batch: list[FastPublish]) -> None:
        self.got += [(t, p, mid, qos, "fast") for t, p, mid, qos in batch]

    def feed(self, data: bytes) -> list[MQTTErrorCode]:
        """Write ``data``, then read until the socket is drained; the return codes."""
        self.theirs.sendall(data)
        codes = []
        for _ in range(5000):
            rc = self.client.loop_read()
            codes.append(rc)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._readable():
                break
        return codes

    def _readable(self) -> bool:
        try:
            return bool(self.ours.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False

    def written(self) -> bytes:
        try:
            return self.theirs.recv(1 << 20)
        except (BlockingIOError, ConnectionResetError):  # nothing, or closed on a protocol error
            return b""

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


def run(cls: type[paho.Client], protocol: int, stream: bytes, cuts: list[int]) -> tuple[
        list[tuple[str | None, bytes, int, int, str]], bytes, set[MQTTErrorCode]]:
    h = Harness(cls, protocol)
    codes: set[MQTTErrorCode] = set()
    last = 0
    for cut in [*cuts, len(stream)]:
        codes |= set(h.feed(stream[last:cut]))
        last = cut
    out = h.got, h.written(), codes
    h.close()
    return out


def plain(got: list[tuple[str | None, bytes, int, int, str]]) -> list[tuple[Any, ...]]:
    return [g[:4] for g in got]


@pytest.mark.parametrize("protocol", [V5, V311])
@pytest.mark.parametrize("seed", range(6))
def test_same_messages_in_the_same_order_as_paho(protocol: int, seed: int) -> None:
    stream = mixed_stream(protocol == V5)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), 40)) if seed else []
    ref, ref_written, ref_codes = run(paho.Client, protocol, stream, cuts)
    got, written, codes = run(ReceiveClient, protocol, stream, cuts)
    assert plain(got) == plain(ref)
    assert written == ref_written and written  # the QoS 2 PUBREC
    assert codes == ref_codes == {MQTTErrorCode.MQTT_ERR_SUCCESS}
    fast = [g for g in got if g[4] == "fast"]
    if protocol == V5:
        assert len(fast) == 61 + 1 + 1 + 1 + 1 + 1 + 1  # every plain PUBLISH
        assert all(g[4] == "paho" for g in got if g[1] in (b"props", b"user", b"qos2"))
    else:
        assert not fast  # MQTT 3.1.1 stays paho's


def test_every_cut_of_a_few_packets() -> None:
    stream = b"".join([publish(b"a/b", b"one"), PINGRESP, publish(b"a/c", b"two", qos=0),
                       publish(b"a/d", b"three", qos=2, mid=3)])
    for cut in range(1, len(stream)):
        ref = run(paho.Client, V5, stream, [cut])
        got = run(ReceiveClient, V5, stream, [cut])
        assert plain(got[0]) == plain(ref[0]) and got[1:] == ref[1:], cut


@pytest.mark.parametrize("bad", [
    b"\x30\xff\xff\xff\xff\x01",  # a fifth remaining-length byte
    b"\x32\x03\x00\x09a",  # the topic runs past the packet
    b"\x00\x00",  # packet type 0
])
def test_malformed_input_ends_the_connection_as_paho_does(bad: bytes) -> None:
    stream = publish(b"a/b", b"ok") + bad + publish(b"a/c", b"never")
    ref_got, _, ref_codes = run(paho.Client, V5, stream, [])
    got, _, codes = run(ReceiveClient, V5, stream, [])
    assert plain(got) == plain(ref_got) == [("a/b", b"ok", 7, 1)]
    assert MQTTErrorCode.MQTT_ERR_PROTOCOL in codes and MQTTErrorCode.MQTT_ERR_PROTOCOL in ref_codes


def test_a_closed_connection_is_reported_and_a_new_one_starts_clean() -> None:
    h = Harness(ReceiveClient, V5)
    stream = publish(b"a/b", b"first") + publish(b"a/c", b"cut short")
    h.feed(stream[:-4])
    h.theirs.close()
    assert h.client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert plain(h.got) == [("a/b", b"first", 7, 1)]
    # A new socket: the old one's partial packet is not glued to its bytes.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    h.client._sock = ours
    h.client._state = paho._ConnectionState.MQTT_CS_CONNECTED
    theirs.sendall(publish(b"a/d", b"fresh"))
    assert h.client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert plain(h.got)[-1] == ("a/d", b"fresh", 7, 1)
    ours.close()
    theirs.close()
    h.ours.close()


def test_filtered_callbacks_logging_and_other_paho_versions_use_paho(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = publish(b"a/b", b"x")
    h = Harness(ReceiveClient, V5)
    h.client.message_callback_add("a/#", lambda _c, _u, m: h.got.append(
        (m.topic, bytes(m.payload), m.mid, m.qos, "filtered")))
    h.feed(stream)
    assert h.got == [("a/b", b"x", 7, 1, "filtered")]
    h.close()
    h = Harness(ReceiveClient, V5)
    h.client.enable_logger()
    h.feed(stream)
    assert h.got == [("a/b", b"x", 7, 1, "paho")]
    h.close()
    monkeypatch.setattr(paho_package, "__version__", "2.3.0")
    h = Harness(ReceiveClient, V5)
    assert not h.client.fast_receive
    h.feed(stream)
    assert h.got == [("a/b", b"x", 7, 1, "paho")]
    h.close()


@pytest.mark.parametrize("logging_on", [False, True])
def test_ack_many_writes_what_acks_one_by_one_write(logging_on: bool) -> None:
    tokens = [(1, 1), (2, 1), (3, 0), (4, 2), (5, 1), (65535, 1), (7, 2)]
    written = []
    for many in (False, True):
        h = Harness(ReceiveClient, V5)
        if logging_on:
            h.client.enable_logger()
        if many:
            assert isinstance(h.client, ReceiveClient)
            h.client.ack_many(tokens)
        else:
            for mid, qos in tokens:
                h.client.ack(mid, qos)
        written.append(h.written())
        h.close()
    assert written[0] == written[1]
    assert written[0] == (b"\x40\x02\x00\x01\x40\x02\x00\x02\x70\x02\x00\x04"
                          b"\x40\x02\x00\x05\x40\x02\xff\xff\x70\x02\x00\x07")
