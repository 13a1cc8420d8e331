"""One fix to paho-mqtt's receive path, measured on the worker's network thread.

paho 2.x decodes every MQTT 5 PUBLISH into a fresh ``Properties`` object, and
``Properties.__init__`` rebuilds its three lookup tables (type names, property names, property
id → type and packet kinds: ~60 dict and list entries, ~45 ``list.index`` calls) each time. In
bench/bench_central_mqtt.py that was ~27 % of the samples py-spy took of a worker's network
thread (docs/performance.md, issue 15), i.e. a per-message cost that grows with the fleet.

The tables are constants: paho only ever reads them. :func:`share_property_tables` makes the
PUBLISH decoder (``paho.mqtt._packet``) build ``Properties`` objects that share one copy of the
tables; the objects behave the same (same class hierarchy, same attributes, ``unpack``,
``clear``, ``json``). If a paho version lays its modules out differently, nothing is changed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["share_property_tables"]


def share_property_tables() -> bool:
    """Patch ``paho.mqtt._packet.Properties`` (idempotent); whether the patch is in place."""
    try:
        from paho.mqtt import _packet
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
    except ImportError:
        return False
    current = getattr(_packet, "Properties", None)
    if current is None:
        return False
    if getattr(current, "shared_tables", False):
        return True
    if current is not Properties:
        return False  # someone else's class: leave it alone
    template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    tables = (template.types, template.names, template.properties)

    class SharedTablesProperties(Properties):
        shared_tables = True

        def __init__(self, packetType: Any) -> None:
            self.packetType = packetType
            self.types, self.names, self.properties = tables

    SharedTablesProperties.__name__ = SharedTablesProperties.__qualname__ = "Properties"
    _packet.Properties = SharedTablesProperties  # type: ignore[attr-defined]
    return True
