"""``edge-gateway demo``: the whole system on one machine, with nothing but this project installed.

What runs, and where:

* **Simulated meters, in this process.** Two RS-485 lines on pseudo-terminals, each with eight
  DL/T 645 meters at 2400 baud 8E1 with real wire timing (:mod:`hil_tests.serial_line`; each line
  is a thread of its own): ``rs485-1`` carries three-phase DL/T 645-2007 meters, ``rs485-2``
  single-phase -2007 meters and two older -1997 ones. Two Modbus TCP servers on free loopback
  ports carry two SDM630 and two DTSU666 meters. One :class:`~hil_tests.load_model.LoadModel`
  drives all twenty, ``ACCELERATION`` × faster than real time so that registers visibly move.
* **A broker** (:mod:`hil_tests.demo.brokers`): mosquitto when it is installed, otherwise the
  embedded :mod:`hil_tests.mini_broker` (MQTT 3.1.1); ``EDGE_GATEWAY_DEMO_BROKER`` =
  ``mosquitto`` | ``embedded`` | ``auto`` (default) forces the choice.
* **The daemon, as a real subprocess**: ``python -m gateway.app.cli run --config DATA/gateway.toml``
  with its log in ``DATA/daemon.log`` — the same code path as production. It opens the ptys'
  device paths itself, as it would open ``/dev/ttyUSB0``. It runs in its own process group so a
  Ctrl-C reaches only the demo, which then stops things in order.
* **The consumer, ``edge-central``, as subprocesses** (with mosquitto: it needs MQTT 5 shared
  subscriptions, which the embedded broker lacks): one worker storing into ``DATA/central.sqlite``
  and ``edge-central status --detail --watch`` reporting what it stored
  (:mod:`hil_tests.demo.consumer`).
* **A view**, subscribed to ``P/G/#`` like a head-end: a live ``rich`` screen on a terminal, a
  plain summary every ``PLAIN_SUMMARY_EVERY_S`` otherwise. Below what went over the wire, what
  the consumer stored: values per second, meters, gaps and their replays, alarm events, last
  birth and death.

To give the view something to show, a small scenario replays on a cycle: the consumer's worker
stops for a few seconds (the broker forgets its session, so what the gateway publishes meanwhile
is lost to it) and comes back, finds the gap and has the gateway replay it; a meter's terminal
cover is opened and closed again; later another meter stops answering for a while (comm loss).

Stopping (``--duration``, Ctrl-C, SIGTERM, or SIGHUP from a closed terminal): if the scenario
had the consumer's worker stopped, it is started again and gets up to ``CENTRAL_CATCH_UP_S`` to
have the gap replayed while the daemon still runs; then SIGTERM to the daemon and wait for it (it
commits, publishes its death and exits 0), up to ``CENTRAL_SETTLE_S`` for the consumer to store
the rest, then the consumer, the view, the broker and the simulators. A second Ctrl-C kills the
daemon instead of waiting. The demo exits 0 when the daemon exited 0 and every meter was read
at least once (and, with the consumer, every meter's reads were stored and no gap is left open),
otherwise 1 saying what is missing. (Only a SIGKILL of the demo itself leaves the daemon, the
consumer and mosquitto running: nothing can clean up then.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hil_tests.demo.brokers import DemoError, choose_broker, tail
from hil_tests.demo.consumer import DemoCentral
from hil_tests.demo.view import (
    DemoObserver,
    DemoSnapshot,
    DemoState,
    MeterInfo,
    central_plain,
    render_plain,
    render_rich,
)

GATEWAY_ID = "gw-demo"
TOPIC_PREFIX = "mtr/v1"
#: Simulated seconds per real second: a minute of load per second moves a 3 kW meter's register
#: by 0.05 kWh a second, visible at the register's 0.01 kWh resolution between two polls.
ACCELERATION = 60.0
#: One poll of the stock dlt645-2007 profile is 9 transactions and takes about 2.2 s at 2400 baud
#: (measured: reads of one poll span 2.1-2.3 s in the published timestamps), so eight meters need
#: about 18 s. 20 s keeps the line just inside its budget — the bus statistics show ~4
#: transactions/s and overruns stop growing after the first cycle (which may count a few, see the
#: report on PollSchedule.aligned); anything faster would show overruns growing every cycle.
DLT645_POLL_INTERVAL_S = 20
MODBUS_POLL_INTERVAL_S = 5
HEALTH_INTERVAL_S = 5
PLAIN_SUMMARY_EVERY_S = 10.0
LIVE_REFRESH_S = 0.5
DAEMON_STOP_TIMEOUT_S = 30.0
#: ``--duration`` counts from the gateway's birth, or from this long after the daemon started.
ONLINE_TIMEOUT_S = 60.0
#: After the daemon stopped: how long the consumer may take to store its last messages.
CENTRAL_SETTLE_S = 5.0
#: Stopping during the scenario's worker outage: how long the worker may take to find the gap
#: and have it replayed (a new message, ``GAP_GRACE_S``, the replay) before the daemon stops.
CENTRAL_CATCH_UP_S = 8.0
#: The scenario's cycle: (seconds into the cycle, action, meter id).
#: The consumer's outage comes first so that a 25 s demo already shows a gap filled by replay.
SCENARIO: tuple[tuple[float, str, str], ...] = (
    (4.0, "central_down", ""),
    (8.0, "central_up", ""),
    (8.0, "open_cover", "m-104"),
    (38.0, "close_cover", "m-104"),
    (70.0, "silence", "m-206"),
    (150.0, "answer", "m-206"),
)
SCENARIO_CYCLE_S = 200.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: SIGHUP too: a closed terminal must not kill the demo before it has stopped the daemon and the
#: broker, which run in their own process groups and would otherwise be left behind.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# ---------------------------------------------------------------------------------------------
# What is simulated


@dataclass(frozen=True, slots=True)
class DemoMeter:
    id: str
    address: str | int  # DL/T 645: 12 digits; Modbus: unit id
    profile: str
    kind: str
    phases: int = 3
    version: int = 2007


@dataclass(frozen=True, slots=True)
class DemoBus:
    name: str
    protocol: str  # "dlt645" | "modbus-tcp"
    meters: tuple[DemoMeter, ...]
    poll_interval_s: float


def demo_layout() -> list[DemoBus]:
    """Two DL/T 645 lines of eight meters (different address ranges) and two Modbus TCP servers."""
    line1 = tuple(DemoMeter(f"m-1{n:02d}", f"0000000001{n:02d}", "dlt645-2007", "DL/T 645-2007 3φ")
                  for n in range(1, 9))
    line2 = tuple(DemoMeter(f"m-2{n:02d}", f"0000000002{n:02d}", "dlt645-2007-single-phase",
                            "DL/T 645-2007 1φ", phases=1) for n in range(1, 7))
    line2 += tuple(DemoMeter(f"m-2{n:02d}", f"0000000002{n:02d}", "dlt645-1997", "DL/T 645-1997 3φ",
                             version=1997) for n in (7, 8))
    sdm = tuple(DemoMeter(f"m-30{u}", u, "sdm630", "Modbus SDM630") for u in (1, 2))
    dtsu = tuple(DemoMeter(f"m-40{u}", u, "dtsu666", "Modbus DTSU666") for u in (1, 2))
    return [
        DemoBus("rs485-1", "dlt645", line1, DLT645_POLL_INTERVAL_S),
        DemoBus("rs485-2", "dlt645", line2, DLT645_POLL_INTERVAL_S),
        DemoBus("tcp-1", "modbus-tcp", sdm, MODBUS_POLL_INTERVAL_S),
        DemoBus("tcp-2", "modbus-tcp", dtsu, MODBUS_POLL_INTERVAL_S),
    ]


def gateway_config(layout: Sequence[DemoBus], links: dict[str, str | int], broker_port: int,
                   mqtt_protocol: str, data_dir: Path) -> str:
    """The daemon's TOML config: ``links`` maps a DL/T 645 bus to its pty and a Modbus TCP bus to
    its port."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    lines = [
        "# Written by `edge-gateway demo` for its simulated meters; see configs/example.toml for",
        "# every key.",
        "[gateway]",
        f"id = {q(GATEWAY_ID)}",
        f"data_dir = {q(str(data_dir))}",
        f"health_interval_s = {HEALTH_INTERVAL_S}",
        "",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {broker_port}",
        f"topic_prefix = {q(TOPIC_PREFIX)}",
        f"protocol = {q(mqtt_protocol)}",
        "",
        f"# The simulated meters run {ACCELERATION:g}x faster than real time, so their registers",
        "# advance that many times what the polled power says: not a meter running fast.",
        "[theft]",
        f"fast_factor = {10 * ACCELERATION:g}",
        "",
        "# For the same reason their clocks gain an hour a minute on the gateway's: not read.",
        "[clock]",
        'mode = "off"',
    ]
    for bus in layout:
        lines += ["", "[[buses]]", f"name = {q(bus.name)}", f"protocol = {q(bus.protocol)}"]
        if bus.protocol == "dlt645":
            lines += [f"port = {q(str(links[bus.name]))}", "baudrate = 2400", 'parity = "E"']
        else:
            lines += ['host = "127.0.0.1"', f"port = {int(links[bus.name])}"]
    for bus in layout:
        for meter in bus.meters:
            address = q(meter.address) if isinstance(meter.address, str) else str(meter.address)
            lines += ["", "[[meters]]", f"id = {q(meter.id)}", f"bus = {q(bus.name)}",
                      f"address = {address}", f"profile = {q(meter.profile)}",
                      f"poll_interval_s = {bus.poll_interval_s:g}"]
    return "\n".join(lines) + "\n"


