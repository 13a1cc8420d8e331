"""A worker's MQTT receive path: whole socket reads, and PUBLISH packets without paho's objects.

paho 2.x reads a packet with a ``recv(1)`` for its first byte, one ``recv(1)`` per byte of the
remaining length and one ``recv`` for the rest, and its loop reads one packet per ``select``
when nothing of its own is in flight (a worker publishes almost nothing): for every message
received, a ``select`` and three or four system calls. It then builds an ``MQTTMessage``, which
builds an ``MQTTMessageInfo`` with its own ``threading.Condition``, a ``Properties`` object,
runs the topic matcher for filtered callbacks and takes two locks. With py-spy on a worker in
bench/bench_central_mqtt.py that receive thread was ~38 % of the worker's samples, the
``MQTTMessageInfo`` alone ~9 % (docs/performance.md, issue 15).

:class:`ReceiveClient` reads up to 64 KiB a ``recv``, cuts the bytes into packets itself, and
hands the plain PUBLISH packets of one read — QoS 0 or 1 (with ``manual_ack``), no properties, a
topic that is UTF-8 — to :attr:`ReceiveClient.on_publishes` as one list of
``(topic, payload, packet id, qos)``, in arrival order. Every other packet (CONNACK, SUBACK,
PINGRESP, DISCONNECT, a PUBLISH with properties or at QoS 2, anything malformed) goes through
paho's own handler exactly as paho's reader would have handed it over, after the PUBLISHes
before it; the bytes of a packet not complete yet wait for the next read. Acknowledging stays
the caller's, after the commit: :meth:`ReceiveClient.ack_many` queues a batch's PUBACKs as one
write where paho's ``ack`` queues a packet and wakes its loop through a socket per message.

It relies on paho internals (``_packet_handle``, ``_in_packet``, ``_sock_recv``,
``_loop_rc_handle``…), so it is only switched on for the paho versions it was tested with
(:data:`TESTED_PAHO`) and when those attributes are there; otherwise it is paho's client,
unchanged. tests/central/test_paho_receive.py feeds the same bytes to paho's own client and
to this one and compares what comes out.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import paho.mqtt as paho_package
import paho.mqtt.client as paho
from paho.mqtt.enums import LogLevel, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

if TYPE_CHECKING:
    from paho.mqtt.client import _InPacket

__all__ = ["RECV_CHUNK", "TESTED_PAHO", "FastPublish", "ReceiveClient"]

#: Bytes asked of the socket a read (a v2 reads message is a ~100-byte packet).
RECV_CHUNK = 65536
#: paho versions whose internals this was written against and tested with (version prefixes).
TESTED_PAHO = ("2.2.",)
#: One PUBLISH taken by the fast path: topic, payload, packet id (0 at QoS 0), QoS.
FastPublish = tuple[str, bytes, int, int]

_PUBLISH = 0x30
_PUBACK = struct.Struct("!BBH")  # a PUBACK without reason code: type, length 2, packet id
#: paho's clock for keepalive bookkeeping (``time.monotonic`` where the platform has it).
_clock = getattr(paho, "time_func", time.monotonic)
_INTERNALS = ("_packet_handle", "_in_packet", "_sock_recv", "_loop_rc_handle", "_manual_ack",
              "_packet_queue", "_in_callback_mutex", "_msgtime_mutex", "_logger", "_on_log",
              "_protocol", "_easy_log")


def _in_packet(command: int = 0, length_bytes: bytes = b"",
               body: bytes = b"") -> _InPacket:
    """paho's reader state for a packet read whole (by default: between packets, as its
    ``_packet_read`` resets it)."""
    return {"command": command, "have_remaining": 1 if command else 0,
            "remaining_count": list(length_bytes), "remaining_mult": 128 ** len(length_bytes),
            "remaining_length": len(body), "packet": bytearray(body), "to_process": 0,
            "pos": 0}


class ReceiveClient(paho.Client):
    """:class:`paho.mqtt.client.Client` with the receive path of the module docstring.

    ``on_publishes`` (set it before connecting) gets the fast path's PUBLISHes; while it is
    None, or paho is not a tested version, or a filtered message callback or paho's logging is
    in use, every PUBLISH goes to paho's ``on_message`` as usual."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_publishes: Callable[[list[FastPublish]], None] | None = None
        self._filtered = False
        version = str(getattr(paho_package, "__version__", ""))
        #: Whether this client reads through :meth:`loop_read` below at all.
        self.fast_receive = (version.startswith(TESTED_PAHO)
                             and all(hasattr(self, name) for name in _INTERNALS))
        self._rx_sock: object = None
        self._chunks: list[bytes] = []  # bytes read, not yet a whole packet
        self._have = 0  # their length
        self._need = 0  # the length of the packet they start, once its header is in

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered = True  # paho's topic matcher decides who gets a PUBLISH from now on
        super().message_callback_add(sub, callback)

    def ack_many(self, tokens: Sequence[tuple[int, int]]) -> None:
        """Acknowledge ``(packet id, QoS)`` pairs, in order, as :meth:`ack` would one by one:
        the PUBACKs of a run of QoS 1 messages queued as one write (paho queues a packet and
        wakes its loop through a socket per :meth:`ack`: a system call each), a QoS 2 one's
        PUBCOMP through :meth:`ack`, QoS 0 nothing."""
        if not (self.fast_receive and self._manual_ack and self._logger is None
                and self._on_log is None):
            for mid, qos in tokens:
                self.ack(mid, qos)
            return
        run = bytearray()
        for mid, qos in tokens:
            if qos == 1:
                run += _PUBACK.pack(paho.PUBACK, 2, mid)
            elif qos == 2:
                if run:
                    self._packet_queue(paho.PUBACK, bytes(run), 0, 1)
                    run = bytearray()
                self.ack(mid, qos)
        if run:
            self._packet_queue(paho.PUBACK, bytes(run), 0, 1)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if not self.fast_receive:
            return super().loop_read(max_packets)
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._rx_sock:  # a new connection: what the old one left is not its
            self._rx_sock, self._chunks, self._have, self._need = sock, [], 0, 0
        try:
            data = self._sock_recv(max(RECV_CHUNK, self._need - self._have))
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except TimeoutError as err:
            self._easy_log(LogLevel.MQTT_LOG_ERR, "timeout on socket: %s", err)
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        except OSError as err:
            self._easy_log(LogLevel.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = _clock()
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:  # a large packet still arriving: no copy yet
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            data = b"".join(self._chunks)
            self._chunks, self._have, self._need = [], 0, 0
        rc, used, need = self._consume(data, sock)
        if used < len(data) and self._sock is sock:
            rest = data[used:]
            self._chunks, self._have, self._need = [rest], len(rest), need
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return self._loop_rc_handle(rc)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _consume(self, buf: bytes, sock: object) -> tuple[MQTTErrorCode, int, int]:
        """Handle the whole packets at the start of ``buf``: (rc, bytes used, length of the
        partial packet left, 0 while its header is incomplete)."""
        deliver = self.on_publishes
        fast_ok = (deliver is not None and not self._filtered and self._logger is None
                   and self._on_log is None and self._protocol == MQTTProtocolVersion.MQTTv5)
        manual = self._manual_ack
        fast: list[FastPublish] = []
        n = len(buf)
        pos = 0
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while pos < n:
            header = buf[pos]
            i = pos + 1
            length = 0
            mult = 1
            while True:  # the remaining length: at most 4 bytes (paho refuses a 5th)
                if i >= n:
                    self._flush(deliver, fast)
                    return rc, pos, 0
                if i - pos > 4:
                    self._flush(deliver, fast)
                    return MQTTErrorCode.MQTT_ERR_PROTOCOL, pos, 0
                byte = buf[i]
                i += 1
                length += (byte & 127) * mult
                mult *= 128
                if byte < 128:
                    break
            end = i + length
            if end > n:
                self._flush(deliver, fast)
                return rc, pos, end - pos
            if fast_ok and header & 0xF0 == _PUBLISH:
                qos = (header >> 1) & 3
                if (qos == 0 or (qos == 1 and manual)) and length >= 2:
                    start = i + 2 + ((buf[i] << 8) | buf[i + 1])
                    props = start + 2 * qos  # the property length's byte
                    if start > i + 2 and props < end and buf[props] == 0:
                        try:
                            topic = buf[i + 2:start].decode()
                        except UnicodeDecodeError:
                            pass  # paho's path: it names such topics in its own way
                        else:
                            mid = (buf[start] << 8) | buf[start + 1] if qos else 0
                            fast.append((topic, buf[props + 1:end], mid, qos))
                            pos = end
                            continue
            self._flush(deliver, fast)
            rc = self._paho_handle(header, buf[pos + 1:i], buf[i:end])
            pos = end
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is not sock:
                return rc, n, 0  # as paho's reader: what followed on this connection is dropped
        self._flush(deliver, fast)
        return rc, pos, 0

    def _flush(self, deliver: Callable[[list[FastPublish]], None] | None,
               fast: list[FastPublish]) -> None:
        if fast and deliver is not None:
            batch = fast[:]
            fast.clear()
            with self._in_callback_mutex:  # as paho holds it around on_message
                deliver(batch)

    def _paho_handle(self, header: int, length_bytes: bytes, body: bytes) -> MQTTErrorCode:
        """One whole packet through paho's handler, with the reader state paho's
        ``_packet_read`` would have built for it."""
        self._in_packet = _in_packet(header, length_bytes, body)
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(LogLevel.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _in_packet()
        return rc
