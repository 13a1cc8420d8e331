"""The demo's embedded MQTT 3.1.1 broker, driven by real paho-mqtt 2.x clients (and, where paho
cannot be made to misbehave, by a raw socket speaking the wire format).

The broker runs as ``python -m hil_tests.mini_broker --port 0`` in a subprocess, exactly as a user
would start it, so these tests also cover its command line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hil_tests.mini_broker import topic_matches, valid_topic_filter, valid_topic_name

ROOT = Path(__file__).resolve().parent.parent


class Broker:
    """A mini broker subprocess on a free loopback port."""

    host = "127.0.0.1"

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hil_tests.mini_broker", "--port", "0", "-v", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.fullmatch(r"mini-broker listening on 127\.0\.0\.1:(\d+)\n", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"unexpected broker banner {line!r}: {self.proc.stderr.read()}")
        self.port = int(match.group(1))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(5)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    try:
        yield b
    finally:
        assert b.stop() == 0


class Client:
    """A paho 2.x MQTT 3.1.1 client recording what it receives."""

    def __init__(self, broker: Broker, client_id: str = "", *, clean: bool = True,
                 will: tuple[str, bytes, int, bool] | None = None,
                 protocol: int = mqtt.MQTTv311) -> None:
        kwargs: dict[str, Any] = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol, **kwargs)
        self.broker = broker
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.session_present: bool | None = None
        self.connect_reason: Any = None
        self.subacks: list[list[int]] = []
        if will is not None:
            self.client.will_set(*will)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connect_reason = reason
        self.connected.set()

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self.lock:
            self.subacks.append([r.value for r in reasons])

    def start(self, keepalive: int = 30) -> Client:
        self.client.reconnect_delay_set(60, 60)  # tests decide when to reconnect
        self.client.connect(self.broker.host, self.broker.port, keepalive=keepalive)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"
        return self

    def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        before = len(self.subacks)
        self.client.subscribe(list(filters))
        assert wait_until(lambda: len(self.subacks) > before)
        return self.subacks[before]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(5)
            assert info.is_published(), f"no PUBACK for {topic}"

    def received(self) -> list[tuple[str, bytes, int, bool]]:
        with self.lock:
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def settle() -> None:
    """Give in-flight messages time to arrive before asserting that something did *not*."""
    time.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# Raw wire helpers, for behaviour paho will not produce (silence, missing PUBACKs)


def _utf8(text: str) -> bytes:
    return len(text.encode()).to_bytes(2, "big") + text.encode()


def _packet(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([first, len(body)]) + body


def raw_connect(broker: Broker, client_id: str, *, clean: bool, keepalive: int,
                will: tuple[str, bytes] | None = None) -> tuple[socket.socket, bytes]:
    flags = (0x02 if clean else 0) | (0x04 | 0x20 if will else 0)  # will retained, QoS 0
    payload = _utf8(client_id) + (_utf8(will[0]) + _utf8(will[1].decode()) if will else b"")
    sock = socket.create_connection((broker.host, broker.port), timeout=5)
    sock.sendall(_packet(0x10, _utf8("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
                         + payload))
    return sock, read_packet(sock)


def read_packet(sock: socket.socket) -> bytes:
    """One whole packet (fixed header included); b"" when the broker closed the connection."""
    header = sock.recv(1)
    if not header:
        return b""
    length, shift, raw = 0, 0, b""
    while True:
        byte = sock.recv(1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "connection closed inside a packet"
        body += chunk
    return header + raw + body


# ---------------------------------------------------------------------------------------------
# Topic rules (pure functions)


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+/c", "a/x/c", True),
    ("+/+", "a/b", True),
    ("+", "/a", False),
    ("+/a", "/a", True),
    ("a/#", "a", True),  # "#" also matches the parent level (MQTT 3.1.1 §4.7.1.2)
    ("a/#", "a/b/c", True),
    ("a/#", "ab/c", False),
    ("#", "a/b", True),
    ("#", "$SYS/uptime", False),
    ("+/uptime", "$SYS/uptime", False),
    ("$SYS/#", "$SYS/uptime", True),
    ("a/b/c", "a/b", False),
])
def test_topic_matching(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_topic_validity() -> None:
    assert all(valid_topic_filter(f) for f in ("#", "+", "a/+/b", "a/#", "/", "+/+/#"))
    assert not any(valid_topic_filter(f) for f in ("", "a#", "a/#/b", "a+/b", "a/b+", "#/a"))
    assert valid_topic_name("a/b") and valid_topic_name("/")
    assert not any(valid_topic_name(t) for t in ("", "a/+", "a/#", "a\0b"))


# ---------------------------------------------------------------------------------------------
# Through the broker


def test_publish_subscribe_with_wildcards(broker: Broker) -> None:
    sub = Client(broker, "sub").start()
    pub = Client(broker, "pub").start()
    try:
        assert sub.subscribe(("mtr/+/reads/#", 1), ("mtr/gw/state", 0)) == [1, 0]
        pub.publish("mtr/gw/reads/m-1", b"one", qos=1)
        pub.publish("mtr/gw/reads", b"parent", qos=0)  # '#' matches the parent level
        pub.publish("mtr/gw/state", b"state", qos=1)  # QoS 1 message, QoS 0 subscription
        pub.publish("mtr/gw/health", b"not subscribed", qos=1)
        pub.publish("other/gw/reads/m-1", b"other prefix", qos=1)
        assert wait_until(lambda: len(sub.received()) >= 3)
        settle()
        assert sorted(sub.received()) == [
            ("mtr/gw/reads", b"parent", 0, False),
            ("mtr/gw/reads/m-1", b"one", 1, False),
            ("mtr/gw/state", b"state", 0, False),  # delivered at the lower of the two QoS
        ]
    finally:
        sub.stop()
        pub.stop()


def test_overlapping_subscriptions_deliver_one_copy_and_unsubscribe_stops(broker: Broker) -> None:
    sub = Client(broker, "sub").start()
    pub = Client(broker, "pub").start()
    try:
        sub.subscribe(("a/#", 0), ("a/+", 1))
        pub.publish("a/b", b"x", qos=1)
        assert wait_until(lambda: len(sub.received()) >= 1)
        settle()
        assert sub.received() == [("a/b", b"x", 1, False)]
        result, _ = sub.client.unsubscribe(["a/#", "a/+"])
        assert result == mqtt.MQTT_ERR_SUCCESS
        settle()
        pub.publish("a/b", b"after", qos=1)
        settle()
        assert len(sub.received()) == 1
    finally:
        sub.stop()
        pub.stop()


def test_retained_messages_replay_and_empty_payload_clears(broker: Broker) -> None:
    pub = Client(broker, "pub").start()
    live = Client(broker, "live").start()
    try:
        live.subscribe(("gw/#", 1))
        pub.publish("gw/state", b"online", qos=1, retain=True)
        pub.publish("gw/other", b"kept", qos=0, retain=True)
        assert wait_until(lambda: len(live.received()) == 2)
        # An established subscription gets RETAIN cleared (MQTT-3.3.1-9) ...
        assert all(not retain for *_, retain in live.received())
        late = Client(broker, "late").start()
        late.subscribe(("gw/state", 1))
        # ... a new subscription gets the stored message with RETAIN set (MQTT-3.3.1-8).
        assert wait_until(lambda: late.received() == [("gw/state", b"online", 1, True)])
        late.stop()
        pub.publish("gw/state", b"", qos=1, retain=True)  # clears the topic ...
        assert wait_until(lambda: ("gw/state", b"", 1, False) in live.received())  # ... still sent
        after = Client(broker, "after").start()
        after.subscribe(("gw/#", 1))
        assert wait_until(lambda: len(after.received()) >= 1)
        settle()
        assert after.received() == [("gw/other", b"kept", 0, True)]
        after.stop()
    finally:
        pub.stop()
        live.stop()


WILL_CLIENT = textwrap.dedent("""
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dying", protocol=mqtt.MQTTv311)
    c.will_set("gw/state", b"offline", qos=1, retain=True)
    c.connect("127.0.0.1", int(sys.argv[1]), keepalive=60)
    c.loop_start()
    time.sleep(0.5)
    print("connected", flush=True)
    time.sleep(60)
