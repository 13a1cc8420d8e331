"""paho's MQTT client with its socket reads buffered: one ``recv`` per burst of packets.

paho reads every packet with a ``recv(1)`` for the command byte, one ``recv(1)`` per byte of the
remaining length and a ``recv`` of the rest, then one more ``recv(1)`` that fails with
``BlockingIOError`` once the socket is empty: four system calls and an exception for each PUBACK,
a hundred PUBACKs a second at 100 meters polled each second. Here the first read of a burst takes
up to 64 KiB in one call and the rest are served from that buffer; the packets paho sees, and
their order, are the same.

Bytes left in the buffer are invisible to the event loop's selector: the link calls ``loop_read``
again while :attr:`BufferedReadClient.buffered` says there are some (as it already did for TLS's
own pending bytes). The buffer belongs to one socket: a new connection never reads what the old
one left.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho

#: Bytes asked of the socket when the buffer is empty (a PUBACK is 4 bytes, a command a few
#: hundred).
RECV_CHUNK = 65536


class BufferedReadClient(paho.Client):
    """:class:`paho.mqtt.client.Client` reading its socket through a buffer (module docstring).

    Overrides paho's ``_sock_recv``, the one method its reader calls for bytes (paho 2.x);
    ``tests/test_paho_buffered.py`` checks it against paho's own packet reader."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx_sock: object = None
        self._rx = b""
        self._rx_pos = 0

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
