"""The AMQP 0-9-1 source: workers as competing consumers of one durable queue on RabbitMQ.

What a utility running RabbitMQ deploys. The gateways publish MQTT 3.1.1 to RabbitMQ's MQTT
plugin, which routes every message through the ``amq.topic`` exchange with the topic as routing
key (``/`` and ``.`` swapped: ``mtr/v1/gw-1/reads/fast`` → ``mtr.v1.gw-1.reads.fast``). RabbitMQ
3.x has neither MQTT 5 nor shared subscriptions, so the worker group is a queue instead: every
worker declares the same durable queue (``[amqp] queue``) and its bindings — the kinds a share
would carry *and* ``P/*/state``: the plugin's retained-message store is node-local and not
offered to AMQP consumers, so births reach the workers through the queue like everything else
(one worker gets each; the bindings it declares are shared through the database). The queue is
made highly available by the broker's policy, not here: on a 2-node cluster a classic mirrored
queue (``ha-mode all``, ``ha-sync-mode automatic``; docs/central.md) — a quorum queue needs a
majority and cannot lose one node of two.

Acknowledgement: one ``basic.ack`` with ``multiple`` for a batch's highest delivery tag after
the worker's transaction commits (a batch is always the oldest deliveries not yet acknowledged
on the channel). ``basic.qos`` prefetch bounds what the broker sends ahead. A connection that
drops takes its unacknowledged deliveries with it: the broker re-queues them, the same or another
worker stores them again, and the database counts them as duplicates.

Failover: ``[amqp] urls`` is an ordered list of nodes; the source connects to the first that
answers, starting with the one it used last, and on any connection or channel error drops what it
had not acknowledged and tries the list again (1 s, growing to 10 s, between full rounds).

Replay commands go out through ``amq.topic`` with the converted routing key, persistent and
with publisher confirms; the plugin delivers them to the gateway's MQTT subscription.

pika's ``BlockingConnection`` is not thread-safe, and needs none here: the worker's one thread
takes, acknowledges and publishes; heartbeats are answered while it waits for messages.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from central.config import CentralConfig
from central.errors import ConfigError
from central.sources import Delivery
from central.sources.mqtt import SHARED_FILTERS

__all__ = ["AmqpSource", "amqp_to_mqtt", "binding_keys", "mqtt_to_amqp"]

log = logging.getLogger("edge-central")

_SWAP = str.maketrans({"/": ".", ".": "/"})


def mqtt_to_amqp(topic: str) -> str:
    """RabbitMQ's MQTT plugin's routing key for an MQTT topic (or filter: ``+`` → ``*``)."""
    return topic.translate(_SWAP).replace("+", "*")


def amqp_to_mqtt(key: str) -> str:
    """The MQTT topic of a routing key the plugin built (the inverse of :func:`mqtt_to_amqp`)."""
    return key.translate(_SWAP)


def binding_keys(prefix: str) -> list[str]:
    """The queue's binding keys: what a shared subscription would carry, and the births."""
    return [mqtt_to_amqp(f"{prefix}/+/{f}") for f in (*SHARED_FILTERS, "state")]