""")


def test_last_will_on_abrupt_close_is_published_and_retained(broker: Broker) -> None:
    watcher = Client(broker, "watcher").start()
    try:
        watcher.subscribe(("gw/state", 1))
        dying = subprocess.Popen([sys.executable, "-c", WILL_CLIENT, str(broker.port)],
                                 stdout=subprocess.PIPE, text=True)
        assert dying.stdout is not None and dying.stdout.readline() == "connected\n"
        dying.kill()  # SIGKILL: the kernel closes the socket, no DISCONNECT is ever sent
        dying.wait()
        assert wait_until(lambda: watcher.received() == [("gw/state", b"offline", 1, False)])
        late = Client(broker, "late").start()
        late.subscribe(("gw/state", 1))
        assert wait_until(lambda: late.received() == [("gw/state", b"offline", 1, True)])
        late.stop()
    finally:
        watcher.stop()


def test_disconnect_discards_the_will(broker: Broker) -> None:
    watcher = Client(broker, "watcher").start()
    try:
        watcher.subscribe(("gw/state", 1))
        polite = Client(broker, "polite", will=("gw/state", b"offline", 1, True)).start()
        polite.stop()
        settle()
        assert watcher.received() == []
    finally:
        watcher.stop()


def test_keepalive_expiry_closes_after_one_and_a_half_keepalives_and_sends_will(
        broker: Broker) -> None:
    watcher = Client(broker, "watcher").start()
    try:
        watcher.subscribe(("gw/#", 0))
        sock, connack = raw_connect(broker, "silent", clean=True, keepalive=1,
                                    will=("gw/will", b"gone"))
        assert connack == bytes([0x20, 2, 0, 0])
        started = time.monotonic()
        assert read_packet(sock) == b""  # the broker closes; we never sent a PINGREQ
        waited = time.monotonic() - started
        sock.close()
        assert 1.3 <= waited <= 3.0, waited
        assert wait_until(lambda: watcher.received() == [("gw/will", b"gone", 0, False)])
    finally:
        watcher.stop()


def test_persistent_session_queues_qos1_while_offline(broker: Broker) -> None:
    pub = Client(broker, "pub").start()
    first = Client(broker, "consumer", clean=False).start()
    assert first.session_present is False
    first.subscribe(("cmd/#", 1))
    first.stop()
    try:
        # QoS 0 is not queued for absent clients. (Sent first: the PUBACKs that follow prove
        # the broker has routed it before the consumer returns.)
        pub.publish("cmd/fleeting", b"qos0", qos=0)
        for i in range(3):
            pub.publish(f"cmd/{i}", f"c{i}".encode(), qos=1)
        again = Client(broker, "consumer", clean=False).start()
        assert again.session_present is True  # subscriptions survived: no re-subscribe needed
        assert wait_until(lambda: len(again.received()) >= 3), again.received()
        settle()
        assert again.received() == [(f"cmd/{i}", f"c{i}".encode(), 1, False) for i in range(3)]
        again.stop()
        fresh = Client(broker, "consumer", clean=True).start()
        assert fresh.session_present is False
        pub.publish("cmd/x", b"nobody", qos=1)
        settle()
        assert fresh.received() == []  # the clean start discarded the subscription
        fresh.stop()
    finally:
        pub.stop()


def test_offline_queue_is_bounded() -> None:
    broker = Broker("--max-queued", "5")
    try:
        consumer = Client(broker, "consumer", clean=False).start()
        consumer.subscribe(("q/#", 1))
        consumer.stop()
        pub = Client(broker, "pub").start()
        for i in range(10):
            pub.publish(f"q/{i}", b"x", qos=1)
        pub.stop()
        again = Client(broker, "consumer", clean=False).start()
        assert wait_until(lambda: len(again.received()) >= 5)
        settle()
        assert [t for t, *_ in again.received()] == [f"q/{i}" for i in range(5)]
        again.stop()
    finally:
        assert broker.stop() == 0
    assert "queue of consumer full" in (broker.proc.stderr.read() if broker.proc.stderr else "")


def test_invalid_filter_gets_a_failure_return_code(broker: Broker) -> None:
    # paho refuses to send a malformed filter, so this one goes over a raw socket.
    sock, _ = raw_connect(broker, "raw", clean=True, keepalive=60)
    body = (9).to_bytes(2, "big") + _utf8("bad/#/filter") + bytes([1]) + _utf8("ok/+") + bytes([2])
    sock.sendall(_packet(0x82, body))
    assert read_packet(sock) == bytes([0x90, 4, 0, 9, 0x80, 1])  # failure, then QoS 2 -> 1
    sock.close()


def test_unacknowledged_qos1_is_resent_with_dup_on_reconnect(broker: Broker) -> None:
    sock, connack = raw_connect(broker, "forgetful", clean=False, keepalive=60)
    assert connack == bytes([0x20, 2, 0, 0])
    sock.sendall(_packet(0x82, (7).to_bytes(2, "big") + _utf8("t/#") + bytes([1])))
    assert read_packet(sock) == bytes([0x90, 3, 0, 7, 1])  # SUBACK, granted QoS 1
    pub = Client(broker, "pub").start()
    pub.publish("t/1", b"payload", qos=1)
    pub.stop()
    first = read_packet(sock)
    assert first[0] == 0x32  # PUBLISH, QoS 1, DUP 0
    sock.close()  # no PUBACK
    sock, connack = raw_connect(broker, "forgetful", clean=False, keepalive=60)
    assert connack == bytes([0x20, 2, 1, 0])  # session present
    again = read_packet(sock)
    assert again[0] == 0x3A  # DUP set
    assert again[1:] == first[1:]  # same packet id, topic and payload
    sock.close()


def test_new_connection_with_same_client_id_takes_over(broker: Broker) -> None:
    old = Client(broker, "same").start()
    new = Client(broker, "same").start()
    try:
        assert old.disconnected.wait(5)
        new.subscribe(("x", 1))
        pub = Client(broker, "pub").start()
        pub.publish("x", b"1")
        pub.stop()
        assert wait_until(lambda: new.received() == [("x", b"1", 1, False)])
    finally:
        old.client.loop_stop()
        new.stop()


def test_qos2_publish_is_refused_by_closing(broker: Broker) -> None:
    client = Client(broker, "qos2").start()
    try:
        client.client.publish("a", b"x", qos=2)
        assert client.disconnected.wait(5)
    finally:
        client.client.loop_stop()


def test_mqtt5_client_is_refused_with_unacceptable_protocol(broker: Broker) -> None:
    client = Client(broker, "v5", protocol=mqtt.MQTTv5)
    client.client.connect(broker.host, broker.port)
    client.client.loop_start()
    try:
        assert client.connected.wait(5)
        assert client.connect_reason.is_failure
    finally:
        client.client.loop_stop()


def test_busy_port_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "hil_tests.mini_broker", "--port", str(port)],
                                cwd=ROOT, capture_output=True, text=True, timeout=10,
                                env={**os.environ})
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
