"""What one plan runs: buses, committer and VEE, analytics, commands and load control.

Built in one place from one validated :class:`~gateway.app.plan.Plan`, started as a whole under
the supervisor and stopped as a whole. Start and SIGHUP reload are the same code: a reload stops
the running runtime (buses finish their in-flight transaction, everything polled is committed,
VEE history is saved) and starts a new one from the new plan. Nothing is wired by hand after
construction: each part receives what it needs when it is built, and consumers of validated
reads subscribe to the pipeline's feed.

What outlives a runtime belongs to the daemon: the store, the pipeline services (outbox writer,
alarms, feed) and the MQTT link with its outbox pump.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from edge_rules._jit import use_numpy_twins
from edge_rules.aot import aot_status
from gateway.acquisition.base import ScheduledBus
from gateway.acquisition.errors import AcquisitionError
from gateway.acquisition.factory import build_buses, reports_balance
from gateway.acquisition.poll_result import BusEvent, PollResult
from gateway.app.plan import Plan
from gateway.app.supervisor import Supervisor
from gateway.control.commands.handler import CommandHandler
from gateway.pipeline.bus_faults import BusLine
from gateway.pipeline.clock import ClockWatch
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.pipeline.meter_outages import MeterSite, RecordCheck
from gateway.pipeline.vee_stage import VeeStage
from gateway.store import Store
from gateway.store.errors import StoreError
from gateway.uplink.mqtt_link import MqttLink
from protocols.payload import AliasTable, Binding

log = logging.getLogger("gateway")

#: Errors of a bus's line (adapter unplugged, port busy, TCP peer gone): the bus task retries
#: with a growing delay instead of dying. Anything else is a bug and goes to the supervisor.
LINE_ERRORS: tuple[type[BaseException], ...] = (AcquisitionError, OSError)
BUS_STOP_TIMEOUT_S = 10.0
#: Retry delays of a line that cannot be used: the first retry soon (a port busy for a moment),
#: then growing; the cap stays below the watchdog's progress limit (daemon PROGRESS_STALE_S).
LINE_RETRY_MIN_S = 2.0
LINE_RETRY_MAX_S = 30.0
#: The alarm of a bus whose line cannot be used (key ``bus.unavailable/<bus>``).
BUS_UNAVAILABLE = "bus.unavailable"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Runtime:
    """The parts of the daemon that one configuration determines."""

    def __init__(self, plan: Plan, services: PipelineServices, supervisor: Supervisor, *,
                 request_stop: Callable[[str], None] | None = None) -> None:
        """Build every part; ``request_stop(reason)`` is the daemon's clean stop, asked for by
        the power watch when the hold-up runs out (None: the runtime never stops the daemon).
        Files in data_dir (the audit journal, the result key) are opened
        here, so a data_dir that cannot be used fails the start (StoreError, ControlError)
        before anything runs or the broker hears of the gateway."""
        config = plan.config
        self.plan = plan
        self.config = config
        self.services = services
        self.supervisor = supervisor
        self.request_stop = request_stop
        self.link: MqttLink | None = None
        store = services.store
        # Bounded: a bus waits when the committer is behind instead of growing memory.
        self.outbound: asyncio.Queue[PollResult | BusEvent] = asyncio.Queue(
            maxsize=max(64, 4 * len(config.meters)))
        self.buses: list[ScheduledBus] = build_buses(config, self.outbound)  # type: ignore[type-arg]
        self.vee = VeeStage(plan.vee, [meter.id for meter in config.meters], _now_ms(), store)
        # The same choice for every kernel the daemon runs (summation groups, reconciliation,
        # load limits): below [vee] numba_min_meters their NumPy twins, and no numba in memory.
        use_numpy_twins(self.vee.implementation == "np")
        # Wall-clock steps (gateway/pipeline/clock.py): the committer consults the watch at
        # every batch; VEE and theft discard what spans a step.
        self.clock = ClockWatch(config.gateway.clock_step_threshold_s, services.alarms)
        self.clock.subscribe(self.vee.on_clock_step)
        # Payload v2: each meter's alias binding, allocated and kept by the store before the
        # link (re)publishes the birth that declares it (daemon._reload builds us first).
        before = len(store.alias_bindings())
        self.bindings = (self._bind_aliases(store, plan.aliases)
                         if config.mqtt.payload_version == 2 else {})
        #: True when this plan brought bindings the current birth does not declare yet.
        self.new_bindings = len(store.alias_bindings()) != before
        self.committer = Committer(services, self.outbound, vee=self.vee, aliases=self.bindings,
                                   coalesce_s=config.store.commit_window_ms / 1000,
                                   clock=self.clock,
                                   buses=[BusLine(bus.name, bus.describe_link(),
                                                  tuple(m.meter_id for m in bus.meters))
                                          for bus in self.buses],
                                   sites=self._meter_sites())
        self.commands = CommandHandler(config, self.committer, self.buses)
        # Meter and phase outages starting in a planned window say planned: true, as outage.area.
        self.committer.meter_outages.planned = self.commands.planned.covers
        self._unsubscribe: list[Callable[[], None]] = []
        self._task_names: list[str] = []

    @staticmethod
    def _bind_aliases(store: Store, tables: Mapping[str, AliasTable]) -> dict[str, Binding]:
        """Payload-v2 bindings of the meters. A store that cannot take a new binding (disk
        full) must not stop the start: the meters that have one keep it, the others are
        published in schema 1 until a restart or reload can bind them."""
        try:
            return store.bind_aliases(tables)
        except StoreError as exc:
            bound = store.known_aliases(tables)
            log.warning("payload v2: cannot store new alias bindings (%s); %d of %d meters "
                        "publish schema 1 until the next reload", exc, len(tables) - len(bound),
                        len(tables))
            return bound

    def _meter_sites(self) -> list[MeterSite]:
        """Meters with a ``phase``: re-probed with their neighbours on a missed poll, and
        classified for outage.meter / outage.phase (docs/outages.md). Without a phased meter
        there is nothing to classify, and the outage analytics are not imported."""
        if all(m.phase is None for m in self.config.meters):
            return []
        from gateway.analytics.outages import served_areas

        area_of: dict[str, str] = {}
        for area in served_areas(self.config):
            for meter_id in area.meters:
                area_of.setdefault(meter_id, area.id)
        sites = [MeterSite(m.id, m.bus, m.phase, m.customer, area_of.get(m.id))
                 for m in self.config.meters if m.phase is not None]
        for bus in self.buses:
            bus.phases = {s.meter: s.phase for s in sites if s.bus == bus.name}
        return sites

    async def _read_records(self, queue: asyncio.Queue[RecordCheck]) -> None:
        """The supervised task ("meter-records"): read the newest power-down record of each
        meter that answers again after a suspected outage, on its bus's priority lane, with
        the reader restore verification uses (gateway/analytics/outages.py)."""
        from gateway.analytics.outages import priority_reader, read_power_down

        read, readable = priority_reader(self.buses)
        offset = self.config.commands.meter_utc_offset_min
        while True:
            check = await queue.get()
            if not readable(check.meter):
                self.committer.power_down_record(check, None, None,
                                                 "the meter keeps no power-down records")
                continue
            record = await read_power_down(read, check.meter, offset)
            self.committer.power_down_record(check, record.start_ms, record.end_ms, record.error)

    # -- start ----------------------------------------------------------------------------------
    async def start(self, link: MqttLink | None) -> None:
        """Start every task; commands arrive over ``link`` (None: no commands)."""
        self.link = link
        config, supervisor = self.config, self.supervisor
        seeded = self.committer.seed_registers()
        restored = self.vee.load()
        log.info("VEE: %d meters, %s kernels, %d s intervals, history %s; %d registers "
                 "remembered", len(config.meters),
                 ("numba (compiled ahead of time)" if aot_status() == "loaded" else "numba (JIT)")
                 if self.vee.implementation == "nb" else "NumPy",
                 self.vee.grid.interval_ms // 1000, "restored" if restored else "empty", seeded)
        self._start("committer", self.committer.run())
        self._start("vee", self._vee_ticks())
        for bus in self.buses:
            bus.attach_backfill(self.vee.backfill)
            self._start(f"bus:{bus.name}", self._run_bus(bus))
        if config.theft.enabled:  # NumPy only: no numba for a gateway without groups
            from gateway.analytics.theft import TheftMonitor

            theft = TheftMonitor(config, self.services.alarms, on_failure=supervisor.fail,
                                 clock=self.clock)
            self._subscribe("theft", theft.on_poll)
        if config.groups:
            from gateway.analytics.areas import AreaReconciler
            from gateway.analytics.groups import GroupPublisher

            publisher = GroupPublisher(config, self.services.writer, self.services.topics)
            self._subscribe("groups", publisher.on_poll)
            self._start("groups", publisher.run())
            # Daily group energy and area line loss from the 00:00 freezes (docs/reconciliation.md).
            reconciler = AreaReconciler(config, self.services.writer, self.services.topics)
            self._subscribe("areas", reconciler.on_poll)
            self._start("areas", reconciler.run())
        # Load control: group limits, and prepaid customers wherever a meter reports a balance.
        if config.groups or any(reports_balance(m) for bus in self.buses for m in bus.meters):
            from gateway.control.load_control.runner import LoadControlRunner

            link = self.link
            runner = LoadControlRunner(config, self.committer, self.commands.journal, self.buses,
                                       report=self.commands.report,
                                       link_up=lambda: link is not None and link.connected)
            self.commands.load_control = runner
            self._subscribe("load-control", runner.on_poll)
            self._start("load-control", runner.run())
        if any(bus.phases for bus in self.buses):
            checks: asyncio.Queue[RecordCheck] = asyncio.Queue(maxsize=256)

            def ask(check: RecordCheck) -> None:
                try:
                    checks.put_nowait(check)
                except asyncio.QueueFull:
                    self.committer.power_down_record(check, None, None,
                                                     "too many power-down records to read")

            self.committer.record_checks = ask
            self._start("meter-records", self._read_records(checks))
        # Clock grading and sync only where a profile reads a clock (the watch grades nothing
        # else): without one, the sync policy and runner are not even imported.
        if config.clock.mode != "off" and any(getattr(slot, "reads_clock", False)
                                              for bus in self.buses for slot in bus.meters):
            from gateway.control.meter_clock import MeterClockWatch

            watch = MeterClockWatch(config, self.vee, self.services.alarms,
                                    self.commands.journal, self.commands.verifier.clock,
                                    self.buses)
            if watch.clocked:  # no profile reads a clock: nothing to grade or sync
                self._subscribe("meter-clock", watch.on_poll)
                self._start("clock-sync", watch.run())
        from gateway.analytics.meter_ratios import RatioCheck, reads_ratios

        if reads_ratios(self.buses):  # CT/PT ratios the meters report vs the configured ones
            self._subscribe("meter-ratios",
                            RatioCheck(config, self.vee, self.services.alarms).on_poll)
        if config.power.fail_input is not None:
            self._start_power_watch(config.power.fail_input)
        interrupted = self.commands.recover()
        if interrupted:
            log.error("%d command(s) were interrupted by the last stop; reported failed",
                      interrupted)
        if self.link is not None:
            self._start("commands", self.commands.run(self.link.commands))

    def _start_power_watch(self, path: Path) -> None:
        """Outage alarms from the gateway's power-fail input (docs/outages.md)."""
        from gateway.analytics.outages import (
            AlarmSink,
            PowerWatch,
            RestoreCheck,
            priority_reader,
            served_areas,
            watch_power,
        )

        config, store = self.config, self.services.store
        sink: AlarmSink = self.services.alarms
        if config.outage.verify_sample > 0:
            read, readable = priority_reader(self.buses)
            check = RestoreCheck(sink, read, readable, sample=config.outage.verify_sample,
                                 utc_offset_min=config.commands.meter_utc_offset_min)
            self._start("power-verify", check.run())
            sink = check
        watch = PowerWatch(served_areas(config), sink,
                           min_duration_s=config.outage.min_duration_s,
                           hold_up_s=config.power.hold_up_s, planned=self.commands.planned,
                           stop_margin_s=config.power.stop_margin_s,
                           request_stop=self.request_stop)

        def recall(key: str) -> int | None:
            try:
                state = store.alarm(key)
            except StoreError:
                return None
            return state.raised_ms if state is not None and state.cleared_ms is None else None

        self._start("power", watch_power(watch, path, config.power.fail_value, recall))

    def _start(self, name: str, coro: object) -> None:
        self.supervisor.start(name, coro)  # type: ignore[arg-type]
        self._task_names.append(name)

    def _subscribe(self, name: str, subscriber: Callable[..., None]) -> None:
        self._unsubscribe.append(self.services.feed.subscribe(name, subscriber))

    async def _run_bus(self, bus: ScheduledBus) -> None:  # type: ignore[type-arg]
        """Run a bus; when its line cannot be opened or fails (adapter unplugged, port busy, TCP
        peer gone), say so at once — a ``bus.unavailable`` alarm and the bus shown down in
        health — and retry with a growing delay instead of dying; the alarm clears when the
        line opens. A bug (any other error) ends the task and the supervisor reports it.

        Retrying counts as progress for the watchdog: a restart does not bring an adapter back,
        and would stop the other buses; the alarm and health are how the operator hears of it.
        """
        delay = LINE_RETRY_MIN_S
        while not bus.stopping:
            try:
                await bus.open()
            except LINE_ERRORS as exc:
                self._line_down(bus, exc)
            else:
                self._line_up(bus)
                delay = LINE_RETRY_MIN_S
                try:
                    await bus.serve()
                    return
                except LINE_ERRORS as exc:
                    if bus.stopping:
                        return
                    self._line_down(bus, exc)
            await bus.pause(delay)
            delay = min(delay * 2, LINE_RETRY_MAX_S)

    def _line_down(self, bus: ScheduledBus, exc: BaseException) -> None:  # type: ignore[type-arg]
        if bus.line_error != str(exc):  # once per failure, not once per retry (small flash)
            log.error("bus %s: line unavailable (%s); retrying until it opens", bus.name, exc)
        bus.line_down(str(exc))
        self.services.alarms.raise_(
            BUS_UNAVAILABLE, f"{BUS_UNAVAILABLE}/{bus.name}", None,
            {"bus": bus.name, "link": bus.describe_link(), "error": str(exc),
             "hint": f"bus {bus.name} ({bus.describe_link()}) cannot be used: {exc}; none of "
                     f"its {len(bus.meters)} meters is polled until it can — check the adapter "
                     "is plugged in and the port in the configuration"}, _now_ms())

    def _line_up(self, bus: ScheduledBus) -> None:  # type: ignore[type-arg]
        if bus.line_error is None:
            return
        bus.line_up()
        self.services.alarms.clear(BUS_UNAVAILABLE, f"{BUS_UNAVAILABLE}/{bus.name}", None,
                                   {"bus": bus.name, "link": bus.describe_link()}, _now_ms())
        log.info("bus %s: line open again (%s)", bus.name, bus.describe_link())

    async def _vee_ticks(self) -> None:
        """Estimates are due at every interval boundary (+ snap tolerance) even when no poll
        arrives then (every meter silent): grade what came due."""
        grid = self.vee.grid
        while True:
            now = _now_ms()
            following = grid.read_time_ms(grid.due_end(now)) + grid.tolerance_ms + 20
            await asyncio.sleep(max(0.05, (following - now) / 1000))
            self.committer.commit([])

    # -- stop -----------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop in dependency order; everything polled is committed and VEE history saved."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        consumers = [n for n in self._task_names
                     if n in ("commands", "load-control", "groups", "areas", "vee", "power",
                               "power-verify", "meter-records", "clock-sync")]
        await self.supervisor.stop(consumers)
        bus_tasks = [n for n in self._task_names if n.startswith("bus:")]
        await self.supervisor.stop(bus_tasks, ask=self._ask_buses_to_stop,
                                   timeout=BUS_STOP_TIMEOUT_S)
        await self.supervisor.stop(["committer"])
        self.committer.drain()
        try:
            self.vee.save()
        except StoreError as exc:
            log.error("VEE history could not be saved (%s): the next start begins from the last "
                      "saved day", exc)
        self.commands.close()
        self._task_names.clear()

    def _ask_buses_to_stop(self) -> None:
        for bus in self.buses:
            bus.stop()

    # -- health ---------------------------------------------------------------------------------
    def progress_stale(self, now: float, stale_s: float) -> list[str]:
        """Buses whose loop has not moved for ``stale_s`` seconds."""
        return [bus.name for bus in self.buses if now - bus.progress > stale_s]
