"""The MQTT topic layout of DESIGN §4 (contract), in one place.

``P/G/...`` with ``P`` the configured topic prefix and ``G`` the gateway id. The daemon, ``gwtool``,
the demo and the central consumer all build topics here, so a consumer's subscription and the
gateway's publication cannot drift apart. Pure string building: no broker, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

#: QoS per topic kind (DESIGN §4): health is best-effort, everything else is at-least-once.
QOS_HEALTH = 0
QOS_DEFAULT = 1


class TopicError(ValueError):
    """A prefix, gateway id or name that would make an ambiguous or invalid topic."""


def _segment(kind: str, value: str) -> str:
    if not value or any(c in value for c in "/+#\0"):
        raise TopicError(f"{kind} {value!r} cannot be an MQTT topic segment "
                         "(empty, or contains '/', '+', '#' or NUL)")
    return value


@dataclass(frozen=True, slots=True)
class GatewayTopics:
    """Every topic one gateway publishes or subscribes to.

    >>> t = GatewayTopics("mtr/v1", "gw-0001")
    >>> t.reads("m-001")
    'mtr/v1/gw-0001/reads/m-001'
    """

    prefix: str
    gateway_id: str

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/") \
                or any(c in self.prefix for c in "+#\0"):
            raise TopicError(f"topic prefix {self.prefix!r}: no wildcards, NUL, or leading or "
                             "trailing '/'")
        _segment("gateway id", self.gateway_id)

    @property
    def base(self) -> str:
        """``P/G`` — every topic of this gateway starts with it."""
        return f"{self.prefix}/{self.gateway_id}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    def reads(self, meter_id: str) -> str:
        return f"{self.base}/reads/{_segment('meter id', meter_id)}"

    def groups(self, group_id: str) -> str:
        return f"{self.base}/groups/{_segment('group id', group_id)}"

    @property
    def alarms(self) -> str:
        return f"{self.base}/alarms"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def commands(self) -> str:
        return f"{self.base}/cmd"

    @property
    def command_results(self) -> str:
        return f"{self.base}/cmd/result"