class AmqpSource:
    """See the module docstring."""

    def __init__(self, config: CentralConfig, name: str, stop: threading.Event) -> None:
        try:
            import pika  # noqa: F401
        except ImportError:
            raise ConfigError(f"{config.path}: source.kind = \"amqp\" needs the pika package: "
                              "pip install 'edge-gateway[amqp]'") from None
        assert config.amqp is not None  # the config loader requires [amqp] for this kind
        # pika logs every refused connection as an ERROR with a traceback, and its channel
        # book-keeping at INFO; each failure it raises is logged here as one line instead.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        self.config = config
        self.settings = config.amqp
        self.name = name
        self._stop = stop
        self._at = 0  # index of the URL to try first
        self._conn: Any = None
        self._consume: Any = None
        self._publish: Any = None
        self._generation = 0  # deliveries of an earlier connection cannot be acknowledged
        self._pending: list[Delivery] = []
        self._failed_rounds = 0
        self._next_try = 0.0
        self._lost_at: float | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    def start(self) -> None:
        self._connect()

    def _connect(self) -> bool:
        import pika

        urls = self.settings.urls
        for i in range(len(urls)):
            at = (self._at + i) % len(urls)
            params = pika.URLParameters(urls[at])
            params.heartbeat = self.settings.heartbeat_s
            params.connection_attempts = 1
            params.socket_timeout = 5
            params.blocked_connection_timeout = 60
            params.client_properties = {"connection_name":
                                        f"edge-central-{self.settings.queue}-{self.name}"}
            conn = None
            try:
                conn = pika.BlockingConnection(params)
                self._open_channels(conn)
            except pika.exceptions.AMQPError as exc:
                if conn is not None and conn.is_open:
                    conn.close()
                log.warning("worker %s: cannot use %s: %r", self.name, _where(urls[at]), exc)
                continue
            self._conn, self._at = conn, at
            self._generation += 1
            self._failed_rounds = 0
            took = "" if self._lost_at is None else \
                f" after {time.monotonic() - self._lost_at:.1f} s without a broker"
            self._lost_at = None
            log.info("worker %s connected (amqp %s, queue %s)%s", self.name, _where(urls[at]),
                     self.settings.queue, took)
            return True
        self._failed_rounds += 1
        self._next_try = time.monotonic() + min(10.0, 2.0 ** (self._failed_rounds - 1))
        return False

    def _open_channels(self, conn: Any) -> None:
        s, prefix = self.settings, self.config.mqtt.topic_prefix
        ch = conn.channel()
        ch.queue_declare(s.queue, durable=True)
        for key in binding_keys(prefix):
            ch.queue_bind(s.queue, s.exchange, routing_key=key)
        ch.basic_qos(prefetch_count=min(2 * self.config.batch_max, 65535))
        generation = self._generation + 1
        ch.basic_consume(s.queue, lambda _c, method, _p, body: self._pending.append(
            Delivery(amqp_to_mqtt(method.routing_key), body, (generation, method.delivery_tag))))
        pub = conn.channel()
        pub.confirm_delivery()
        self._consume, self._publish = ch, pub

    def _lost(self, exc: BaseException) -> None:
        if self._conn is not None and not self._stop.is_set():
            log.warning("worker %s lost the broker (%r); reconnecting", self.name, exc)
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        conn, self._conn, self._consume, self._publish = self._conn, None, None, None
        self._pending.clear()  # unacknowledged: the broker re-queues them
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken; closing is a courtesy
                pass
        self._next_try = time.monotonic()

    def take(self, max_n: int, wait_s: float) -> list[Delivery]:
        import pika

        if self._conn is None:
            if time.monotonic() < self._next_try:
                self._stop.wait(min(0.2, self._next_try - time.monotonic()))
                return []
            if not self._connect():
                return []
        try:
            if not self._pending:
                self._conn.process_data_events(time_limit=0.2)
            deadline = time.monotonic() + wait_s
            while self._pending and len(self._pending) < max_n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._conn.process_data_events(time_limit=min(left, 0.05))
        except pika.exceptions.AMQPError as exc:
            self._lost(exc)
            return []
        batch, self._pending = self._pending[:max_n], self._pending[max_n:]
        return batch

    def ack(self, batch: list[Delivery]) -> None:
        import pika

        tags = [tag for gen, tag in (d.token for d in batch) if gen == self._generation]
        if not tags or self._consume is None:
            return  # delivered on a connection since lost: the broker has re-queued them
        try:
            self._consume.basic_ack(delivery_tag=max(tags), multiple=True)
        except pika.exceptions.AMQPError as exc:
            self._lost(exc)

    def publish(self, topic: str, payload: bytes) -> bool:
        import pika

        if self._publish is None:
            return False
        # Persistent; no ``x-mqtt-publish-qos`` header: RabbitMQ 3.10's MQTT plugin dropped the
        # subscriber's connection on a message carrying it from a pika client (measured).
        props = pika.BasicProperties(delivery_mode=2)
        try:
            self._publish.basic_publish(self.settings.exchange, mqtt_to_amqp(topic), payload,
                                        props)
        except pika.exceptions.NackError:
            return False  # the broker refused it; the next gap scan asks again
        except pika.exceptions.AMQPError as exc:
            self._lost(exc)
            return False
        return True

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
            self._conn = None


def _where(url: str) -> str:
    """``host:port`` of an AMQP URL, without credentials, for logs."""
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return rest.split("/", 1)[0]
