"""A real mosquitto broker for tests, on a free loopback port.

Why a real broker: the delivery guarantees (PUBACK-driven acknowledgement, persistent sessions,
retained wills, keepalive detection of a frozen peer) are broker behaviour; a mock would only
prove that the mock agrees with our assumptions.

The broker can be stopped and started again on the *same* port with the same persistence
directory, so clients see an outage rather than a new broker, and it can be frozen with SIGSTOP:
the kernel keeps accepting TCP segments for the stopped process, which is exactly what a
silently dead link looks like to a client (writes succeed, nothing ever comes back).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOSQUITTO = os.environ.get("EDGE_GATEWAY_TEST_MOSQUITTO", "/usr/sbin/mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects: a broker's second listener, for instance."""

    host: str
    port: int


class BrokerError(RuntimeError):
    """The test broker could not be started or controlled."""


class MosquittoBroker:
    """One mosquitto process with its own config, persistence directory and log.

    `extra_config` is appended to the listener block (for example TLS options), so it applies to
    the test listener. `preamble` goes first: options mosquitto wants before any listener or
    security setting (``per_listener_settings``, ``acl_file``).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: str = "",
        preamble: str = "",
        allow_anonymous: bool = True,
        executable: str = MOSQUITTO,
    ) -> None:
        if not Path(executable).exists():
            raise BrokerError(
                f"mosquitto not found at {executable}; install mosquitto or set "
                "EDGE_GATEWAY_TEST_MOSQUITTO to its path"
            )
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port(self.host)
        self.executable = executable
        self.extra_config = extra_config
        self.preamble = preamble
        self.allow_anonymous = allow_anonymous
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.persistence_dir = self.workdir / "persistence"
        self.persistence_dir.mkdir(exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False

    # -- lifecycle -----------------------------------------------------------------------------

    def _write_config(self) -> None:
        lines = [
            *([self.preamble.strip()] if self.preamble else []),
            # Run as whoever runs the tests: as root mosquitto would otherwise drop to the
            # `mosquitto` user, which cannot write into pytest's private tmp directories.
            f"user {getpass.getuser()}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "persistence_file mosquitto.db",
            # Save often so that even after SIGKILL the broker restarts with recent sessions.
            "autosave_interval 1",
            "persistent_client_expiration 1h",
            "max_queued_messages 10000",
            "max_inflight_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            f"listener {self.port} {self.host}",
        ]
        if self.extra_config:
            lines.append(self.extra_config.strip())
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto (again) on `self.port` and wait until it accepts connections."""
        if self.running:
            raise BrokerError("broker already running")
        self._write_config()
        self._proc = subprocess.Popen(
            [self.executable, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._frozen = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._proc = None
                raise BrokerError(
                    f"mosquitto exited at start (port {self.port}): {err.strip()}\n"
                    f"log:\n{self.log_text()}"
                )
            if self._port_open():
                return
            time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not open port {self.port} within {timeout} s")

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BrokerError("broker not running")
        return self._proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Orderly stop (SIGTERM): mosquitto writes its persistence file and exits."""
        if self._proc is None:
            return
        if self._frozen:
            self.thaw()
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final persistence save."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._close()

    def freeze(self) -> None:
        """SIGSTOP: sockets stay open and the kernel still ACKs, but the broker never answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self._frozen = False

    def _close(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None
        self._frozen = False

    def wait_saved(self, timeout: float = 5.0) -> None:
        """Wait until mosquitto writes its persistence file (autosave) after this call."""
        db = self.persistence_dir / "mosquitto.db"
        since = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if db.stat().st_mtime >= since:
                    return
            time.sleep(0.05)
        raise BrokerError(f"mosquitto did not save {db} within {timeout} s")

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class Observer:
    """A plain paho subscriber on its own network thread, recording every message it receives.

    It keeps a persistent session (MQTT 5, clean start off), so messages published while a
    broker restart has it disconnected are queued by the broker and still arrive. It is the
    consumer's view in end-to-end tests: what reached a subscriber, in which order, how often.
    """

    def __init__(
        self,
        broker: MosquittoBroker | Endpoint,
        topic: str = "#",
        *,
        client_id: str = "test-observer",
        clean: bool = False,
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._broker = broker
        self._topic = topic
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes, bool]] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._props.SessionExpiryInterval = 0 if clean else 3600
        self._clean = clean

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self._topic, qos=1)

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self._messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self, timeout: float = 5.0) -> Observer:
        self._client.connect(
            self._broker.host,
            self._broker.port,
            keepalive=60,
            clean_start=self._clean,
            properties=self._props,
        )
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise BrokerError("observer did not get its SUBACK")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def messages(self, topic_prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self._messages if m[0].startswith(topic_prefix)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def __enter__(self) -> Observer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_once(
    broker: MosquittoBroker | Endpoint,
    topic: str,
    payload: bytes,
    *,
    qos: int = 1,
    retain: bool = False,
) -> None:
    """Publish one message from a throwaway client and wait for its PUBACK."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5.0)
        if not info.is_published():
            raise BrokerError(f"publish to {topic} not acknowledged within 5 s")
    finally:
        client.disconnect()
        client.loop_stop()


def retained(broker: MosquittoBroker | Endpoint, topic: str, timeout: float = 2.0) -> bytes | None:
    """The message the broker holds retained on `topic` (None if there is none)."""
    observer = Observer(
        broker, topic, client_id=f"retained-{os.getpid()}-{time.monotonic_ns()}", clean=True
    )
    observer.start()
    try:
        observer.wait_for(lambda: bool(observer.messages()), timeout)
        found = [payload for _, payload, is_retained in observer.messages() if is_retained]
        return found[-1] if found else None
    finally:
        observer.stop()
