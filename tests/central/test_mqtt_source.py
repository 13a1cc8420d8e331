"""The MQTT source's hand-over (central/sources/mqtt.py): messages from the fast receive path
and from paho's ``on_message`` queue the same deliveries, in order, and are acknowledged by
packet id and QoS (QoS 0 not at all)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paho.mqtt.client as paho

from central.config import load_config
from central.paho_receive import ReceiveClient
from central.sources import Delivery
from central.sources.mqtt import MqttSource


def test_both_receive_paths_queue_the_same_deliveries_and_ack_by_packet_id(
        tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text(f"[database]\nurl = 'sqlite:///{tmp_path / 'c.sqlite'}'\n")
    source = MqttSource(load_config(path), "w1", threading.Event())
    client = source._client
    assert isinstance(client, ReceiveClient) and client.on_publishes == source._on_publishes
    client.on_publishes([("P/g/reads/m", b"\x01", 5, 1), ("P/g/health", b"h", 0, 0)])
    message = paho.MQTTMessage(mid=6, topic=b"P/g/state")
    message.payload, message.qos = bytearray(b"birth"), 1
    source._on_message(client, None, message)
    batch = source.take(10, 0.0)
    assert batch == [Delivery("P/g/reads/m", b"\x01", (5, 1)),
                     Delivery("P/g/health", b"h", (0, 0)),
                     Delivery("P/g/state", b"birth", (6, 1))]
    assert type(batch[2].payload) is bytes
    ours, theirs = socket.socketpair()
    client._sock = ours  # what connect() would have set; no loop thread: written at once
    source.ack(batch)
    assert theirs.recv(100) == b"\x40\x02\x00\x05\x40\x02\x00\x06"  # PUBACK 5, 6; QoS 0: none
    ours.close()
    theirs.close()
