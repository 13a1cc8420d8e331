"""The MQTT 5 shared-subscription source: a worker as one member of ``$share/<group>/…``.

The broker hands each message to one member of the group. The worker acknowledges a batch's
messages (paho's ``manual_ack``) only after its transaction commits; a worker killed mid-batch
has acknowledged nothing of it, and its persistent session (``--worker`` names it;
``session_expiry_s`` keeps it) gets the messages again when it comes back.

The state topic is subscribed to outside the share, by every worker: births are retained, and a
broker does not send retained messages to shared subscriptions.

Threads: paho's network thread only queues messages into a bounded inbox; the worker's thread
takes batches from it, acknowledges and publishes. The client is
:class:`central.paho_receive.ReceiveClient`: plain PUBLISH packets come in a read at a time
(:meth:`MqttSource._on_publishes`), anything else through paho's ``on_message``; both queue the
same :class:`~central.sources.Delivery` (token: packet id and QoS, what acknowledging needs).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from central.config import CentralConfig
from central.paho_receive import FastPublish, ReceiveClient
from central.paho_tuning import share_property_tables
from central.sources import Delivery
from central.sources.inbox import Inbox

__all__ = ["MqttSource", "subscriptions"]

log = logging.getLogger("edge-central")

#: Topic kinds a worker consumes through the share (DESIGN §4), below ``P/+/``.
SHARED_FILTERS = ("reads/+", "groups/+", "alarms", "health", "cmd/result")


def subscriptions(config: CentralConfig) -> list[str]:
    """The topic filters one worker subscribes to."""
    p, group = config.mqtt.topic_prefix, config.mqtt.share_group
    return [f"$share/{group}/{p}/+/{f}" for f in SHARED_FILTERS] + [f"{p}/+/state"]


class MqttSource:
    """paho client with ``manual_ack``; see the module docstring."""

    def __init__(self, config: CentralConfig, name: str, stop: threading.Event) -> None:
        self.config = config
        self.name = name
        self._stop = stop
        # Bounded: a worker facing a backlog holds at most two batches. A broker that sends
        # beyond the receive maximum (mosquitto 2.0 to shared subscribers, measured by
        # bench/bench_central_mqtt.py) then waits on TCP instead of filling this process.
        self._inbox: Inbox[Delivery] = Inbox(2 * config.batch_max)
        self._connected = threading.Event()
        self._client = self._make_client()

    @property
    def client_id(self) -> str:
        return f"edge-central-{self.config.mqtt.share_group}-{self.name}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _make_client(self) -> ReceiveClient:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        share_property_tables()  # paho rebuilt constant tables per PUBLISH received
        client = ReceiveClient(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                               protocol=mqtt.MQTTv5, manual_ack=True)
        client.reconnect_delay_set(1, 10)
        tls = self.config.mqtt.tls
        if tls is not None:  # the files were loaded once already when the config was read
            client.tls_set(ca_certs=None if tls.ca_file is None else str(tls.ca_file),
                           certfile=None if tls.cert_file is None else str(tls.cert_file),
                           keyfile=None if tls.key_file is None else str(tls.key_file))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publishes = self._on_publishes
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        from paho.mqtt.subscribeoptions import SubscribeOptions

        client.subscribe([(f, SubscribeOptions(qos=1)) for f in subscriptions(self.config)])
        self._connected.set()
        log.info("worker %s connected (session present: %s)", self.name,
                 getattr(flags, "session_present", None))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """A message paho decoded itself (one with properties, QoS 2…): queued like the
        others."""
        self._hand_over([Delivery(msg.topic, bytes(msg.payload), (msg.mid, msg.qos))])

    def _on_publishes(self, batch: list[FastPublish]) -> None:
        self._hand_over([Delivery(topic, payload, (mid, qos))
                         for topic, payload, mid, qos in batch])

    def _hand_over(self, deliveries: list[Delivery]) -> None:
        """Queue ``deliveries`` for the worker's thread, waiting while the inbox is full (paho's
        network thread stops reading meanwhile). Stopping drops what is left unacknowledged:
        the broker keeps it for this worker's session."""
        done = 0
        while done < len(deliveries) and not self._stop.is_set():
            done += self._inbox.put_many(deliveries[done:], timeout=0.5)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       props: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("worker %s lost the broker (%s); reconnecting", self.name, reason)

    def start(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        mq = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = mq.session_expiry_s
        # Ack-after-commit bounds what the broker sends ahead: three batches in flight — one
        # being stored, one being decoded (central/worker.py), one arriving; with fewer, a
        # worker idled waiting for the broker (bench_central_mqtt, docs/performance.md).
        props.ReceiveMaximum = min(3 * self.config.batch_max, 65535)
        self._client.connect_async(mq.host, mq.port, keepalive=mq.keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()

    def take(self, max_n: int, wait_s: float) -> list[Delivery]:
        return self._inbox.take(max_n, 0.2, wait_s)

    def ack(self, batch: list[Delivery]) -> None:
        self._client.ack_many([d.token for d in batch])

    def publish(self, topic: str, payload: bytes) -> bool:
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=1)
        return bool(info.rc == 0)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
