"""paho's MQTT client with a cheaper QoS 1 publish, for a socket driven by an event loop.

Every reading leaves the gateway as one QoS 1 PUBLISH: a hundred a second at 100 meters polled
each second. For each, paho's ``publish`` validates and encodes the topic, makes an
``MQTTMessage`` whose ``MQTTMessageInfo`` builds a ``threading.Condition`` (a lock and a
re-entrant lock) that nobody here waits on, formats the packet byte by byte into a bytearray,
queues it, and asks the event loop to watch the socket for writability; the loop then wakes
once more only to call ``loop_write``, which sends the packet and asks the loop to stop
watching again. Two ``epoll_ctl`` changes, one more loop turn and paho's write machinery, per
message.

:class:`FastPublishClient` keeps paho's bookkeeping and wire bytes and drops the rest, for the
plain case only (QoS 1, no MQTT 5 properties, a window and a queue with room, the socket
connected, no paho thread or ``loop()`` of its own):

* the topic's validation and its length-prefixed encoding are made once per topic and kept
  (the gateway publishes to a few hundred topics, over and over);
* the ``MQTTMessage`` that paho keeps until the PUBACK is the same object with the same fields,
  its ``MQTTMessageInfo`` shares one condition per client (``_set_as_published`` then wakes
  every waiter, each of which re-checks its own message), so ``wait_for_publish`` still works;
* the packet is the bytes paho would build (``tests/test_paho_publish.py`` compares them);
* a PUBACK skips paho's walk over every message in flight in search of queued ones while
  none can be queued (only paho's own publish, with a full window, and its reconnect reset
  queue one);
* when paho has nothing queued for the socket the packet is sent at once, from ``publish``;
  what the socket does not take (a full send buffer, an error) is queued as paho queues it and
  the loop is asked to watch the socket, so paho's ``loop_write`` sends the rest or meets the
  error and runs its own connection-lost path, outside ``publish`` as before.

Anything else (QoS 0 or 2, properties, a full window, no connection) goes through paho's own
``publish``. ``publish`` must be called on the thread that drives the socket (the link's
event-loop thread), as the link already does.
"""

from __future__ import annotations

import struct
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties

from gateway.uplink.paho_client import BufferedReadClient

#: Topics whose encoding is kept; past this many the cache starts afresh (a gateway publishes
#: to a bounded set of topics, this only bounds a misbehaving caller).
TOPIC_CACHE_SIZE = 4096
#: paho's limit for a packet's remaining length (the MQTT variable-length integer's maximum).
_MAX_REMAINING = 268_435_455
_MID = struct.Struct("!H")
_PUBLISH_QOS1 = int(paho.PUBLISH) | 0x02
_WAIT_FOR_PUBACK = paho.mqtt_ms_wait_for_puback
_QUEUED = paho.mqtt_ms_queued
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS


class _SharedConditionInfo(paho.MQTTMessageInfo):
    """An ``MQTTMessageInfo`` whose condition is its client's, not one of its own per message."""

    __slots__ = ()

    def __init__(self, mid: int, condition: threading.Condition) -> None:
        # Not super().__init__: that is the per-message Condition this class exists to avoid.
        self.mid = mid
        self._published = False
        self._condition = condition
        self.rc = _SUCCESS
        self._iterpos = 0

    def _set_as_published(self) -> None:
        # Every waiter on the shared condition wakes and re-checks its own message.
        with self._condition:
            self._published = True
            self._condition.notify_all()


