"""The one alarm service: every raise and clear in the daemon goes through :class:`Alarms`.

Comm loss, meter flags, VEE field reads, disk pressure, theft indicators, load-control trips:
whoever notices a condition calls :meth:`Alarms.raise_` or :meth:`Alarms.clear`; the service
picks the severity CRM routes on (DESIGN §4), builds the event and commits it with the state
change through the outbox writer (published once, even across a crash; held when the disk is
full).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from gateway.pipeline.outbox import AlarmTransition, Committed, OutboxWriter
from gateway.store import Store
from gateway.store.errors import StoreError
from gateway.store.records import OutboxMessage
from protocols.payload import AlarmEvent, Envelope, build_alarm
from protocols.topics import QOS_DEFAULT, GatewayTopics

log = logging.getLogger(__name__)

#: Alarm severities by kind (DESIGN §4 alarms; CRM systems route on them). Kinds not listed are
#: minor.
SEVERITY = {
    "vee.field_read": "minor", "comm_loss": "major", "disk.low": "major", "meter.flag": "minor",
    # The store cannot be written: reads are held in memory and lost at the hold's bound.
    "disk.full": "critical", "store.failed": "critical",
    "store.corrupt": "major", "bus.unavailable": "major", "clock.step": "minor",
    "outage.area": "critical", "outage.momentary": "warning",
    "comm.bus": "major",  # a whole bus silent: wiring or adapter, never an outage
    "outage.verified": "warning",  # the meters' verdict on an outage already cleared
    # Inferred from the meters (gateway/pipeline/meter_outages.py): one premise, one phase.
    "outage.meter": "major", "outage.phase": "critical",
    # Prepaid customers (gateway/control/load_control/customers.py): low balance, then nothing
    # left (the trip follows after [load_control.prepaid] trip_delay_s).
    "prepaid.low": "warning", "prepaid.exhausted": "major",
    # A meter clock off the gateway's (docs/clock.md): tariffs and freezes at the wrong time.
    "clock.drift": "minor",
    # A meter's own CT/PT ratio differs from the configured one: group totals off by a factor.
    "meter.ratio": "major",
}


class Alarms:
    """Raise and clear alarms; each transition is committed once with its event."""

    def __init__(self, store: Store, writer: OutboxWriter, topics: GatewayTopics) -> None:
        self.store = store
        self.writer = writer
        self.topics = topics
        #: Transitions committed (or held for the disk) since start, for health.
        self.transitions = 0
        #: Publishes an alarm message at once, outside the store (the MQTT link), for the
        #: transitions the store cannot take now; set by the daemon. The durable event follows
        #: when the store works again.
        self.ephemeral: Callable[[str, bytes], None] | None = None

    def raise_(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
               t_ms: int) -> bool:
        """Raise ``key`` unless it is active already; True when it was raised now."""
        return self.transition(kind, key, "raised", meter, details, t_ms)

    def clear(self, kind: str, key: str, meter: str | None, details: Mapping[str, object],
              t_ms: int) -> bool:
        """Clear ``key`` if it is active; True when it was cleared now."""
        return self.transition(kind, key, "cleared", meter, details, t_ms)

    def transition(self, kind: str, key: str, state: str, meter: str | None,
                   details: Mapping[str, object], t_ms: int) -> bool:
        """Raise (``state`` ``"raised"``) or clear (``"cleared"``) alarm ``key``."""
        if state not in ("raised", "cleared"):
            raise ValueError(f"alarm state must be 'raised' or 'cleared', not {state!r}")
        raised_at: int | None = None
        if state == "cleared":
            try:
                current = self.store.alarm(key)
            except StoreError:  # the store cannot be read now: the clear goes out without it
                current = None
            raised_at = current.raised_ms if current else None
        event = AlarmEvent(kind=kind, key=key, state=state, severity=SEVERITY.get(kind, "minor"),
                           details=dict(details), meter=meter, raised=raised_at)
        gateway_id, store = self.topics.gateway_id, self.store

        def build(seq: int) -> bytes:
            return build_alarm(Envelope(gateway_id, store.epoch, seq, t_ms), event)

        message = OutboxMessage(topic=self.topics.alarms, qos=QOS_DEFAULT, build=build)
        outcome = self.writer.transition(AlarmTransition(key, kind, state, dict(details), t_ms,
                                                         message))
        if outcome is Committed.UNCHANGED:
            return False
        self.transitions += 1
        log.warning("alarm %s %s: %s", key, state, details.get("hint", dict(details)))
        if outcome is Committed.HELD and self.ephemeral is not None:
            try:
                seq = store.last_seq
            except StoreError:
                seq = 0
            self.ephemeral(self.topics.alarms, build_alarm(
                Envelope(gateway_id, store.epoch, seq, t_ms), event, ephemeral=True))
        return True

    def active(self, key: str) -> bool:
        """Whether ``key`` is raised now: committed, or held for the store."""
        held = self.writer.held_state(key)
        if held is not None:
            return held == "raised"
        state = self.store.alarm(key)
        return state is not None and state.cleared_ms is None
