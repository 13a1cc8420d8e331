"""Where a worker's messages come from: the broker side of a worker, kept apart from what the
worker does with a batch (:mod:`central.worker`: decode, store, acknowledge after commit, chase
gaps, ask for replays).

Two sources, one contract (:class:`Source`):

* ``mqtt`` (:mod:`central.sources.mqtt`) — an MQTT 5 shared subscription (mosquitto, EMQX,
  HiveMQ…); every worker a member of ``$share/<group>/…``.
* ``amqp`` (:mod:`central.sources.amqp`) — competing consumers of one durable queue bound to
  RabbitMQ's ``amq.topic``, where its MQTT plugin publishes what the gateways send (MQTT 3.1.1;
  RabbitMQ 3.x has no shared subscriptions). Needs ``pika`` (extra ``amqp``).

A source hands out :class:`Delivery` objects in arrival order and acknowledges a batch of them
only when told to, after the worker's transaction committed; what it has not acknowledged when
its connection drops, the broker delivers again (to this worker or another). Sources are used
from the worker's one thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from central.config import CentralConfig

__all__ = ["Delivery", "Source", "make_source"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the gateways published it: ``topic`` in MQTT form (``P/G/reads/fast``),
    whichever protocol carried it; ``token`` is the source's own handle for acknowledging it."""

    topic: str
    payload: bytes
    token: Any = None


class Source(Protocol):
    """The broker side of one worker (see the module docstring)."""

    @property
    def connected(self) -> bool:
        """Whether a publish now has a connection to go out on."""
        ...

    def start(self) -> None:
        """Begin connecting; returns at once or after the first attempt."""
        ...

    def take(self, max_n: int, wait_s: float) -> list[Delivery]:
        """Up to ``max_n`` deliveries: waits up to 0.2 s for the first, then up to ``wait_s``
        for the batch to fill. Empty when nothing came (or the connection is down)."""
        ...

    def ack(self, batch: list[Delivery]) -> None:
        """Acknowledge ``batch`` (a prefix of what :meth:`take` handed out, in any order)."""
        ...

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1 / persistent to the MQTT ``topic``; False when it could not go out."""
        ...

    def close(self) -> None:
        ...


def make_source(config: CentralConfig, name: str, stop: threading.Event) -> Source:
    """The source ``[source] kind`` names; ``stop`` is the worker's stop flag."""
    if config.source == "amqp":
        from central.sources.amqp import AmqpSource

        return AmqpSource(config, name, stop)
    from central.sources.mqtt import MqttSource

    return MqttSource(config, name, stop)
