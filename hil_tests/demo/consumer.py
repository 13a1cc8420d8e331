"""The demo's head end: an ``edge-central`` worker storing into SQLite, and what it stored.

The rig must not import the consumer (import-linter: the gateway and its tools stand on the
wire contract, not on ``central``), and a demo that decoded MQTT itself would prove nothing
about the consumer. So both halves are ``edge-central`` subprocesses, as an operator runs them:

* ``edge-central run --config DATA/central.toml --worker demo`` — one worker of the MQTT 5
  shared subscription, its log in ``DATA/central-worker.log``, its database
  ``DATA/central.sqlite``;
* ``edge-central status --config … --detail --watch 1`` — one JSON line per gateway a second
  (values stored per meter, gaps, alarm events, last birth/death), which :class:`DemoCentral`
  folds into a :class:`CentralSnapshot` for the live view.

Replay needs keys on both sides: the worker signs ``replay`` commands with a VIEWER key
(``central-1``) the gateway trusts, and pins the gateway's result key. The demo makes both in
its data dir; :meth:`DemoCentral.gateway_toml` is what the daemon's config gains.

The worker runs with ``session_expiry_s = 0``: when the scenario stops it (as a worker crash or
a broker restart without persistence would), the broker forgets its session and what the
gateway publishes meanwhile reaches nobody. On its return the worker sees the hole in the
gateway's ``seq``, records a gap after ``[gaps] grace_s`` and asks the gateway to replay it.

Shared subscriptions need MQTT 5: with the embedded MQTT 3.1.1 broker the demo runs without
the consumer and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.ed25519 import SigningKey

__all__ = ["CentralSnapshot", "DemoCentral"]

WORKER_NAME = "demo"
REPLAY_KID = "central-1"
#: A hole older than this is a gap. Short, so the demo shows detection and replay within
#: seconds; the shipped default (30 s) allows for reordering across many workers.
GAP_GRACE_S = 2
STATUS_EVERY_S = 1.0
WORKER_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
#: values/s is the growth of stored values over about this long.
RATE_WINDOW_S = 5.0


@dataclass(frozen=True, slots=True)
class CentralSnapshot:
    """What the consumer's database says about the demo gateway, for drawing."""

    worker: str  # "running" | "stopped (scenario)" | "starting" | "exited N"
    status: dict[str, Any] | None  # newest `status --detail` line, None before the first
    values_per_s: float | None
    status_age_s: float | None

    def meters_stored(self, meter_ids: list[str]) -> list[str]:
        stored = (self.status or {}).get("values_by_meter") or {}
        return [m for m in meter_ids if stored.get(m)]

    def gap_counts(self) -> tuple[int, int]:
        """(open, filled) gaps of the gateway's current epoch."""
        s = self.status or {}
        return int(s.get("open_gaps", 0)), int(s.get("gaps_filled", 0))


def _pem(key: SigningKey) -> bytes:
    return key.to_pkcs8_pem()


def _public_hex(key: SigningKey) -> str:
    return key.public_bytes().hex()


@dataclass
class _Rate:
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def add(self, at_s: float, values: int) -> float | None:
        self.samples.append((at_s, values))
        while len(self.samples) > 2 and at_s - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        t0, v0 = self.samples[0]
        return (values - v0) / (at_s - t0) if at_s - t0 >= 1.0 else None


