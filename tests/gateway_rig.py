"""End-to-end rig: simulated meters, a real mosquitto, and the daemon as a real subprocess.

The simulators run in this (test) process — DL/T 645 lines on their own threads, Modbus TCP servers
on a background event loop — and the daemon opens the pty devices and TCP ports like it would real
hardware. A consumer (:class:`tests.broker.Observer`) records what reached the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from hil_tests.load_model import DEFAULT_START_EPOCH, LoadModel, ManualClock
from hil_tests.modbus_sim import (
    ModbusMetersHandle,
    SimulatedModbusMeter,
    start_modbus_tcp_meters,
)
from hil_tests.sim import Dlt645Rig, consecutive_addresses, run_dlt645_line
from protocols.payload import decode_message
from protocols.profiles import load_named_profile
from tests.broker import MosquittoBroker, Observer

REPO = Path(__file__).resolve().parent.parent

#: A light DL/T 645 profile for tests: three transactions per poll.
TEST_PROFILE = """\
kind = "dlt645"
version = "2007"
description = "test profile: energy block, voltages, power"

[[reads]]
di = "0001FF00"

[[reads]]
di = "0201FF00"

[[reads]]
di = "0203FF00"
"""


class BackgroundLoop:
    """An asyncio loop on a thread, for the async Modbus simulators inside a sync test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class MeterRef:
    meter_id: str
    bus: str
    address: str | int
    sim: Any  # hil_tests.load_model.SimMeter


