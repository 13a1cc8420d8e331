"""paho's MQTT client with its socket reads buffered: one ``recv`` per burst of packets.

paho reads every packet with a ``recv(1)`` for the command byte, one ``recv(1)`` per byte of the
remaining length and a ``recv`` of the rest, then one more ``recv(1)`` that fails with
``BlockingIOError`` once the socket is empty: four system calls and an exception for each PUBACK,
a hundred PUBACKs a second at 100 meters polled each second. Here the first read of a burst takes
up to 64 KiB in one call and the rest are served from that buffer; the packets paho sees, and
their order, are the same. A short packet (remaining length < 128: every PUBACK) lying whole in
the buffer skips paho's byte-by-byte reader too: its handler gets the ``_in_packet`` that reader
would have assembled from three buffered reads.

A PUBACK with no reason code and no properties (2 bytes: the packet id; what a broker sends for
every accepted message) is handled without paho's decoder, which builds a ``ReasonCode`` (with
its own copy of the table of reason names) and a ``Properties`` object for each one: the
listener gets one shared "Success" reason code and one shared empty property set, the values
paho's decoder would have made. Any other PUBACK, and every PUBCOMP, goes through paho.

Bytes left in the buffer are invisible to the event loop's selector: the link calls ``loop_read``
again while :attr:`BufferedReadClient.buffered` says there are some (as it already did for TLS's
own pending bytes). The buffer belongs to one socket: a new connection never reads what the old
one left.

paho formats a debug line for every packet it sends or receives (``_easy_log``), through the
logging machinery even when nothing takes debug lines: four calls a message, about 2 % of the
daemon's CPU at 100 meters polled each second. A debug line is dropped here, before that, when
no ``on_log`` callback is set and the logger paho was given does not take debug; warnings and
errors, and every line when either wants them, go through paho's ``_easy_log`` unchanged.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import LogLevel, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: Bytes asked of the socket when the buffer is empty (a PUBACK is 4 bytes, a command a few
#: hundred).
RECV_CHUNK = 65536


#: What paho's decoder makes of a 2-byte PUBACK, made once: shared by every such PUBACK, so
#: the ``on_publish`` callback must not change them (the link only reads ``is_failure``).
PUBACK_SUCCESS: ReasonCode = ReasonCode(PacketTypes.PUBACK)
PUBACK_NO_PROPERTIES: Properties = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_MID = struct.Struct("!H")


class BufferedReadClient(paho.Client):
    """:class:`paho.mqtt.client.Client` reading its socket through a buffer, and handling a plain
    PUBACK without its decoder (module docstring).

    Overrides paho's ``_sock_recv``, the one method its reader calls for bytes, its reader
    ``_packet_read`` for a whole short packet, and ``_handle_pubackcomp`` (paho 2.x);
    ``tests/test_paho_buffered.py`` checks them against paho's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx_sock: object = None
        self._rx = b""
        self._rx_pos = 0

    def _easy_log(self, level: LogLevel, fmt: str, *args: Any) -> None:
        if level is LogLevel.MQTT_LOG_DEBUG and not self.logs_debug():
            return
        super()._easy_log(level, fmt, *args)

    def logs_debug(self) -> bool:
        """Whether a debug line would reach anyone: an ``on_log`` callback, or a logger that
        takes debug (asked each time: a logger's level may change while the client runs)."""
        logger = self._logger
        return self._on_log is not None or (
            logger is not None and logger.isEnabledFor(logging.DEBUG))

    @property
    def buffered(self) -> bool:
        """Whether bytes read from the current socket wait in the buffer."""
        return self._rx_pos < len(self._rx) and self._rx_sock is self._sock

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        if sock is not self._rx_sock:  # a new connection (or none): drop the old one's bytes
            self._rx_sock, self._rx, self._rx_pos = sock, b"", 0
        pos = self._rx_pos
        rx = self._rx
        if pos >= len(rx):
            data: bytes = super()._sock_recv(max(bufsize, RECV_CHUNK))  # raises as paho's does
            if len(data) <= bufsize:  # all of it wanted (or EOF, b""): nothing kept
                return data
            self._rx, pos, rx = data, 0, data
        end = pos + bufsize
        if end >= len(rx):
            self._rx, self._rx_pos = b"", 0
            return rx[pos:] if pos else rx
        self._rx_pos = end
        return rx[pos:end]

    def _packet_read(self) -> MQTTErrorCode:
        # A packet with a one-byte remaining length (< 128 bytes: every PUBACK, SUBACK,
        # PINGRESP, a short command) found whole at the start of the buffer is handed to paho's
        # handler at once, with the _in_packet paho's reader would have built from three
        # buffered reads; anything else (a longer packet, one split across reads, bytes of a
        # packet already taken) goes through paho's reader.
        if self._in_packet["command"] == 0:
            if self._rx_pos >= len(self._rx) or self._rx_sock is not self._sock:
                rc = self._refill()
                if rc is not None:
                    return rc
            rx, pos = self._rx, self._rx_pos
            if len(rx) - pos >= 2 and rx[pos + 1] < 128:
                length = rx[pos + 1]
                end = pos + 2 + length
                if end <= len(rx):
                    if end >= len(rx):
                        self._rx, self._rx_pos = b"", 0
                    else:
                        self._rx_pos = end
                    return self._handle_whole(rx[pos], length, rx[pos + 2:end])
        return super()._packet_read()

    def _refill(self) -> MQTTErrorCode | None:
        """Read what the socket holds into the empty buffer; paho's outcome for a failed or
        empty read (paho's reader would have met it reading the command byte), else None."""
        try:
            data: bytes = super()._sock_recv(RECV_CHUNK)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except TimeoutError as err:
            self._easy_log(paho.MQTT_LOG_ERR, "timeout on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        except OSError as err:
            self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        self._rx_sock, self._rx, self._rx_pos = self._sock, data, 0
        return None

    def _handle_whole(self, command: int, length: int, body: bytes) -> MQTTErrorCode:
        """What paho's reader does with a packet it has read whole (the end of its
        ``_packet_read``)."""
        self._in_packet = {
            "command": command, "have_remaining": 1, "remaining_count": [length],
            "remaining_mult": 128, "remaining_length": length, "packet": bytearray(body),
            "to_process": 0, "pos": 0,
        }
        if length:
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {
            "command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0,
        }
        with self._msgtime_mutex:
            self._last_bytes_received = paho.time_func()
        return rc

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        (mid,) = _MID.unpack(packet)
        self._easy_log(paho.MQTT_LOG_DEBUG, "Received %s (Mid: %d)", cmd, mid)
        with self._out_message_mutex:
            if mid in self._out_messages:
                # Only inform the client the message has been sent once (as paho does).
                return self._do_on_publish(mid, PUBACK_SUCCESS, PUBACK_NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
