"""`[mqtt]`: the broker connection. These declarations are the one statement of what a valid
MQTT setting is; the link (`gateway.uplink.mqtt_link.LinkSettings`) takes the checked values
as they are and does not check them again.
"""

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from gateway.config.fields import Problems, setting
from gateway.config.ids import HOST, MAX_U32, TOPIC_PREFIX_PATTERN
from gateway.config.kinds import Choice, FilePath, Int, ListOf, Number, Str, Table

MqttProtocol = Literal["5", "3.1.1"]
#: Birth and death messages travel through paho beside the outbox window and need room there:
#: 65535 MQTT packet ids, 4 of them kept back for state messages.
STATE_MESSAGE_SLOTS: Final = 4
MAX_INFLIGHT_WINDOW: Final = 65535 - STATE_MESSAGE_SLOTS
#: ``host:port`` of a fallback broker (an IPv6 literal in brackets: ``[::1]:1883``).
HOST_PORT: Final = Str(
    pattern=r"(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):[0-9]{1,5}",
    hint='"host:port" (an IPv6 address as "[addr]:port")',
)
MAX_FALLBACK_HOSTS: Final = 16


def split_host_port(text: str) -> tuple[str, int]:
    """``("host", port)`` of a checked ``host:port`` (brackets of an IPv6 literal removed)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """[mqtt].tls: TLS to the broker; present (even empty) means TLS is on.

    Without ca_file the system trust store verifies the broker. cert_file and key_file give
    a client certificate and must be given together.
    """

    ca_file: Path | None = setting(
        FilePath("file"),
        default=None,
        doc="PEM CA bundle that signed the broker's certificate (default: system trust store).",
    )
    cert_file: Path | None = setting(
        FilePath("file"),
        default=None,
        doc="PEM client certificate, for brokers that require client authentication.",
    )
    key_file: Path | None = setting(
        FilePath("file"),
        default=None,
        doc="PEM private key of cert_file.",
    )

    def table_problems(self) -> Problems:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            yield (
                missing,
                "cert_file and key_file must be given together (a client certificate needs its key)",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSection:
    """[mqtt]: the broker connection that carries reads, alarms, state and commands."""

    host: str = setting(HOST, doc="Broker host name or IP address.")
    port: int = setting(
        Int(minimum=1, maximum=65535),
        default=1883,
        doc="Broker TCP port (usually 8883 with TLS).",
    )
    fallback_hosts: tuple[str, ...] = setting(
        ListOf(HOST_PORT, unique=True, max_items=MAX_FALLBACK_HOSTS),
        default=(),
        doc="Other brokers, tried in order after host:port when a connection attempt fails "
        'or an established connection drops, e.g. ["broker-b:1883"] (the nodes of a broker '
        "cluster). The gateway stays on the broker it reached until that connection is lost; "
        "a full round of failures backs off as for one broker. Same TLS, credentials and "
        "session settings for all; outbox rows the broker did not acknowledge are re-sent "
        "to the next one.",
    )
    topic_prefix: str = setting(
        Str(
            pattern=TOPIC_PREFIX_PATTERN,
            hint="topic levels separated by '/', without wildcards, spaces or empty levels",
        ),
        default="mtr/v1",
        doc="Topic prefix P in P/G/...; part of the MQTT contract.",
    )
    protocol: MqttProtocol = setting(
        Choice(get_args(MqttProtocol)),
        default="5",
        doc='MQTT protocol version, "5" or "3.1.1" (a string).',
    )
    keepalive_s: int = setting(
        Int(minimum=1, maximum=65535, unit="seconds"),
        default=10,
        doc="Keepalive interval: a silently dead link (cut cable, NAT timeout) is noticed "
        "after about 1.5 times this.",
    )
    session_expiry_s: int = setting(
        Int(minimum=0, maximum=MAX_U32, unit="seconds"),
        default=3600,
        doc="How long the broker keeps the session (subscriptions, queued commands) after a "
        "disconnect (MQTT 5).",
    )
    inflight_window: int = setting(
        Int(minimum=1, maximum=MAX_INFLIGHT_WINDOW),
        default=64,
        doc="Most QoS 1 messages awaiting PUBACK at once.",
    )
    payload_version: int = setting(
        Int(minimum=1, maximum=2),
        default=2,
        doc="Schema of reads messages: 2 (compact, aliases declared in the birth; "
        "docs/payloads.md) or 1 for consumers that read only v1. Other kinds are v1 either way.",
    )
    reconnect_min_s: float = setting(
        Number(minimum=0, maximum=3600, exclusive_minimum=True, unit="seconds"),
        default=1.0,
        doc="First reconnect delay; doubled after each failure up to reconnect_max_s.",
    )
    reconnect_max_s: float = setting(
        Number(minimum=0, maximum=3600, exclusive_minimum=True, unit="seconds"),
        default=60.0,
        doc="Longest reconnect delay.",
    )
    username: str | None = setting(Str(), default=None, doc="Broker user name (optional).")
    password: str | None = setting(
        Str(), default=None, doc="Broker password (optional); keep the file mode 0600."
    )
    tls: TlsSettings | None = setting(
        Table(TlsSettings),
        default=None,
        doc="TLS settings as an inline table; omit for plain TCP.",
    )

    def table_problems(self) -> Problems:
        if self.reconnect_min_s > self.reconnect_max_s:
            yield (
                "reconnect_min_s",
                f"must not exceed reconnect_max_s ({self.reconnect_max_s:g}), "
                f"got {self.reconnect_min_s:g}",
            )
        for i, entry in enumerate(self.fallback_hosts):
            host, port = split_host_port(entry)
            if not 1 <= port <= 65535:
                yield ("fallback_hosts", i), f"port {port} of {entry!r} is not in 1..65535"
            elif (host, port) == (self.host, self.port):
                yield ("fallback_hosts", i), f"{entry!r} is host:port itself"
        if self.protocol == "3.1.1" and self.password is not None and self.username is None:
            yield "password", "MQTT 3.1.1 does not allow a password without a username"