class DemoCentral:
    """The worker and the status watcher: started, stopped by the scenario, read, stopped."""

    def __init__(self, root: Path, broker_port: int, gateway_id: str, topic_prefix: str,
                 env: dict[str, str]) -> None:
        self.root = root
        self.gateway_id = gateway_id
        self.env = env
        self.config_path = root / "central.toml"
        self.db_path = root / "central.sqlite"
        self.worker_log = root / "central-worker.log"
        self.status_log = root / "central-status.log"
        self._worker: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._worker_state = "starting"
        self._status: dict[str, Any] | None = None
        self._status_at = 0.0
        self._rate = _Rate()
        self._values_per_s: float | None = None
        self._worker_exits: list[int] = []
        self._caught_up = True  # False while a stop during the scenario's outage is unresolved
        replay_key, gateway_key = SigningKey.generate(), SigningKey.generate()
        keys = root / "keys"
        keys.mkdir(exist_ok=True)
        (keys / f"{REPLAY_KID}.key").write_bytes(_pem(replay_key))
        (keys / f"{REPLAY_KID}.pub").write_text(_public_hex(replay_key) + "\n")
        (keys / "gateway-result.key").write_bytes(_pem(gateway_key))
        (keys / "gateway-result.pub").write_text(_public_hex(gateway_key) + "\n")
        self.keys = keys
        q = json.dumps
        self.config_path.write_text("\n".join([
            "# Written by `edge-gateway demo` for its edge-central worker; see configs/central.toml.",
            "[mqtt]", 'host = "127.0.0.1"', f"port = {broker_port}",
            f"topic_prefix = {q(topic_prefix)}", 'share_group = "demo"', "keepalive_s = 10",
            "# The broker forgets the worker's session when it stops: the scenario's worker outage",
            "# then loses messages, and the worker gets them back by replay.",
            "session_expiry_s = 0",
            "", "[database]", f"url = {q('sqlite:///' + str(self.db_path))}",
            "", "[gaps]", f"grace_s = {GAP_GRACE_S}", "scan_interval_s = 0.5",
            "", "[ingest]", "batch_max = 200", "batch_wait_ms = 50",
            "", "[replay]", f"kid = {q(REPLAY_KID)}",
            f"private_key = {q(str(keys / (REPLAY_KID + '.key')))}",
            "min_interval_s = 1", "retry_s = 5",
            "", "[[gateways]]", f"id = {q(gateway_id)}",
            f"result_key = {q(str(keys / 'gateway-result.pub'))}",
        ]) + "\n")

    def gateway_toml(self) -> str:
        """The daemon's config lines trusting the worker's replay key and naming its result key."""
        q = json.dumps
        return "\n".join([
            "", "# The demo's edge-central worker asks for replays with this VIEWER key.",
            "[commands]", "clock_trusted = true",
            f"gateway_key = {q(str(self.keys / 'gateway-result.key'))}",
            "", "[[operators]]", f"kid = {q(REPLAY_KID)}",
            f"public_key = {q(str(self.keys / (REPLAY_KID + '.pub')))}", 'roles = ["VIEWER"]',
        ]) + "\n"

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "central.cli", *args, "--config", str(self.config_path)]

    # -- the worker -----------------------------------------------------------------------------

    @property
    def worker_running(self) -> bool:
        return self._worker is not None and self._worker.returncode is None

    async def start_worker(self, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        """Start the worker and wait (at most ``timeout``) until it has subscribed (its log says
        ``connected (``)."""
        if self.worker_running:
            return
        before = self._log_text().count(" connected (")
        self._worker_state = "starting"
        with self.worker_log.open("ab") as log:
            self._worker = await asyncio.create_subprocess_exec(
                *self._command("run", "--worker", WORKER_NAME), stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=self.env, cwd=self.root, process_group=0)
        deadline = time.monotonic() + timeout
        while self._log_text().count(" connected (") <= before:
            if self._worker.returncode is not None or time.monotonic() > deadline:
                self._worker_state = f"exited {self._worker.returncode}"
                raise RuntimeError(f"edge-central did not connect; {self.worker_log} ends with:\n"
                                   + "\n".join(self._log_text().splitlines()[-10:]))
            await asyncio.sleep(0.1)
        self._worker_state = "running"

    async def stop_worker(self, why: str = "") -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            code = await _terminate(worker)
            if code != 0:
                self._worker_exits.append(code)
        self._worker_state = f"stopped{f' ({why})' if why else ''}"

    def _log_text(self) -> str:
        try:
            return self.worker_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- what it stored -------------------------------------------------------------------------

    async def start_watching(self) -> None:
        with self.status_log.open("ab") as log:
            self._watcher = await asyncio.create_subprocess_exec(
                *self._command("status", "--detail", "--watch", f"{STATUS_EVERY_S:g}"),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=self.env,
                cwd=self.root, process_group=0)
        self._reader = asyncio.create_task(self._read(self._watcher), name="demo-central-status")

    async def _read(self, watcher: asyncio.subprocess.Process) -> None:
        assert watcher.stdout is not None
        async for raw in watcher.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict) or line.get("gw") != self.gateway_id:
                continue
            self._status, self._status_at = line, time.monotonic()
            self._values_per_s = self._rate.add(time.monotonic(), int(line.get("values_stored", 0)))

    def snapshot(self) -> CentralSnapshot:
        age = None if self._status is None else time.monotonic() - self._status_at
        state = self._worker_state
        if self._worker is not None and self._worker.returncode is not None:
            state = f"exited {self._worker.returncode}"
        return CentralSnapshot(state, self._status, self._values_per_s, age)

    async def settle(self, since_ms: int, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the store has caught up with a daemon that stopped
        after ``since_ms``: its death stored, nothing behind the high-water mark, no open gap."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self._status or {}
            if ((s.get("last_death_ms") or 0) >= since_ms and s.get("seq_lag") == 0
                    and s.get("open_gaps") == 0 and s.get("now_ms", 0) > since_ms):
                return True
            await asyncio.sleep(0.2)
        return False

    async def catch_up(self, start_timeout: float, timeout: float) -> bool:
        """Start the worker the scenario stopped and wait (at most ``timeout``) for the gap its
        outage left to be filled. False (and :meth:`problems` says so) if it was not: a stop
        during the outage may then leave the store without what the gateway sent meanwhile."""
        filled_before = self.snapshot().gap_counts()[1]
        self._caught_up = False
        await self.start_worker(timeout=start_timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            open_gaps, filled = self.snapshot().gap_counts()
            if filled > filled_before and not open_gaps:
                self._caught_up = True
                return True
            await asyncio.sleep(0.2)
        return False

    def problems(self, meter_ids: list[str]) -> list[str]:
        snap = self.snapshot()
        out = []
        if not self._caught_up:
            out.append("the demo stopped during the edge-central worker's outage and no replay "
                       "filled it in time: what the gateway sent meanwhile may be missing from "
                       f"{self.db_path}")
        if self._worker_exits:
            out.append(f"the edge-central worker exited with code {self._worker_exits[0]} "
                       f"(log {self.worker_log})")
        missing = [m for m in meter_ids if m not in snap.meters_stored(meter_ids)]
        if missing:
            out.append(f"edge-central stored no reads from {len(missing)} meters "
                       f"({', '.join(missing)})")
        open_gaps, _ = snap.gap_counts()
        if open_gaps:
            out.append(f"edge-central has {open_gaps} open gap(s) (log {self.worker_log})")
        return out

    async def close(self) -> None:
        """Stop the watcher and the worker (SIGTERM, then SIGKILL after a wait)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await _terminate(watcher)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.worker_running:
            await self.stop_worker("demo over")


async def _terminate(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode if proc.returncode is not None else -1
