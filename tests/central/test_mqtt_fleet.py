"""bench/mqtt_fleet.py: prebuilt MQTT 5 packets through a real mosquitto arrive intact, once,
and every one is counted as acknowledged only when the broker PUBACKed it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from bench.mqtt_fleet import connect, prebuild, publish_packet, publish_prebuilt
from tests.broker import MosquittoBroker


def test_prebuilt_packets_reach_a_subscriber_through_mosquitto(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    try:
        broker = MosquittoBroker(tmp_path)
    except Exception as exc:
        pytest.skip(str(exc))
    broker.start()
    got: list[tuple[str, bytes, int]] = []
    done, subscribed = threading.Event(), threading.Event()
    messages = [(f"fleet/gw-{i % 7}/reads/m-{i:03d}", bytes([i % 256]) * (1 + i % 300))
                for i in range(1500)]

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        got.append((msg.topic, bytes(msg.payload), msg.qos))
        if len(got) == len(messages):
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sub", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.subscribe("fleet/#", qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        lanes = prebuild(messages, 3)
        assert [len(lane) for lane in lanes] == [500, 500, 500]
        seconds, acked = publish_prebuilt(broker.port, lanes)
        assert acked == len(messages) and seconds > 0
        assert done.wait(20)
    finally:
        sub.disconnect()
        sub.loop_stop()
        broker.stop()
    assert sorted(got) == sorted((t, p, 1) for t, p in messages)


def test_packet_encoding_and_connack_receive_maximum(tmp_path: Path) -> None:
    packet = publish_packet("a/b", b"xyz", 258)
    # PUBLISH QoS 1, remaining length, topic, packet id 258, no properties, payload
    assert packet == b"\x32\x0b\x00\x03a/b\x01\x02\x00xyz"
    assert publish_packet("a", b"\x00" * 200, 1, retain=True)[:3] == b"\x33\xce\x01"  # 206 bytes: a two-byte length
    try:
        broker = MosquittoBroker(tmp_path, extra_config="max_inflight_messages 7\n")
    except Exception as exc:
        pytest.skip(str(exc))
    broker.start()
    try:
        sock, receive_max = connect(broker.port, "probe")
        sock.close()
    finally:
        broker.stop()
    assert receive_max == 7  # mosquitto 2.0 announces max_inflight_messages as its receive maximum
