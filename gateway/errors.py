"""The root of the errors the daemon raises on purpose.

Each layer has one root of its own below this one (``ConfigError``, ``StoreError``,
``AcquisitionError``, ``ControlError``; the pipeline, analytics and uplink translate into those
or report through the supervisor), so a caller can catch "anything this layer says went wrong"
by one name, and ``except Exception`` is left for the few places that contain bugs on purpose
(each marked ``noqa: BLE001`` with its reason). Foreign errors — sqlite3, pyserial, pymodbus,
paho, cbor2 — are translated where they enter, the aiomqtt way: ``raise OurError(...) from``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Something the daemon detected and can say in one line."""
