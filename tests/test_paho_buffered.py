"""The buffered paho client (gateway/uplink/paho_client.py): paho's own packet reader sees the
same packets in the same order from far fewer socket reads, split packets still complete, and a
new connection never reads the bytes an old one left in the buffer."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.uplink.paho_client import BufferedReadClient


class CountingSocket:
    """A socket whose ``recv`` calls are counted (paho calls nothing else to read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, bufsize: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(bufsize)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 0."""
    body = struct.pack("!H", len(topic)) + topic.encode() + payload
    assert len(body) < 128
    return bytes((0x30, len(body))) + body


def drain(client: paho.Client) -> MQTTErrorCode:
    """What the link does when its socket is readable. paho reads at most one packet per
    message in flight per ``loop_read`` (here: one); the plain client is called until the
    socket is empty, the buffered one while its buffer holds bytes (as the link does)."""
    rc = client.loop_read()
    if isinstance(client, BufferedReadClient):
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.buffered:
            rc = client.loop_read()
        return rc
    for _ in range(50):
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            break
        rc = client.loop_read()
    return rc


def make(cls: type[paho.Client]) -> tuple[paho.Client, CountingSocket, socket.socket, list[bytes]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client = cls(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    got: list[bytes] = []
    client.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    counting = CountingSocket(ours)
    client._sock = counting  # type: ignore[assignment]  # what paho's connect would have set
    return client, counting, theirs, got


@pytest.mark.parametrize("cls", [paho.Client, BufferedReadClient])
def test_same_packets_in_the_same_order_with_split_packets(cls: type[paho.Client]) -> None:
    client, _counting, theirs, got = make(cls)
    packets = [publish_packet("c", f"m{i}".encode()) for i in range(5)]
    stream = b"".join(packets)
    cut = len(stream) - 3  # the last packet arrives in two segments
    theirs.sendall(stream[:cut])
    assert drain(client) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"m0", b"m1", b"m2", b"m3"]
    theirs.sendall(stream[cut:])
    assert drain(client) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert not getattr(client, "buffered", False)


def long_publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 0 with a two-byte remaining length."""
    body = struct.pack("!H", len(topic)) + topic.encode() + payload
    assert 128 <= len(body) < 16384
    return bytes((0x30, 0x80 | (len(body) & 0x7F), len(body) >> 7)) + body


@pytest.mark.parametrize("cls", [paho.Client, BufferedReadClient])
def test_short_long_and_empty_packets_cut_anywhere(cls: type[paho.Client]) -> None:
    """Whole short packets take the buffered client's shortcut, a long one and one cut in two
    go through paho's reader: the same messages either way, wherever the stream is cut."""
    pingresp = b"\xd0\x00"
    stream = (publish_packet("c", b"s1") + long_publish_packet("c", b"L" * 300) + pingresp
              + publish_packet("c", b"s2") + pingresp + publish_packet("c", b"s3"))
    expected = [b"s1", b"L" * 300, b"s2", b"s3"]
    for cut in range(len(stream) + 1):
        client, _counting, theirs, got = make(cls)
        for part in (stream[:cut], stream[cut:]):
            if part:
                theirs.sendall(part)
                assert drain(client) == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert got == expected, cut
        assert client._in_packet["command"] == 0  # nothing half-read left behind
        theirs.close()


def test_whole_short_packets_skip_pahos_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = paho.Client._packet_read

    def counted(self: paho.Client) -> MQTTErrorCode:
        calls.append(self._in_packet["command"])
        return original(self)

    monkeypatch.setattr(paho.Client, "_packet_read", counted)
    client, counting, theirs, got = make(BufferedReadClient)
    theirs.sendall(publish_packet("c", b"a") + long_publish_packet("c", b"L" * 200)
                   + publish_packet("c", b"b"))
    drain(client)
    assert got == [b"a", b"L" * 200, b"b"]
    assert calls == [0]  # paho's reader only for the long one
    assert counting.recvs == 1  # the whole burst in one read


def test_one_read_per_burst_instead_of_four_per_packet() -> None:
    plain, plain_sock, plain_peer, plain_got = make(paho.Client)
    buffered, buffered_sock, buffered_peer, buffered_got = make(BufferedReadClient)
    burst = b"".join(publish_packet("c", bytes((i,))) for i in range(20))
    for peer in (plain_peer, buffered_peer):
        peer.sendall(burst)
    drain(plain)
    drain(buffered)
    assert plain_got == buffered_got == [bytes((i,)) for i in range(20)]
    assert plain_sock.recvs >= 3 * 20  # command byte, length byte, body: per packet
    assert buffered_sock.recvs <= 2  # the burst, then the empty socket


def test_a_new_connection_does_not_read_what_the_old_one_left() -> None:
    client, _counting, theirs, got = make(BufferedReadClient)
    assert isinstance(client, BufferedReadClient)
    theirs.sendall(publish_packet("c", b"old") + publish_packet("c", b"left"))
    assert client.loop_read(max_packets=1) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [b"old"] and client.buffered  # the second packet waits in the buffer
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    client._sock = CountingSocket(ours)  # type: ignore[assignment]  # reconnected
    assert not client.buffered
    peer.sendall(publish_packet("c", b"new"))
    drain(client)
    assert got == [b"old", b"new"]


def test_end_of_stream_is_seen_after_the_buffered_packets() -> None:
    client, _counting, theirs, got = make(BufferedReadClient)
    theirs.sendall(publish_packet("c", b"a") + publish_packet("c", b"b"))
    theirs.close()
    drain(client)
    assert got == [b"a", b"b"]
    # The closed socket stays readable: the loop's next call sees the end of the stream.
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST


def puback_outcomes(cls: type[paho.Client], protocol: int, packets: list[bytes]) -> list[tuple[object, ...]]:
    """What ``on_publish`` hears for each PUBACK in ``packets`` (variable header and
    properties, after the fixed header), with QoS 1 messages 1..9 in flight."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client = cls(CallbackAPIVersion.VERSION2, protocol=protocol)
    heard: list[tuple[object, ...]] = []
    client.on_publish = lambda _c, _u, mid, reason, props: heard.append(
        (mid, reason.value, str(reason), reason.is_failure, reason.packetType,
         props.packetType, props.json()))
    client._sock = CountingSocket(ours)  # type: ignore[assignment]
    for mid in range(1, 10):
        message = paho.MQTTMessage(mid=mid)
        message.qos = 1
        message.info = paho.MQTTMessageInfo(mid)
        client._out_messages[mid] = message
    client._inflight_messages = 9
    for body in packets:
        theirs.sendall(bytes((0x40, len(body))) + body)
    drain(client)
    for _ in range(len(packets)):
        client.loop_read()
    theirs.close()
    ours.close()
    return heard


def test_plain_pubacks_reach_the_listener_as_paho_decodes_them() -> None:
    packets = [
        b"\x00\x01",  # success, nothing more: the shortcut
        b"\x00\x02\x00",  # success with an explicit reason code: paho's decoder
        b"\x00\x03\x87",  # not authorized
        b"\x00\x04\x10\x00",  # no matching subscribers, empty properties
        b"\x00\x01",  # a duplicate for a mid no longer in flight: no callback
        b"\x00\x09",
    ]
    for protocol in (paho.MQTTv5, paho.MQTTv311):
        sent = packets if protocol == paho.MQTTv5 else [p for p in packets if len(p) == 2]
        want = puback_outcomes(paho.Client, protocol, sent)
        got = puback_outcomes(BufferedReadClient, protocol, sent)
        assert got == want and len(got) == len(sent) - 1


def test_debug_lines_are_dropped_only_when_nobody_takes_them(caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    """paho's per-packet debug lines skip the logging machinery when its logger does not take
    debug and no on_log is set; warnings always reach it, and debug reaches whoever asks."""
    client = BufferedReadClient(CallbackAPIVersion.VERSION2)
    logger = __import__("logging").getLogger("test.paho.debug")
    client.enable_logger(logger)
    logger.setLevel("INFO")
    with caplog.at_level("INFO", logger="test.paho.debug"):
        client._easy_log(paho.MQTT_LOG_DEBUG, "debug %d", 1)
        client._easy_log(paho.MQTT_LOG_WARNING, "warning %d", 2)
    assert [r.getMessage() for r in caplog.records] == ["warning 2"]
    assert not client.logs_debug()
    caplog.clear()
    logger.setLevel("DEBUG")  # a level changed while the client runs is honoured at once
    with caplog.at_level("DEBUG", logger="test.paho.debug"):
        client._easy_log(paho.MQTT_LOG_DEBUG, "debug %d", 3)
    assert [r.getMessage() for r in caplog.records] == ["debug 3"]
    logger.setLevel("INFO")
    seen: list[tuple[object, str]] = []
    client.on_log = lambda _c, _u, level, buf: seen.append((level, buf))
    client._easy_log(paho.MQTT_LOG_DEBUG, "debug %d", 4)
    assert seen == [(paho.MQTT_LOG_DEBUG, "debug 4")]
    client.disable_logger()
    client.on_log = None
    client._easy_log(paho.MQTT_LOG_DEBUG, "debug %d", 5)  # nobody: nothing, no error
    assert not client.logs_debug()
