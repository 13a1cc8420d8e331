"""A fleet publisher that costs the box almost nothing: prebuilt MQTT 5 PUBLISH packets on raw
sockets, for bench/bench_central_mqtt.py.

The bench stands 1,000 remote gateways on the same two cores as the broker, the workers and
PostgreSQL. With paho, publishing was a Python call, a lock and a packet build per message, and
the fleet took a share of the cores the consumer is measured on. In reality those gateways are
other machines; what the bench must keep is what the broker and the consumer see: real MQTT 5
connections, QoS 1 PUBLISH packets through a real mosquitto, and every PUBACK counted (a
message counts as published only when the broker acknowledged it with a success code). So every
packet, packet identifier included, is encoded once before the clock starts, and each
connection writes them in large ``sendall`` chunks, never more in flight than the broker's
receive maximum (its CONNACK), while a reader thread counts the PUBACKs.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence

__all__ = ["RawPublisher", "connect", "publish_packet", "publish_prebuilt"]

#: MQTT 5 CONNACK property identifiers → value size in bytes (-1: UTF-8 string or binary data,
#: -2: string pair), to walk the properties to Receive Maximum (0x21).
_PROPS = {0x11: 4, 0x21: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x12: -1, 0x22: 2, 0x1F: -1, 0x26: -2,
          0x28: 1, 0x29: 1, 0x2A: 1, 0x13: 2, 0x1A: -1, 0x1C: -1, 0x15: -1, 0x16: -1}
#: Packet identifiers cycle through 1..65535; the in-flight window stays far below that, so an
#: identifier is reused only long after its PUBACK.
_IDS = 65535


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def publish_packet(topic: str, payload: bytes, packet_id: int, *, retain: bool = False) -> bytes:
    """One MQTT 5 PUBLISH at QoS 1 (no properties)."""
    body = _string(topic) + struct.pack(">H", packet_id) + b"\x00" + payload
    return bytes([0x33 if retain else 0x32]) + _varint(len(body)) + body


def _read_packet(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """The next packet from ``sock`` (``buf`` holds bytes already read): (type byte, body)."""
    while True:
        if len(buf) >= 2:
            length, shift, i = 0, 0, 1
            while i < len(buf):
                length |= (buf[i] & 0x7F) << shift
                shift += 7
                i += 1
                if not buf[i - 1] & 0x80:
                    break
            else:
                i = -1
            if i > 0 and len(buf) >= i + length:
                kind, body = buf[0], bytes(buf[i:i + length])
                del buf[:i + length]
                return kind, body
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk


def connect(port: int, client_id: str, host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    """An MQTT 5 session (clean start, no keep-alive): the socket and the broker's receive
    maximum (65535 when it sends none)."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _string("MQTT") + bytes([5, 0x02]) + struct.pack(">H", 0) + b"\x00" + _string(client_id)
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    kind, ack = _read_packet(sock, bytearray())
    if kind != 0x20 or len(ack) < 2 or ack[1] >= 0x80:
        raise ConnectionError(f"CONNACK refused: {ack!r}")
    receive_max, i, length, shift = _IDS, 2, 0, 0
    while i < len(ack):  # the properties' varint length
        length |= (ack[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not ack[i - 1] & 0x80:
            break
    props, end = i, i + length
    while props < end:
        ident, size = ack[props], _PROPS.get(ack[props], 0)
        props += 1
        if ident == 0x21:
            receive_max = struct.unpack_from(">H", ack, props)[0]
        if size >= 0:
            props += size
        else:
            for _ in range(-size):
                props += 2 + struct.unpack_from(">H", ack, props)[0]
    return sock, receive_max


class RawPublisher:
    """One connection publishing prebuilt packets; ``acked`` counts successful PUBACKs."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock, receive_max = connect(port, client_id)
        self.window = min(receive_max, 1000)
        self.acked = 0
        self.refused = 0
        self._sent = 0
        self._cond = threading.Condition()

    def run(self, packets: Sequence[bytes], chunk: int = 200) -> None:
        """Send every packet (their ids must cycle 1..65535 in order) and wait for all PUBACKs."""
        reader = threading.Thread(target=self._read, args=(len(packets),), daemon=True)
        reader.start()
        i = 0
        while i < len(packets):
            with self._cond:
                while self._sent - (self.acked + self.refused) >= self.window:
                    self._cond.wait(5)
                room = self.window - (self._sent - self.acked - self.refused)
            n = min(room, chunk, len(packets) - i)
            self.sock.sendall(b"".join(packets[i:i + n]))
            with self._cond:
                self._sent += n
            i += n
        reader.join()
        self.sock.sendall(b"\xe0\x00")  # DISCONNECT, normal
        self.sock.close()

    def _read(self, expected: int) -> None:
        buf = bytearray()
        while self.acked + self.refused < expected:
            kind, body = _read_packet(self.sock, buf)
            if kind >> 4 != 4:  # only PUBACKs are expected on a publishing session
                continue
            ok = len(body) < 3 or body[2] < 0x80  # reason code omitted means success
            with self._cond:
                if ok:
                    self.acked += 1
                else:
                    self.refused += 1
                self._cond.notify()


def prebuild(messages: Sequence[tuple[str, bytes]], connections: int,
             retain: bool = False) -> list[list[bytes]]:
    """The packets of each connection (message i goes to connection i % connections), with
    their packet identifiers, encoded once."""
    out: list[list[bytes]] = [[] for _ in range(connections)]
    for i, (topic, payload) in enumerate(messages):
        lane = out[i % connections]
        lane.append(publish_packet(topic, payload, len(lane) % _IDS + 1, retain=retain))
    return out


def publish_prebuilt(port: int, lanes: Sequence[Sequence[bytes]], name: str = "fleet") -> tuple[float, int]:
    """Publish each lane of prebuilt packets on its own connection: (seconds until every
    PUBACK arrived, messages the broker acknowledged with success). Raises if any was refused."""
    publishers = [RawPublisher(port, f"{name}-{i}") for i in range(len(lanes))]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=p.run, args=(lane,)) for p, lane in zip(publishers, lanes, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    refused = sum(p.refused for p in publishers)
    if refused:
        raise RuntimeError(f"the broker refused {refused} PUBLISH packets")
    return seconds, sum(p.acked for p in publishers)