def remaining_length(length: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length (paho's
    ``_pack_remaining_length``)."""
    if length > _MAX_REMAINING:
        raise ValueError("Packet too large")
    out = bytearray()
    while True:
        byte = length % 128
        length //= 128
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class FastPublishClient(BufferedReadClient):
    """:class:`BufferedReadClient` with paho's plain QoS 1 publish done in fewer steps and sent
    at once when nothing is queued (module docstring)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._topics: dict[str, bytes] = {}  # topic -> its length-prefixed UTF-8 encoding
        self._info_condition = threading.Condition()
        #: False only while no message in ``_out_messages`` waits in paho's queue (state
        #: "queued"): only paho's own publish (a full window) and its reconnect reset put one
        #: there, and both set it again.
        self._queued_possible = False

    def publish(
        self,
        topic: str,
        payload: paho.PayloadType = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> paho.MQTTMessageInfo:
        if (
            qos != 1
            or not topic  # MQTT 5 allows it (a topic alias): paho's own checks decide
            or properties is not None
            or not isinstance(payload, bytes)
            or self._sock is None
            or self._thread is not None
            or self._sockpairW is not None
            or 0 < self._max_inflight_messages <= self._inflight_messages
            or 0 < self._max_queued_messages <= len(self._out_messages)
        ):
            self._queued_possible = True
            return super().publish(topic, payload, qos, retain, properties)
        topic16 = self._topics.get(topic)
        if topic16 is None:
            topic16 = self._encode_topic(topic)
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        payload_len = len(payload)
        # paho's order of checks: the payload's own limit first, the packet's when packing.
        if payload_len > _MAX_REMAINING:
            raise ValueError("Payload too large.")
        header = remaining_length(len(topic16) + 2 + v5 + payload_len)
        mid = self._mid_generate()
        out = self._out_messages
        if mid in out:  # a mid still unacknowledged 65535 messages later: paho's answer
            info = paho.MQTTMessageInfo(mid)
            info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
            return info
        info = _SharedConditionInfo(mid, self._info_condition)
        message = paho.MQTTMessage.__new__(paho.MQTTMessage)  # its __init__ makes an info
        message.timestamp = paho.time_func()
        message.state = _WAIT_FOR_PUBACK
        message.dup = False
        message.mid = mid
        message._topic = topic16[2:]
        message.payload = payload
        message.qos = 1
        message.retain = retain
        message.info = info
        message.properties = None
        with self._out_message_mutex:
            out[mid] = message
            self._inflight_messages += 1
        self._log_publish(retain, mid, topic16[2:], payload_len, v5)
        packet = b"".join((
            bytes((_PUBLISH_QOS1 | retain,)), header, topic16, _MID.pack(mid),
            b"\x00" if v5 else b"", payload,
        ))
        self._send_or_queue(packet, mid, info)
        return info

    def _update_inflight(self) -> MQTTErrorCode:
        # paho calls this on every PUBACK and walks every message in flight looking for queued
        # ones to send; with none queued (the gateway's window stays below paho's) that walk
        # finds nothing.
        if not self._queued_possible:
            return _SUCCESS
        rc = super()._update_inflight()
        if all(m.state != _QUEUED for m in self._out_messages.values()):
            self._queued_possible = False
        return rc

    def _messages_reconnect_reset_out(self) -> None:
        super()._messages_reconnect_reset_out()
        self._queued_possible = True

    def _encode_topic(self, topic: str) -> bytes:
        """Validate ``topic`` as paho's ``publish`` does and keep its encoding."""
        encoded = topic.encode("utf-8")
        self._raise_for_invalid_topic(encoded)
        if len(self._topics) >= TOPIC_CACHE_SIZE:
            self._topics.clear()
        topic16 = _MID.pack(len(encoded)) + encoded
        self._topics[topic] = topic16
        return topic16

    def _log_publish(self, retain: bool, mid: int, topic: bytes, size: int, v5: bool) -> None:
        """paho's debug line for a sent PUBLISH (the text of ``_send_publish``)."""
        if not self.logs_debug():
            return
        if size == 0:
            if v5:
                self._easy_log(
                    paho.MQTT_LOG_DEBUG,
                    "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s', properties=%s (NULL payload)",
                    False, 1, retain, mid, topic, None)
            else:
                self._easy_log(paho.MQTT_LOG_DEBUG,
                               "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s' (NULL payload)",
                               False, 1, retain, mid, topic)
        elif v5:
            self._easy_log(
                paho.MQTT_LOG_DEBUG,
                "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s', properties=%s, ... (%d bytes)",
                False, 1, retain, mid, topic, None, size)
        else:
            self._easy_log(paho.MQTT_LOG_DEBUG,
                           "Sending PUBLISH (d%d, q%d, r%d, m%d), '%s', ... (%d bytes)",
                           False, 1, retain, mid, topic, size)

    def _send_or_queue(self, packet: bytes, mid: int, info: paho.MQTTMessageInfo) -> None:
        """Send ``packet`` now if nothing waits before it; queue what is left as paho does."""
        sent = 0
        if not self._out_packet:
            try:
                sent = self._sock_send(packet)  # registers the writer itself on a full buffer
            except (OSError, ValueError, AttributeError):
                # A dead socket: paho's loop_write meets the error again when the loop finds
                # the socket writable and runs its connection-lost path there.
                sent = 0
            if sent > 0:
                with self._msgtime_mutex:
                    self._last_msg_out = paho.time_func()
            if sent >= len(packet):
                return
        self._out_packet.append({
            "command": paho.PUBLISH, "mid": mid, "qos": 1, "pos": sent,
            "to_process": len(packet) - sent, "packet": packet, "info": info,
        })
        self._call_socket_register_write()
