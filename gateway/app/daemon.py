"""The gateway daemon: composes config, buses, committer, store, MQTT link and outbox pump.

Lifecycle (DESIGN §2, issue 3):

* start: config and profiles are validated (exit 2 with every error), the store is opened and
  checked, buses and the MQTT link start; systemd hears READY only then.
* SIGTERM / SIGINT: buses finish their in-flight transaction, everything polled is committed, the
  pump waits briefly for PUBACKs, the link publishes a retained death and disconnects cleanly (so the
  broker does not send the last will), the store is closed. Exit 0.
* SIGHUP: the config is reloaded; an invalid new config keeps the old one running and says why.
* the systemd watchdog is fed only while every bus loop, the committer and the pump make progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_rules._jit import use_numpy_twins
from edge_rules.vee_rules import VeeConfig
from gateway import __version__
from gateway.acquisition.base import ScheduledBus
from gateway.acquisition.factory import build_buses
from gateway.acquisition.poll_result import BusEvent, PollResult
from gateway.app.event_loop import running_loop_name
from gateway.app.health import LoopLagMonitor, cpu_seconds, rss_bytes
from gateway.app.systemd_notify import SystemdNotifier
from gateway.config import ConfigError, GatewayConfig, format_errors, load_config
from gateway.control.commands.handler import CommandHandler
from gateway.pipeline.committer import Committer
from gateway.pipeline.vee_stage import VeeStage, vee_settings
from gateway.store import Store
from gateway.store.errors import StoreError
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import MqttLink
from gateway.uplink.outbox_pump import OutboxPump
from gateway.uplink.state_messages import GatewayStateMessages
from protocols.payload import Envelope, build_health

log = logging.getLogger("gateway")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2
#: How long the outbox pump gathers PUBACKs and hand-over counts before writing them (one
#: SQLite write instead of one per loop iteration; a crash loses at most this much of them,
#: and those rows are re-sent with the same id — see gateway/uplink/outbox_pump.py).
BOOKKEEPING_DELAY_S = 0.1
DISK_ALARM_KEY = "disk.low"
PROGRESS_STALE_S = 60.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Runtime:
    """What one loaded configuration runs: its buses and their tasks."""

    config: GatewayConfig
    buses: list[ScheduledBus]  # type: ignore[type-arg]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class GatewayDaemon:
    def __init__(self, config_path: Path, *, notifier: SystemdNotifier | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or SystemdNotifier()
        self.stop_event = asyncio.Event()
        self.reload_requested = False
        self.store: Store | None = None
        self.link: MqttLink | None = None
        self.pump: OutboxPump | None = None
        self.committer: Committer | None = None
        self.commands: CommandHandler | None = None
        self._load_control_task: asyncio.Task[None] | None = None
        self._groups_task: asyncio.Task[None] | None = None
        self._areas_task: asyncio.Task[None] | None = None
        self._commands_task: asyncio.Task[None] | None = None
        self.runtime: Runtime | None = None
        self.outbound: asyncio.Queue[PollResult | BusEvent] | None = None
        self.lag = LoopLagMonitor()
        self._aux: list[asyncio.Task[Any]] = []
        self._committer_task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._cpu0 = cpu_seconds()

    # -- lifecycle ----------------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            config = load_config(self.config_path)
        except ConfigError as err:
            print(format_errors(err), flush=True, file=sys.stderr)
            return EXIT_BAD_CONFIG
        logging.getLogger().setLevel(getattr(logging, str(config.gateway.log_level).upper(), logging.INFO))
        # Bounded: a bus waits when the committer is behind instead of growing memory.
        self.outbound = asyncio.Queue(maxsize=max(64, 4 * len(config.meters)))
        try:
            runtime = Runtime(config, build_buses(config, self.outbound))
            if config.groups:
                # numba-backed modules load only when groups exist: a gateway without them
                # keeps its memory small (the JIT runtime alone is tens of MB).
                from gateway.control.load_control.runner import engine_settings

                engine_settings(config)
            vee_config = vee_settings(config)
        except ConfigError as err:
            print(format_errors(err), flush=True, file=sys.stderr)
            return EXIT_BAD_CONFIG
        data_dir = Path(config.gateway.data_dir)
        try:
            self.store = Store.open(data_dir / "gateway.sqlite")
        except StoreError as exc:
            log.error("cannot open the store in %s: %s", data_dir, exc)
            return EXIT_FAILURE
        if self.store.recovered_from is not None:
            log.error("the store was damaged and moved to %s; a new one was created",
                      self.store.recovered_from)
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):
            loop.add_signal_handler(sig, handler)
        try:
            self.committer = Committer(self.store, config.gateway.id, config.mqtt.topic_prefix,
                                       self.outbound, on_commit=self._wake_pump,
                                       coalesce_s=config.store.commit_window_ms / 1000)
            seeded = self.committer.seed_registers()
            log.info("store %s open (epoch %016x, %d registers remembered)", self.store.path,
                     self.store.epoch, seeded)
            self._start_vee(vee_config, config)
            self._committer_task = asyncio.create_task(self.committer.run(), name="committer")
            await self._start_link(config)
            self._start_buses(runtime)
            self.commands = CommandHandler(config, self.store, self.committer, runtime.buses,
                                           on_commit=self._wake_pump)
            self._start_load_control(config, runtime)
            interrupted = self.commands.recover()
            if interrupted:
                log.error("%d command(s) were interrupted by the last stop; reported failed",
                          interrupted)
            self._start_command_loop()
            self._aux = [
                asyncio.create_task(self.lag.run(), name="loop-lag"),
                asyncio.create_task(self._health_loop(), name="health"),
                asyncio.create_task(self._maintenance_loop(), name="maintenance"),
                asyncio.create_task(self._watchdog_loop(), name="watchdog"),
                asyncio.create_task(self._vee_loop(), name="vee"),
            ]
            self.notifier.ready(f"polling {len(config.meters)} meters on {len(config.buses)} buses")
            log.info("gateway %s running: %d meters on %d buses, %s event loop",
                     config.gateway.id, len(config.meters), len(config.buses),
                     running_loop_name())
            while not self.stop_event.is_set():
                await self.stop_event.wait()
                if self.reload_requested and not self._stopping:
                    self.stop_event.clear()
                    self.reload_requested = False
                    await self._reload()
            return EXIT_OK
        finally:
            await self._shutdown()

    _stopping = False

    def request_stop(self) -> None:
        self._stopping = True
        self.stop_event.set()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.stop_event.set()

    def _wake_pump(self) -> None:
        if self.pump is not None:
            self.pump.notify()

    async def _start_link(self, config: GatewayConfig) -> None:
        assert self.store is not None
        store = self.store
        state = GatewayStateMessages(
            gateway_id=config.gateway.id, version=__version__, config_sha256=config.sha256,
            meters=tuple(m.id for m in config.meters),
            position=lambda: (store.epoch, store.last_seq))
        self.link = MqttLink(LinkSettings.from_config(config), state=state,
                             next_bdseq=store.next_bdseq)
        self.pump = OutboxPump(store, self.link, window=config.mqtt.inflight_window,
                               bookkeeping_delay_s=BOOKKEEPING_DELAY_S)
        await self.link.start()
        self.pump.start()

    def _start_load_control(self, config: GatewayConfig, runtime: Runtime) -> None:
        assert self.commands is not None and self.committer is not None
        if self._load_control_task is not None:
            self._load_control_task.cancel()
        self.committer.poll_listeners.clear()
        for task in (self._groups_task, self._areas_task):
            if task is not None:
                task.cancel()
        self._groups_task = self._areas_task = None
        if config.theft.enabled:  # NumPy only: no numba for a gateway without groups
            from gateway.analytics.theft import TheftMonitor

            theft = TheftMonitor(config, self.committer, self._wake_pump)
            self.committer.poll_listeners.append(theft.on_poll)
        if config.groups:
            from gateway.analytics.areas import AreaReconciler
            from gateway.analytics.groups import GroupPublisher

            assert self.store is not None
            publisher = GroupPublisher(config, self.store, self._wake_pump)
            self.committer.poll_listeners.append(publisher.on_poll)
            self._groups_task = asyncio.create_task(publisher.run(), name="groups")
            # Daily group energy and area line loss from the 00:00 freezes (docs/reconciliation.md).
            reconciler = AreaReconciler(config, self.store, self._wake_pump)
            self.committer.poll_listeners.append(reconciler.on_poll)
            self._areas_task = asyncio.create_task(reconciler.run(), name="areas")
        if not config.groups:
            self.commands.load_control = None
            return
        from gateway.control.load_control.runner import LoadControlRunner

        link = self.link
        runner = LoadControlRunner(config, self.committer, self.commands.journal, runtime.buses,
                                   report=self.commands.report,
                                   link_up=lambda: link is not None and link.connected)
        self.commands.load_control = runner
        self.committer.poll_listeners.append(runner.on_poll)
        self._load_control_task = asyncio.create_task(runner.run(), name="load-control")

    def _start_command_loop(self) -> None:
        if self.commands is not None and self.link is not None:
            if self._commands_task is not None:
                self._commands_task.cancel()
            self._commands_task = asyncio.create_task(self.commands.run(self.link.commands),
                                                      name="commands")

    async def _stop_link(self) -> None:
        if self.pump is not None:
            await self.pump.stop(drain_timeout=3.0)
            self.pump = None
        if self.link is not None:
            await self.link.stop()
            self.link = None

    def _start_buses(self, runtime: Runtime) -> None:
        vee = self.committer.vee if self.committer is not None else None
        for bus in runtime.buses:
            bus.attach_backfill(vee.backfill if vee is not None else None)
            runtime.tasks.append(asyncio.create_task(self._run_bus(bus), name=f"bus:{bus.name}"))
        self.runtime = runtime

    async def _run_bus(self, bus: ScheduledBus) -> None:  # type: ignore[type-arg]
        """Run a bus; if its line cannot be opened (adapter unplugged), retry instead of dying."""
        delay = 2.0
        while not self._stopping:
            try:
                await bus.run()
                return
            except Exception as exc:
                if bus._stopping:
                    return
                log.error("bus %s failed: %s — retrying in %.0f s", bus.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _stop_buses(self) -> None:
        if self.runtime is None:
            return
        for bus in self.runtime.buses:
            bus.stop()
        if self.runtime.tasks:
            _done, pending = await asyncio.wait(self.runtime.tasks, timeout=10.0)
            for task in pending:
                task.cancel()
        self.runtime = None

    def _start_vee(self, vee_config: VeeConfig, config: GatewayConfig) -> None:
        """VEE for the configured meters; its saved history and state are restored (matched by
        meter id, so a reload that adds or removes meters keeps everyone else's)."""
        assert self.committer is not None and self.store is not None
        if self.committer.vee is not None:
            self.committer.vee.save()
        stage = VeeStage(vee_config, [meter.id for meter in config.meters], _now_ms(), self.store)
        # The same choice for every kernel the daemon runs (summation groups, reconciliation,
        # load limits): below [vee] numba_min_meters their NumPy twins, and no numba in memory.
        use_numpy_twins(stage.implementation == "np")
        restored = stage.load()
        self.committer.vee = stage
        for bus in self.runtime.buses if self.runtime is not None else ():
            bus.attach_backfill(stage.backfill)  # a reload: the buses started before this stage
        log.info("VEE: %d meters, %s kernels, %d s intervals, history %s", len(config.meters),
                 "numba" if stage.implementation == "nb" else "NumPy", stage.grid.interval_ms // 1000,
                 "restored" if restored else "empty")

    async def _vee_loop(self) -> None:
        """Estimates are due at every interval boundary (+ snap tolerance) even when no poll
        arrives then (every meter silent): grade what came due."""
        while True:
            stage = self.committer.vee if self.committer is not None else None
            if stage is None:
                await asyncio.sleep(1.0)
                continue
            grid = stage.grid
            now = _now_ms()
            following = grid.read_time_ms(grid.due_end(now)) + grid.tolerance_ms + 20
            await asyncio.sleep(max(0.05, (following - now) / 1000))
            if self.committer is not None and not self._stopping:
                self.committer.commit([])

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            config = load_config(self.config_path)
            assert self.outbound is not None
            new_runtime = Runtime(config, build_buses(config, self.outbound))
            vee_config = vee_settings(config)
        except ConfigError as err:
            log.error("reload rejected, keeping the running configuration:\n%s", format_errors(err))
            self.notifier.ready("reload rejected: invalid configuration")
            return
        old = self.runtime.config if self.runtime else None
        log.info("reloading configuration %s", self.config_path)
        if old is not None and old.gateway.event_loop != config.gateway.event_loop:
            log.warning("[gateway] event_loop changed to %r: it takes effect at the next start; "
                        "this process keeps running on %s", config.gateway.event_loop,
                        running_loop_name())
        await self._stop_buses()
        if old is None or old.mqtt != config.mqtt or old.gateway != config.gateway or old.sha256 != config.sha256:
            await self._stop_link()
            await self._start_link(config)
        self._start_buses(new_runtime)
        if self.committer is not None:
            self.committer.coalesce_s = config.store.commit_window_ms / 1000
        self._start_vee(vee_config, config)
        if self.commands is not None:  # new keys, protected meters and buses
            self.commands.close()
            assert self.store is not None and self.committer is not None
            self.commands = CommandHandler(config, self.store, self.committer, new_runtime.buses,
                                           on_commit=self._wake_pump)
            self._start_load_control(config, new_runtime)
            self._start_command_loop()
        self.notifier.ready(f"reloaded: {len(config.meters)} meters")

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        for task in (self._commands_task, self._load_control_task, self._groups_task,
                     self._areas_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stop_buses()
        if self._committer_task is not None:
            self._committer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer_task
        if self.committer is not None:
            self.committer.drain()
            if self.committer.vee is not None:
                try:
                    self.committer.vee.save()
                except StoreError as exc:
                    log.error("VEE history could not be saved (%s): the next start begins from "
                              "the last saved day", exc)
        for task in self._aux:
            task.cancel()
        await self._stop_link()
        if self.commands is not None:
            self.commands.close()
        if self.store is not None:
            self.store.close()
        log.info("gateway stopped cleanly")

    # -- periodic work ------------------------------------------------------------------------------
    def health_snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        store = self.store
        oldest = store.oldest_unacked_ms() if store else None
        uptime = now - self._started
        stats: dict[str, Any] = {
            "uptime_s": round(uptime, 1),
            "rss_bytes": rss_bytes(),
            "cpu_pct": round(100 * (cpu_seconds() - self._cpu0) / max(uptime, 1e-9), 2),
            "loop_lag_ms": round(self.lag.take_max() * 1000, 2),
            "event_loop": running_loop_name(),
            "outbox_depth": store.outbox_depth() if store else None,
            "oldest_unacked_age_s": round((_now_ms() - oldest) / 1000, 1) if oldest else 0,
            "buses": {b.name: b.health(now) for b in (self.runtime.buses if self.runtime else [])},
        }
        if self.pump is not None:
            stats["pump"] = dataclasses.asdict(self.pump.status())
        if self.link is not None:
            status = self.link.status()
            stats["mqtt"] = {"state": status.state, "connects": status.connects,
                             "connection_losses": status.connection_losses,
                             "last_error": status.last_error}
        if self.committer is not None:
            stats["committer"] = dataclasses.asdict(self.committer.stats)
        return stats

    async def _health_loop(self) -> None:
        while True:
            interval = self.runtime.config.gateway.health_interval_s if self.runtime else 30.0
            await asyncio.sleep(interval)
            if self.link is None or not self.link.connected or self.store is None or self.runtime is None:
                continue
            cfg = self.runtime.config
            payload = build_health(Envelope(cfg.gateway.id, self.store.epoch, self.store.last_seq,
                                            _now_ms()), self.health_snapshot())
            self.link.publish(f"{cfg.mqtt.topic_prefix}/{cfg.gateway.id}/health", payload, qos=0)

    async def _maintenance_loop(self) -> None:
        last_prune = 0.0
        while True:
            if self.store is not None and self.runtime is not None and self.committer is not None:
                cfg = self.runtime.config.store
                status = self.store.disk_status(cfg.disk_alarm_free_mb, cfg.disk_alarm_free_pct)
                active = self.store.alarm(DISK_ALARM_KEY)
                is_active = active is not None and active.cleared_ms is None
                if status.alarm and not is_active:
                    self.committer.alarm("disk.low", DISK_ALARM_KEY, "raised", None,
                                          {"free_bytes": status.free_bytes,
                                           "total_bytes": status.total_bytes,
                                           "hint": status.describe()}, _now_ms())
                elif not status.alarm and is_active:
                    self.committer.alarm("disk.low", DISK_ALARM_KEY, "cleared", None,
                                          {"free_bytes": status.free_bytes}, _now_ms())
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    removed = self.store.prune(_now_ms(), cfg.retention_days)
                    if removed:
                        log.info("pruned %d acknowledged outbox rows older than %s days",
                                 removed, cfg.retention_days)
            await asyncio.sleep(60.0)

    def healthy(self) -> bool:
        """Progress check for the watchdog: bus loops, committer and pump all alive and moving."""
        now = time.monotonic()
        if self._committer_task is None or self._committer_task.done():
            return False
        if self.runtime is not None:
            for bus in self.runtime.buses:
                if now - bus.progress > PROGRESS_STALE_S:
                    return False
        return self.pump is None or self.pump.alive

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if not interval:
            return
        while True:
            await asyncio.sleep(interval / 3)
            if self.healthy():
                self.notifier.watchdog()
            else:
                log.error("watchdog not fed: a bus, the committer or the pump stopped making progress")
