"""What the MQTT link needs to know about the broker and the session.

The values come from `[gateway]` and `[mqtt]` as the config loader checked them
(`gateway.config.mqtt` holds the rules: port range, keepalive, reconnect bounds, the in-flight
window, TLS key pairs, MQTT 3.1.1's password rule); `LinkSettings` does not check them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.mqtt import MqttProtocol, TlsSettings, split_host_port

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig




@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Everything the link needs to know about the broker and the session.

    `client_id` is the gateway id: it is the MQTT client id (the persistent session is keyed on
    it) and the topic segment `G` in `P/G/...`.
    """

    host: str
    port: int
    client_id: str
    topic_prefix: str
    protocol: MqttProtocol = "5"
    keepalive_s: int = 10
    # How long the broker keeps our session (subscription and queued commands) while we are away.
    session_expiry_s: int = 3600
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    connect_timeout_s: float = 5.0
    # The outbox pump's in-flight window; paho's own queue is capped just above it.
    inflight_window: int = 64
    command_queue_size: int = 64
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    #: `[mqtt] fallback_hosts`: (host, port) of the brokers tried after `host:port`, in order.
    fallbacks: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_config(cls, config: GatewayConfig) -> LinkSettings:
        """The link settings of a loaded gateway config (`[gateway]` id, `[mqtt]`)."""
        m = config.mqtt
        return cls(
            host=m.host,
            port=m.port,
            client_id=config.gateway.id,
            topic_prefix=m.topic_prefix,
            protocol=m.protocol,
            keepalive_s=m.keepalive_s,
            session_expiry_s=m.session_expiry_s,
            reconnect_min_s=m.reconnect_min_s,
            reconnect_max_s=m.reconnect_max_s,
            inflight_window=m.inflight_window,
            username=m.username,
            password=m.password,
            tls=m.tls,
            fallbacks=tuple(split_host_port(entry) for entry in m.fallback_hosts),
        )

    def __post_init__(self) -> None:
        # The [mqtt] and [gateway] keys were checked by the config loader (gateway.config.mqtt);
        # these two are the link's own knobs, set by code, not by the file.
        if self.connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s: {self.connect_timeout_s} must be > 0")
        if self.command_queue_size < 1:
            raise ValueError(f"command_queue_size: {self.command_queue_size} must be >= 1")

    @property
    def brokers(self) -> tuple[tuple[str, int], ...]:
        """`host:port` first, then the fallbacks: the order connection attempts go round."""
        return ((self.host, self.port), *self.fallbacks)

    @property
    def state_topic(self) -> str:
        return f"{self.topic_prefix}/{self.client_id}/state"

    @property
    def command_topic(self) -> str:
        return f"{self.topic_prefix}/{self.client_id}/cmd"
