"""central/paho_tuning.py: PUBLISH properties decode the same with the shared tables."""

from __future__ import annotations

from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.paho_tuning import share_property_tables


def _packed() -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = 30
    props.ContentType = "application/cbor"
    props.UserProperty = [("a", "1"), ("b", "2")]
    return bytes(props.pack())  # type: ignore[no-untyped-call]


def test_shared_tables_decode_publish_properties_like_paho() -> None:
    packed = _packed()
    want, want_len = Properties(PacketTypes.PUBLISH).unpack(packed)  # type: ignore[no-untyped-call]
    assert share_property_tables() and share_property_tables()  # idempotent
    cls = _packet.Properties
    assert cls is not Properties and issubclass(cls, Properties)
    got, got_len = cls(PacketTypes.PUBLISH).unpack(packed)
    assert got_len == want_len
    assert got.json() == want.json() == {"MessageExpiryInterval": 30,
                                         "ContentType": "application/cbor",
                                         "UserProperty": [("a", "1"), ("b", "2")]}
    empty, _ = cls(PacketTypes.PUBLISH).unpack(b"\x00")
    assert empty.json() == {} and not hasattr(empty, "ContentType")
    assert cls(PacketTypes.PUBLISH).names is cls(PacketTypes.CONNACK).names  # built once