def _say(text: str, stream: IO[str] | None = None) -> None:
    """Print, surviving a terminal that went away (SIGHUP: writes then fail with EIO)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=stream if stream is not None else sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The run


class DemoRun:
    """One demo: set everything up, watch, stop in order, judge."""

    def __init__(self, duration_s: float | None, root: Path, out: IO[str]) -> None:
        self.duration_s = duration_s
        self.root = root
        self.out = out
        self.interactive = out.isatty()
        self.layout = demo_layout()
        self.state = DemoState(GATEWAY_ID, TOPIC_PREFIX,
                               [MeterInfo(m.id, b.name, m.kind) for b in self.layout for m in b.meters])
        self.stop = asyncio.Event()
        self.log_path = root / "daemon.log"
        self.config_path = root / "gateway.toml"
        self.started = time.monotonic()
        self.broker_label = ""
        self._dlt645_meters: dict[str, tuple[Any, str]] = {}  # meter id -> (rig, address)
        self._signals = 0
        self._daemon: asyncio.subprocess.Process | None = None
        self._daemon_killed = False
        self.central: DemoCentral | None = None
        self.central_note = ""

    def _on_signal(self) -> None:
        """First Ctrl-C/SIGTERM: stop in order. A second one while stopping: kill the daemon
        (the demo then reports it as killed) instead of waiting for its clean exit."""
        self._signals += 1
        if self._signals == 1:
            self.stop.set()
        elif self._daemon is not None and self._daemon.returncode is None:
            _say("edge-gateway demo: second interrupt, killing the daemon")
            with contextlib.suppress(ProcessLookupError):
                self._daemon.kill()
            self._daemon_killed = True

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal)
        try:
            async with contextlib.AsyncExitStack() as stack:
                daemon = await self._start_everything(stack)
                display = asyncio.create_task(self._display(), name="demo-display")
                await self._wait_online(daemon)
                scenario = asyncio.create_task(self._scenario(), name="demo-scenario")
                early_exit = await self._wait(daemon)
                scenario.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scenario
                code = await self._stop_daemon(daemon)
                display.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await display
        except DemoError as exc:
            _say(f"edge-gateway demo: {exc}")
            return 1
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        return self._verdict(code, early_exit)

    async def _start_everything(self, stack: contextlib.AsyncExitStack) -> asyncio.subprocess.Process:
        from hil_tests.dlt645_sim import MeterSpec
        from hil_tests.load_model import LoadModel
        from hil_tests.modbus_sim import SimulatedModbusMeter, start_modbus_tcp_meters
        from hil_tests.sim import run_dlt645_line
        from protocols.modbus.profile import ModbusProfile
        from protocols.profiles import load_named_profile

        broker = choose_broker(self.root)
        # Start the simulated clock at the real one, so the load curve follows the time of day.
        model = LoadModel(seed=2025, start_epoch=time.time(), acceleration=ACCELERATION)
        links: dict[str, str | int] = {}
        for seed, bus in enumerate(self.layout):
            if bus.protocol == "dlt645":
                specs = [MeterSpec(str(m.address), version=m.version, phases=m.phases, meter_id=m.id)
                         for m in bus.meters]
                try:
                    rig = stack.enter_context(run_dlt645_line(specs, model=model, baudrate=2400,
                                                              response_delay_ms=20, seed=seed))
                except OSError as exc:
                    raise DemoError(f"cannot open a pseudo-terminal for {bus.name}: {exc}; the "
                                    "demo needs /dev/ptmx and /dev/pts (mount devpts in "
                                    "containers)") from exc
                links[bus.name] = rig.device
                for m in bus.meters:
                    self._dlt645_meters[m.id] = (rig, str(m.address))
            else:
                profile = load_named_profile(bus.meters[0].profile)
                if not isinstance(profile, ModbusProfile):
                    raise DemoError(f"profile {bus.meters[0].profile} is not a Modbus register map")
                units = [SimulatedModbusMeter(int(m.address), profile, model.meter(m.id))
                         for m in bus.meters]
                try:
                    handle = await start_modbus_tcp_meters(units, "127.0.0.1", 0)
                except OSError as exc:
                    raise DemoError(f"cannot serve Modbus TCP for {bus.name} on 127.0.0.1: "
                                    f"{exc}") from exc
                stack.push_async_callback(handle.close)
                links[bus.name] = handle.port
        try:
            await broker.start()
        except OSError as exc:
            raise DemoError(f"cannot start the broker on 127.0.0.1: {exc}") from exc
        stack.push_async_callback(broker.stop)
        self.broker_label = broker.label
        config = gateway_config(self.layout, links, broker.port, broker.protocol, self.root / "var")
        if broker.protocol == "5":
            central = self.central = DemoCentral(self.root, broker.port, GATEWAY_ID, TOPIC_PREFIX,
                                                 _child_env())
            stack.push_async_callback(central.close)
            config += central.gateway_toml()
            try:
                await central.start_worker()
            except RuntimeError as exc:
                raise DemoError(str(exc)) from None
            await central.start_watching()
        else:
            self.central_note = ("edge-central is not running: it needs MQTT 5 shared "
                                 "subscriptions, which the embedded broker lacks (install "
                                 "mosquitto)")
        self.config_path.write_text(config)
        observer = DemoObserver("127.0.0.1", broker.port, self.state)
        try:
            await asyncio.to_thread(observer.start)
        except (OSError, RuntimeError) as exc:
            raise DemoError(f"the view cannot subscribe to {broker.label}: {exc}") from exc
        stack.callback(observer.stop)
        daemon = self._daemon = await self._start_daemon()
        stack.push_async_callback(self._kill_daemon, daemon)  # only acts if something went wrong
        self.started = time.monotonic()
        return daemon

    async def _start_daemon(self) -> asyncio.subprocess.Process:
        env = _child_env()
        with self.log_path.open("wb") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.app.cli", "run", "--config", str(self.config_path),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=self.root,
                process_group=0)

    async def _wait_online(self, daemon: asyncio.subprocess.Process) -> None:
        """Until the gateway's birth arrives (or the daemon exits, a signal, ``ONLINE_TIMEOUT_S``):
        ``--duration`` and the scenario count from there, so a slow start on a loaded machine
        (seen in a test run: 27 s after the demo started, a 25 s demo
        had polled for 14 s, with four demos and other work on two cores) does not eat the
        time the demo has to show its polls."""
        deadline = time.monotonic() + ONLINE_TIMEOUT_S
        while (not self.state.snapshot().online and daemon.returncode is None
               and not self.stop.is_set() and time.monotonic() < deadline):
            await asyncio.sleep(0.1)
        self.started = time.monotonic()

    async def _wait(self, daemon: asyncio.subprocess.Process) -> bool:
        """Until the duration is up or a signal arrives; True if the daemon exited on its own."""
        exited = asyncio.create_task(daemon.wait())
        stopped = asyncio.create_task(self.stop.wait())
        await asyncio.wait({exited, stopped}, timeout=self.duration_s,
                           return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        early = exited.done()
        if not early:
            exited.cancel()
        return early

    async def _stop_daemon(self, daemon: asyncio.subprocess.Process) -> int | None:
        """SIGTERM and wait; the daemon commits what it polled and says goodbye. None = killed.
        The consumer's worker is back first (it may be in the scenario's outage) and gets
        ``CENTRAL_SETTLE_S`` to store what the daemon sent last."""
        if daemon.returncode is not None:
            return daemon.returncode
        central = self.central
        if central is not None and not central.worker_running:
            with contextlib.suppress(RuntimeError):  # problems() reports a worker that failed
                await central.catch_up(CENTRAL_SETTLE_S, CENTRAL_CATCH_UP_S)
        stop_ms = time.time_ns() // 1_000_000
        daemon.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(daemon.wait(), DAEMON_STOP_TIMEOUT_S)
        except TimeoutError:
            daemon.kill()
            await daemon.wait()
            return None
        if central is not None and code == 0:
            await central.settle(stop_ms, CENTRAL_SETTLE_S)
        return None if self._daemon_killed else code

    async def _kill_daemon(self, daemon: asyncio.subprocess.Process) -> None:
        if daemon.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                daemon.kill()
            await daemon.wait()

    # -- the simulated world's events -----------------------------------------------------------

    async def _scenario(self) -> None:
        cycle_start = time.monotonic()
        while True:
            for at, action, meter_id in SCENARIO:
                delay = cycle_start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if action.startswith("central_"):
                    await self._act_central(action)
                else:
                    self._act(action, meter_id)
            await asyncio.sleep(max(0.0, cycle_start + SCENARIO_CYCLE_S - time.monotonic()))
            cycle_start += SCENARIO_CYCLE_S

    async def _act_central(self, action: str) -> None:
        central = self.central
        if central is None:
            return
        if action == "central_down":
            self.state.note("edge-central worker stopped: its session and what is sent "
                            "meanwhile are lost to it")
            await central.stop_worker("scenario")
        else:
            self.state.note("edge-central worker back: it finds the gap and asks for a replay")
            try:
                await central.start_worker()
            except RuntimeError as exc:
                self.state.note(f"edge-central worker did not start: {exc}")

    def _act(self, action: str, meter_id: str) -> None:
        rig, address = self._dlt645_meters[meter_id]
        if action == "open_cover":
            rig.meters[address].open_cover()
            self.state.note(f"{meter_id}: terminal cover opened")
        elif action == "close_cover":
            rig.meters[address].close_cover()
            self.state.note(f"{meter_id}: terminal cover closed")
        elif action == "silence":
            rig.set_faults(address, no_reply=True)
            self.state.note(f"{meter_id}: stops answering (broken wire)")
        elif action == "answer":
            rig.set_faults(address)
            self.state.note(f"{meter_id}: answers again")

    # -- output ---------------------------------------------------------------------------------

    def _footer(self) -> str:
        until = (f"stops by itself after {self.duration_s:g} s or on Ctrl-C" if self.duration_s
                 else "Ctrl-C stops the demo")
        return f"{until} · broker: {self.broker_label} · files: {self.root}"

    async def _display(self) -> None:
        with contextlib.suppress(OSError):  # the terminal went away: keep stopping quietly
            await self._display_until_cancelled()

    async def _display_until_cancelled(self) -> None:
        if self.interactive:
            try:
                await self._display_live()
                return
            except ImportError:
                _say("(rich is not installed: plain output)", self.out)
        _say(f"edge-gateway demo: {len(self.state.snapshot().meters)} simulated meters, "
             f"{self.broker_label}, daemon log {self.log_path}", self.out)
        while True:
            await asyncio.sleep(PLAIN_SUMMARY_EVERY_S)
            _say(self._plain(), self.out)

    def _plain(self) -> str:
        central = self.central.snapshot() if self.central is not None else None
        snap = self.state.snapshot()
        return "\n".join([render_plain(snap, self.elapsed()),
                          *central_plain(central, len(snap.meters), self.central_note)])

    async def _display_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.out)

        def frame() -> Any:
            central = self.central.snapshot() if self.central is not None else None
            return render_rich(self.state.snapshot(), self.elapsed(), self._footer(), console.width,
                               central, self.central_note)

        with Live(frame(), console=console, auto_refresh=False, screen=False) as live:
            try:
                while True:
                    await asyncio.sleep(LIVE_REFRESH_S)
                    live.update(frame(), refresh=True)
            finally:
                live.update(frame(), refresh=True)

    def _verdict(self, daemon_code: int | None, early_exit: bool) -> int:
        snap: DemoSnapshot = self.state.snapshot()
        if not self.interactive:
            _say(self._plain(), self.out)
        problems: list[str] = []
        if daemon_code is None:
            problems.append("the daemon was killed on a second interrupt" if self._daemon_killed
                            else f"the daemon did not stop within {DAEMON_STOP_TIMEOUT_S:g} s of "
                            "SIGTERM and was killed")
        elif early_exit:
            problems.append(f"the daemon exited on its own with code {daemon_code}")
        elif daemon_code != 0:
            problems.append(f"the daemon exited with code {daemon_code}")
        missing = snap.missing()
        if missing:
            problems.append(f"no reads from {len(missing)} of {len(snap.meters)} meters "
                            f"({', '.join(missing)}) within {self.elapsed():.0f} s — DL/T 645 meters "
                            f"are polled every {DLT645_POLL_INTERVAL_S} s, so give the demo at "
                            "least 25 s")
        if snap.undecodable:
            problems.append(f"{snap.undecodable} messages could not be decoded")
        if self.central is not None:
            problems += self.central.problems([m.info.id for m in snap.meters])
        if problems:
            _say("edge-gateway demo FAILED: " + "; ".join(problems) + f".\nDaemon log "
                 f"{self.log_path} ends with:\n{tail(self.log_path)}")
            return 1
        stored = ""
        if self.central is not None:
            central = self.central.snapshot()
            status = central.status or {}
            stored = (f", edge-central stored {status.get('values_stored', 0)} values and filled "
                      f"{central.gap_counts()[1]} gap(s) by replay")
        _say(f"edge-gateway demo: OK — {len(snap.meters)} meters read, {snap.messages} messages"
             f"{stored}, daemon stopped cleanly. Files in {self.root}", self.out)
        return 0


def _child_env() -> dict[str, str]:
    """The daemon's and the consumer's environment: this very checkout, installed or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for systemd_variable in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(systemd_variable, None)
    return env


def run_demo(duration_s: float | None, data_dir: str | None) -> int:
    """Run the demo; returns the process exit code (0 ok, 1 failure, 2 bad arguments)."""
    if duration_s is not None and not duration_s > 0:
        print(f"edge-gateway demo: --duration must be a positive number of seconds, got {duration_s:g}",
              file=sys.stderr)
        return 2
    if data_dir is not None:
        root = Path(data_dir).resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"edge-gateway demo: cannot create --data-dir {data_dir}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
        temporary = False
    else:
        root = Path(tempfile.mkdtemp(prefix="edge-gateway-demo-"))
        temporary = True
    code = asyncio.run(DemoRun(duration_s, root, sys.stdout).run())
    if temporary and code == 0:
        shutil.rmtree(root, ignore_errors=True)
    elif temporary:
        _say(f"edge-gateway demo: kept {root} for inspection")
    return code