@dataclass
class GatewayRig:
    workdir: Path
    broker: MosquittoBroker
    clock: ManualClock
    meters: dict[str, MeterRef] = field(default_factory=dict)
    lines: dict[str, Dlt645Rig] = field(default_factory=dict)
    modbus: ModbusMetersHandle | None = None  # the Modbus TCP simulator (requests, relay writes)
    config_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    gateway_id: str = "gw-test"
    prefix: str = "mtr/v1"
    #: Put before the daemon's command line (tests/unit_sandbox.py: the unit's seccomp filter).
    command_prefix: list[str] = field(default_factory=list)

    # -- daemon ------------------------------------------------------------------------------------
    def start_daemon(self) -> subprocess.Popen[bytes]:
        assert self.config_path is not None
        log = open(self.workdir / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "gateway.app.cli", "run", "--config",
             str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self.process

    def stop_daemon(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill_daemon(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def log_text(self) -> str:
        path = self.workdir / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def store_path(self) -> Path:
        return self.workdir / "var" / "gateway.sqlite"

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}/{self.gateway_id}/{suffix}"


def write_config(rig: GatewayRig, buses: Sequence[dict[str, Any]], meters: Sequence[dict[str, Any]],
                 extra: str = "") -> Path:
    (rig.workdir / "profiles").mkdir(exist_ok=True)
    (rig.workdir / "profiles" / "test-dlt645.toml").write_text(TEST_PROFILE)
    lines = [
        "[gateway]", f'id = "{rig.gateway_id}"', 'data_dir = "var"', "health_interval_s = 2", "",
        "[mqtt]", 'host = "127.0.0.1"', f"port = {rig.broker.port}", "keepalive_s = 5",
        "reconnect_min_s = 0.2", "reconnect_max_s = 2", "",
    ]
    for bus in buses:
        lines.append("[[buses]]")
        lines += [f"{k} = {_toml(v)}" for k, v in bus.items()]
        lines.append("")
    for meter in meters:
        lines.append("[[meters]]")
        lines += [f"{k} = {_toml(v)}" for k, v in meter.items()]
        lines.append("")
    path = rig.workdir / "gateway.toml"
    path.write_text("\n".join(lines) + extra)
    rig.config_path = path
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return f'"{value}"'


@contextlib.contextmanager
def gateway_rig(tmp_path: Path, *, dlt645_buses: int = 2, meters_per_bus: int = 8,
                modbus_meters: int = 2, baudrate: int = 9600, poll_interval_s: float = 2.0,
                timeout_ms: int = 200, response_delay_ms: float = 20,
                broker: MosquittoBroker | None = None,
                start_epoch: float = DEFAULT_START_EPOCH,
                modbus_profiles: Sequence[str] = (), parity: str = "N") -> Iterator[GatewayRig]:
    """Everything an end-to-end test needs, torn down in reverse order. ``start_epoch`` is the
    DL/T 645 meters' simulated time when ``rig.clock`` reads 0. ``modbus_profiles`` names the
    profile of Modbus unit 1, 2, ... (default ``sdm630`` for every unit). ``parity`` is what the
    DL/T 645 buses are configured with (production lines run "E"; the daemon opens a pty 8N1
    whatever it says, gateway/config/serial_line.py)."""
    own_broker = broker is None
    if broker is None:
        broker = MosquittoBroker(tmp_path / "mosquitto")
        broker.start()
    clock = ManualClock(0.0)  # frozen: registers hold still, so published values can be compared
    rig = GatewayRig(tmp_path, broker, clock)
    bg = BackgroundLoop()
    stack = contextlib.ExitStack()
    try:
        buses: list[dict[str, Any]] = []
        meters: list[dict[str, Any]] = []
        for b in range(dlt645_buses):
            addresses = consecutive_addresses(f"{(b + 1) * 100 + 1:012d}", meters_per_bus)
            line = stack.enter_context(run_dlt645_line(addresses, baudrate=baudrate, seed=b + 1,
                                                       clock=clock, start_epoch=start_epoch,
                                                       response_delay_ms=response_delay_ms))
            name = f"rs485-{b + 1}"
            rig.lines[name] = line
            buses.append({"name": name, "protocol": "dlt645", "port": line.device,
                          "baudrate": baudrate, "parity": parity, "timeout_ms": timeout_ms,
                          "retries": 1, "comm_loss_after": 2})
            for a in addresses:
                meter_id = f"m-{a[-4:]}"
                rig.meters[meter_id] = MeterRef(meter_id, name, a, line.meters[a].sim)
                meters.append({"id": meter_id, "bus": name, "address": a, "profile": "test-dlt645",
                               "poll_interval_s": poll_interval_s})
        if modbus_meters:
            model = LoadModel(seed=99, clock=clock)
            names = [modbus_profiles[u - 1] if u <= len(modbus_profiles) else "sdm630"
                     for u in range(1, modbus_meters + 1)]
            sims = [SimulatedModbusMeter(u, load_named_profile(names[u - 1]),  # type: ignore[arg-type]
                                         model.meter(f"mb-{u}", phases=3))
                    for u in range(1, modbus_meters + 1)]
            handle = bg.run(start_modbus_tcp_meters(sims, "127.0.0.1", 0))
            rig.modbus = handle
            stack.callback(lambda: bg.run(handle.close()))
            buses.append({"name": "tcp-1", "protocol": "modbus-tcp", "host": "127.0.0.1",
                          "port": handle.port, "timeout_ms": 1000, "max_concurrency": 2})
            for s in sims:
                meter_id = f"mb-{s.unit_id}"
                rig.meters[meter_id] = MeterRef(meter_id, "tcp-1", s.unit_id, s.meter)
                meters.append({"id": meter_id, "bus": "tcp-1", "address": s.unit_id,
                               "profile": names[s.unit_id - 1],
                               "poll_interval_s": poll_interval_s})
        write_config(rig, buses, meters)
        yield rig
    finally:
        if rig.process is not None:
            with contextlib.suppress(Exception):
                rig.kill_daemon()
        stack.close()
        bg.close()
        if own_broker and broker.running:
            broker.kill()


# -- consumer-side checks ---------------------------------------------------------------------------

def decoded(observer: Observer, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for topic, payload, _retained in observer.messages(prefix):
        with contextlib.suppress(Exception):
            out.append((topic, decode_message(payload)))
    return out


def reads_by_meter(observer: Observer, rig: GatewayRig) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for _topic, msg in decoded(observer, rig.topic("reads/")):
        out.setdefault(msg["meter"], []).append(msg)
    return out


def simulator_registers(ref: MeterRef) -> dict[str, Decimal]:
    return ref.sim.snapshot().values()  # type: ignore[no-any-return]


def wait_until(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
