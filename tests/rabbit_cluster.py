"""A throwaway RabbitMQ cluster on loopback, for the AMQP source's test and the cluster bench.

Debian's ``rabbitmq-server`` (3.10) is started from its real scripts in ``/usr/lib/rabbitmq/bin``
(the ``/usr/sbin`` wrappers switch to the ``rabbitmq`` user and its home), one node per
``RABBITMQ_NODENAME`` with its own ports, data, logs, config and enabled-plugins file under a
temporary directory, and an Erlang cookie of its own through ``HOME``. A system node already
running on this machine is never touched: ``RABBITMQ_CONF_ENV_FILE`` points at an empty file so
``/etc/rabbitmq/rabbitmq-env.conf`` does not rename ours after it.

Every queue is mirrored on every node (classic mirrored queues: policy ``ha-mode all``,
``ha-sync-mode automatic``) — the consumer's queue and the MQTT plugin's per-session queues of
the gateways, so both survive losing either node. A quorum queue of two replicas would not: it
needs a majority, and one of two is not one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.broker import free_port

__all__ = ["MIRROR_POLICY", "RabbitNode", "available", "rabbit_cluster"]

_BIN = Path("/usr/lib/rabbitmq/bin")
#: Applied to all queues: the consumer's durable queue and the gateways' MQTT session queues.
MIRROR_POLICY = '{"ha-mode":"all","ha-sync-mode":"automatic"}'


def available() -> bool:
    return (_BIN / "rabbitmq-server").exists() and (_BIN / "rabbitmqctl").exists()


@dataclass
class RabbitNode:
    """One node: ``amqp_port`` (AMQP 0-9-1), ``mqtt_port`` (MQTT 3.1.1 plugin)."""

    name: str
    base: Path
    home: Path
    amqp_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def env(self) -> dict[str, str]:
        d = self.base / self.name
        env = dict(os.environ)
        env.update(
            HOME=str(self.home),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(d / "rabbit.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def write_config(self) -> None:
        d = self.base / self.name
        (d / "log").mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            "mqtt.default_user = guest\nmqtt.default_pass = guest\n"
            "loopback_users = none\n"
            # The bench's publishers and workers share this box's two cores and disk.
            "disk_free_limit.absolute = 50MB\n"
            "vm_memory_high_watermark.relative = 0.6\n"
        )
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        done = subprocess.run([str(_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.nodename}: "
                               f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done.stdout

    def start(self, timeout: float = 90.0) -> None:
        self.write_config()
        log = open(self.base / self.name / "log" / "console.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen([str(_BIN / "rabbitmq-server")], env=self.env(),
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        # ``wait`` waits for the pid file, then for the node's applications to be up.
        self.ctl("wait", str(self.base / self.name / "rabbit.pid"), "--timeout",
                 str(int(timeout)), timeout=timeout + 10)
        self.wait_port(self.mqtt_port, timeout)

    def start_app(self, timeout: float = 90.0) -> None:
        self.ctl("start_app", timeout=timeout)
        self.wait_port(self.mqtt_port, timeout)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.nodename}: nothing listens on {port} after {timeout:g} s")

    def shutdown(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("shutdown", timeout=60, check=False)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait(10)


@contextlib.contextmanager
def rabbit_cluster(nodes: int = 2) -> Iterator[list[RabbitNode]]:
    """``nodes`` clustered nodes (the first is the seed), every queue mirrored on all of them."""
    if not available():
        raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    base = Path(tempfile.mkdtemp(prefix="rabbit-cluster-"))
    home = base / "home"
    home.mkdir()
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)
    (base / "rabbitmq-env.conf").write_text("")
    cluster = [RabbitNode(f"rabbit-{chr(ord('a') + i)}", base, home) for i in range(nodes)]
    try:
        for node in cluster:
            node.start()
        for node in cluster[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", cluster[0].nodename)
            node.start_app()
        cluster[0].ctl("set_policy", "mirror-all", ".*", MIRROR_POLICY, "--apply-to", "queues")
        yield cluster
    finally:
        for node in reversed(cluster):
            node.shutdown()
        shutil.rmtree(base, ignore_errors=True)
