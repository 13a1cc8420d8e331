"""The gateway daemon: lifecycle around one runtime at a time.

Lifecycle (DESIGN §2, issue 3):

* start: the plan (config, profiles, derived settings) is validated (exit 2 with every error),
  the store is opened and checked, the MQTT link and the outbox pump start, then the runtime
  built from the plan (gateway/app/runtime.py); systemd hears READY only then.
* SIGTERM / SIGINT: the runtime stops (buses finish their in-flight transaction, everything
  polled is committed), the pump waits briefly for PUBACKs, the link publishes a retained death
  and disconnects cleanly (so the broker does not send the last will), the store is closed.
* hold-up (docs/outages.md): when mains has been lost for ``[power] hold_up_s - stop_margin_s``
  the power watch asks for the same clean stop, and the exit code is EXIT_HOLD_UP (3), which
  the systemd unit does not restart (RestartPreventExitStatus): on battery a restart would only
  stop again; the box boots when power returns.
* SIGHUP: a new plan is built; an invalid one keeps the old runtime running and says why. A valid
  one replaces the runtime through the same code as a start.
* bundles (gateway/app/bundles.py, docs/bundles.md): with ``[update] inbox_dir`` set, signed
  bundles switch the configuration and profiles through the same reload as SIGHUP, and roll
  back by themselves when the new configuration does not become healthy. A start first puts
  back any switch a crash interrupted (gateway/app/bundle_files.py).
* supervision (gateway/app/supervisor.py): every long-running task runs under the supervisor; the
  systemd watchdog is fed only while none has failed and every bus loop, the committer and the
  pump make progress.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from gateway import __version__
from gateway.app.bundle_files import MARKER, recover_switch
from gateway.app.event_loop import running_loop_name
from gateway.app.health import HealthReporter, LoopLagMonitor
from gateway.app.heap import (
    TRIM_FIRST_S,
    TRIM_INTERVAL_S,
    freeze_long_lived,
    release_free_memory,
    thaw,
)
from gateway.app.plan import Plan, build_plan
from gateway.app.runtime import Runtime
from gateway.app.store_guard import StoreGuard
from gateway.app.supervisor import Supervisor
from gateway.app.systemd_notify import SystemdNotifier
from gateway.config import ConfigError, GatewayConfig, format_errors
from gateway.control.errors import ControlError
from gateway.errors import GatewayError
from gateway.pipeline.committer import PipelineServices
from gateway.store import STORE_CORRUPT_ALARM, Store
from gateway.store.errors import StoreError
from gateway.uplink.link_settings import LinkSettings
from gateway.uplink.mqtt_link import MqttLink
from gateway.uplink.outbox_pump import OutboxPump
from gateway.uplink.state_messages import GatewayStateMessages
from protocols.topics import GatewayTopics

log = logging.getLogger("gateway")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2
#: Stopped cleanly because mains stayed lost until the hold-up's stop margin (docs/outages.md).
#: Not 0 (the service did not end by request) and not restarted by systemd.
EXIT_HOLD_UP = 3
#: How long the outbox pump gathers PUBACKs and hand-over counts before writing them (one
#: SQLite write instead of one per loop iteration; a crash loses at most this much of them,
#: and those rows are re-sent with the same id — see gateway/uplink/outbox_pump.py).
BOOKKEEPING_DELAY_S = 0.1
#: What a start can fail on besides the configuration: a data_dir, store, audit journal or key
#: that cannot be used. Each says in one line which file and what to fix.
START_ERRORS: tuple[type[GatewayError], ...] = (StoreError, ControlError)
PROGRESS_STALE_S = 60.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class GatewayDaemon:
    def __init__(self, config_path: Path, *, notifier: SystemdNotifier | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or SystemdNotifier()
        self.stop_event = asyncio.Event()
        self.reload_requested = False
        self._stopping = False
        #: Why the power watch asked for the stop (None: not a hold-up stop).
        self.hold_up_stop: str | None = None
        #: The start failed after the link was up (logged as "cannot start"): not a clean stop.
        self.start_failed = False
        self.supervisor = Supervisor()
        self.store: Store | None = None
        self.services: PipelineServices | None = None
        self.link: MqttLink | None = None
        self.pump: OutboxPump | None = None
        self.runtime: Runtime | None = None
        self.guard: StoreGuard | None = None
        self.lag = LoopLagMonitor()
        self.health = HealthReporter(self)
        #: One reload at a time: SIGHUP and a bundle (or its rollback) never interleave.
        self.reload_lock = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------
    async def run(self) -> int:
        if recover_switch(self.config_path.parent / MARKER):
            log.warning("a bundle's configuration switch was interrupted; the previous "
                        "configuration and profiles were put back")
        try:
            plan = build_plan(self.config_path)
        except ConfigError as err:
            print(format_errors(err), flush=True, file=sys.stderr)
            return EXIT_BAD_CONFIG
        config = plan.config
        logging.getLogger().setLevel(getattr(logging, str(config.gateway.log_level).upper(),
                                             logging.INFO))
        try:
            runtime = self._open(plan)
        except START_ERRORS as exc:
            # One line naming the file and what to fix; nothing was started, so nothing stops.
            log.error("cannot start: %s", exc)
            if self.store is not None:
                self.store.close()
            return EXIT_FAILURE
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):
            loop.add_signal_handler(sig, handler)
        try:
            try:
                await self._start_link(config)
                await self._start_runtime(runtime)
            except START_ERRORS as exc:
                log.error("cannot start: %s", exc)
                self.start_failed = True
                return EXIT_FAILURE
            self.supervisor.start("loop-lag", self.lag.run())
            self.supervisor.start("health", self.health.run())
            self.supervisor.start("maintenance", self._maintenance_loop())
            self.supervisor.start("watchdog", self._watchdog_loop())
            if config.update.inbox_dir is not None:
                # Imported here: bundle verification (protocols.bundle) is code a gateway
                # without an inbox never runs, and its modules would only take memory.
                from gateway.app.bundles import BundleApplier

                self.supervisor.start("bundles", BundleApplier(self, config.update).run())
            freeze_long_lived()  # start-up state is never garbage: keep full collections off it
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
        finally:
            lost = await self._shutdown()
        if self.hold_up_stop is not None and not self.start_failed:
            return EXIT_HOLD_UP  # even with lost data: a restart on battery would only stop again
        return EXIT_FAILURE if lost or self.start_failed else EXIT_OK  # lost data: never 0

    def _open(self, plan: Plan) -> Runtime:
        """Everything that needs the data_dir — the store, the pipeline services, the runtime's
        audit journal and result key — opened before the broker hears of this gateway, so a
        data_dir that cannot be used ends the start before anything runs."""
        config = plan.config
        self.store = Store.open(Path(config.gateway.data_dir) / "gateway.sqlite")
        log.info("store %s open (epoch %016x)", self.store.path, self.store.epoch)
        self.guard = StoreGuard(self.store, config)
        self.guard.adopt_spills()  # before anything else is committed (spill.py says why)
        self.services = PipelineServices.open(
            self.store, GatewayTopics(config.mqtt.topic_prefix, config.gateway.id),
            on_commit=self._wake_pump, ballast=self.guard.ballast)
        self.services.feed.on_failure = self.supervisor.fail
        self.services.alarms.ephemeral = self._publish_now
        self.guard.attach(self.services)
        recovery = self.store.recovery
        if recovery is not None:  # committed with its event: published once the link is up
            self.services.alarms.raise_(STORE_CORRUPT_ALARM, STORE_CORRUPT_ALARM, None,
                                        recovery.details(), recovery.found_ms)
        return self._build_runtime(plan)

    def request_stop(self) -> None:
        self._stopping = True
        self.stop_event.set()

    def request_hold_up_stop(self, reason: str) -> None:
        """The power watch's hook (passed through the runtime): stop as on SIGTERM."""
        log.warning("stopping: %s", reason)
        self.hold_up_stop = reason
        self.request_stop()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.stop_event.set()

    def _wake_pump(self) -> None:
        if self.pump is not None:
            self.pump.notify()

    def _publish_now(self, topic: str, payload: bytes) -> None:
        """Send a message straight to the broker, outside the store (an alarm the failing store
        cannot take): at QoS 1 while connected; health shows the state either way."""
        if self.link is not None and self.link.connected:
            self.link.publish(topic, payload, qos=1)

    def _build_runtime(self, plan: Plan) -> Runtime:
        assert self.services is not None
        return Runtime(plan, self.services, self.supervisor,
                       request_stop=self.request_hold_up_stop)

    async def _start_runtime(self, runtime: Runtime) -> None:
        self.runtime = runtime
        await runtime.start(self.link)

    async def _start_link(self, config: GatewayConfig) -> None:
        assert self.store is not None
        store = self.store
        state = GatewayStateMessages(
            gateway_id=config.gateway.id, version=__version__, config_sha256=config.sha256,
            meters=tuple(m.id for m in config.meters),
            position=lambda: (store.epoch, store.last_seq),
            bindings=store.alias_bindings if config.mqtt.payload_version == 2 else None)
        self.link = MqttLink(LinkSettings.from_config(config), state=state,
                             next_bdseq=store.next_bdseq)
        self.pump = OutboxPump(store, self.link, window=config.mqtt.inflight_window,
                               bookkeeping_delay_s=BOOKKEEPING_DELAY_S)
        await self.link.start()
        self.pump.start()
        assert self.pump.task is not None
        self.supervisor.adopt("outbox-pump", self.pump.task)

    async def _stop_link(self) -> None:
        self.supervisor.release("outbox-pump")
        if self.pump is not None:
            await self.pump.stop(drain_timeout=3.0)
            self.pump = None
        if self.link is not None:
            await self.link.stop()
            self.link = None

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            plan = build_plan(self.config_path)
        except ConfigError as err:
            log.error("reload rejected, keeping the running configuration:\n%s", format_errors(err))
            self.notifier.ready("reload rejected: invalid configuration")
            return
        await self.apply_plan(plan)

    async def apply_plan(self, plan: Plan) -> None:
        """Replace the runtime with one built from ``plan`` (SIGHUP and bundles alike)."""
        async with self.reload_lock:
            await self._apply_plan(plan)

    async def _apply_plan(self, plan: Plan) -> None:
        config = plan.config
        old = self.runtime.config if self.runtime else None
        log.info("reloading configuration %s", self.config_path)
        if old is not None and old.gateway.event_loop != config.gateway.event_loop:
            log.warning("[gateway] event_loop changed to %r: it takes effect at the next start; "
                        "this process keeps running on %s", config.gateway.event_loop,
                        running_loop_name())
        if old is not None and old.gateway.data_dir != config.gateway.data_dir:
            log.warning("[gateway] data_dir changed to %r: the store stays in %s until the next "
                        "start", config.gateway.data_dir, old.gateway.data_dir)
        thaw()  # the old runtime's cycles must be collectable once it is dropped
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        # Built before the link restarts: a profile change allocates new alias bindings, and
        # the birth the new link publishes must declare them before any message names them.
        runtime = self._build_runtime(plan)
        if old is None or old.mqtt != config.mqtt or old.gateway != config.gateway \
                or old.sha256 != config.sha256 or runtime.new_bindings:
            await self._stop_link()
            await self._start_link(config)
        await self._start_runtime(runtime)
        if self.guard is not None:
            self.guard.reconfigure(config)
        freeze_long_lived()
        self.notifier.ready(f"reloaded: {len(config.meters)} meters")

    async def _shutdown(self) -> int:
        """Stop everything; returns how many messages were lost (held, and neither committed
        nor spilled)."""
        self.notifier.stopping()
        if self.runtime is not None:
            await self.runtime.stop()
        lost = self.guard.settle_at_stop() if self.guard is not None else 0
        self.supervisor.release("outbox-pump")  # the pump drains before the link goes
        await self.supervisor.stop()
        await self._stop_link()
        if self.store is not None:
            self.store.close()
        if lost:
            log.error("gateway stopped; %d messages were lost (see above)", lost)
        elif not self.start_failed:  # a failed start was logged as such: not a clean stop
            log.info("gateway stopped cleanly")
        return lost

    # -- periodic work ------------------------------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        """Disk alarms, retries of anything held for the store, WAL, ballast, retention
        (gateway/app/store_guard.py); free heap memory back to the kernel (gateway/app/heap.py)."""
        trim_at = time.monotonic() + TRIM_FIRST_S
        while True:
            interval = self.runtime.config.store.disk_check_interval_s if self.runtime else 5.0
            if self.guard is not None:
                self.guard.check()
            if time.monotonic() >= trim_at:
                release_free_memory()
                trim_at = time.monotonic() + TRIM_INTERVAL_S
            await asyncio.sleep(interval)

    def unhealthy(self) -> list[str]:
        """Why the watchdog must not be fed now (empty when everything makes progress)."""
        reasons = [f"{name} {failure.describe()}"
                   for name, failure in self.supervisor.failures.items()]
        store_problem = self.guard.unhealthy() if self.guard is not None else None
        if store_problem is not None:
            reasons.append(store_problem)
        if self.pump is not None and not self.pump.alive and "outbox-pump" not in \
                self.supervisor.failures:
            reasons.append("outbox pump stopped")
        if self.runtime is not None:
            reasons.extend(f"bus:{name} made no progress for {PROGRESS_STALE_S:.0f} s"
                           for name in self.runtime.progress_stale(time.monotonic(),
                                                                   PROGRESS_STALE_S))
        return reasons

    def healthy(self) -> bool:
        return not self.unhealthy()

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if not interval:
            await asyncio.Event().wait()  # no watchdog; supervised tasks must not end
            return
        reported: list[str] = []
        while True:
            await asyncio.sleep(interval / 3)
            reasons = self.unhealthy()
            if not reasons:
                self.notifier.watchdog()
            elif reasons != reported:
                log.error("watchdog not fed: %s", "; ".join(reasons))
            reported = reasons
