"""The demo's broker: mosquitto when it is installed, otherwise :mod:`hil_tests.mini_broker`.

mosquitto runs with a throw-away config in the demo's data dir (one loopback listener,
anonymous, no persistence) and speaks MQTT 5, so the consumer's shared subscriptions work; the
embedded broker speaks MQTT 3.1.1 only, so the gateway is configured with ``protocol = "3.1.1"``
and the demo runs without ``edge-central``. ``EDGE_GATEWAY_DEMO_BROKER`` = ``mosquitto`` |
``embedded`` | ``auto`` (default) forces the choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["BROKER_ENV", "DemoError", "EmbeddedBroker", "MosquittoBroker", "choose_broker",
           "find_mosquitto", "free_port", "tail"]

BROKER_START_TIMEOUT_S = 10.0
BROKER_ENV = "EDGE_GATEWAY_DEMO_BROKER"


class DemoError(Exception):
    """The demo could not set something up; the message says what and what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


async def _wait_for_port(port: int, timeout: float, alive: Any = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


class MosquittoBroker:
    """mosquitto on a free loopback port with a throw-away config in the demo's data dir."""

    protocol = "5"

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    @property
    def label(self) -> str:
        return f"mosquitto ({self.executable}) on 127.0.0.1:{self.port}"

    async def start(self) -> None:
        import getpass

        self.port = free_port()
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join([
            "# Written by `edge-gateway demo`: one loopback listener, anonymous, nothing on disk.",
            # As root, mosquitto would switch to its own user, which may not exist on a fresh box.
            f"user {getpass.getuser()}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]) + "\n")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([self.executable, "-c", str(config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         process_group=0)
        proc = self.proc
        if not await _wait_for_port(self.port, BROKER_START_TIMEOUT_S, lambda: proc.poll() is None):
            await self.stop()
            raise DemoError(f"mosquitto did not start on 127.0.0.1:{self.port}; its log "
                            f"{self.log_path} says:\n{tail(self.log_path)}\nSet {BROKER_ENV}="
                            "embedded to use the built-in broker instead.")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


class EmbeddedBroker:
    """The built-in MQTT 3.1.1 broker (:mod:`hil_tests.mini_broker`) in the demo's event loop."""

    protocol = "3.1.1"

    def __init__(self) -> None:
        from hil_tests.mini_broker import MiniBroker

        self.broker = MiniBroker("127.0.0.1", 0)

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def label(self) -> str:
        return f"embedded MQTT 3.1.1 broker on 127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()


def choose_broker(workdir: Path) -> MosquittoBroker | EmbeddedBroker:
    choice = os.environ.get(BROKER_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "mosquitto", "embedded"):
        raise DemoError(f"{BROKER_ENV}={choice!r}: expected auto, mosquitto or embedded")
    executable = find_mosquitto() if choice != "embedded" else None
    if choice == "mosquitto" and executable is None:
        raise DemoError(f"{BROKER_ENV}=mosquitto but no mosquitto was found on PATH or at "
                        "/usr/sbin/mosquitto; install it (apt-get install mosquitto) or unset "
                        f"{BROKER_ENV}")
    return MosquittoBroker(executable, workdir) if executable else EmbeddedBroker()


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty)"
