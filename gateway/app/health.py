"""Health figures: process memory, event-loop lag, supervised tasks, and the periodic snapshot
published on ``P/G/health``."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import time
from typing import TYPE_CHECKING, Any, Protocol

from gateway.app.event_loop import running_loop_name
from gateway.app.health_textfile import TextfileWriter
from gateway.app.health_textfile import render as render_textfile
from protocols.payload import Envelope, build_health
from protocols.topics import QOS_HEALTH

if TYPE_CHECKING:
    from gateway.app.runtime import Runtime
    from gateway.app.store_guard import StoreGuard
    from gateway.app.supervisor import Supervisor
    from gateway.pipeline.committer import PipelineServices
    from gateway.store import Store
    from gateway.uplink.mqtt_link import MqttLink
    from gateway.uplink.outbox_pump import OutboxPump


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), falling back to the peak from getrusage."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeper: a busy or blocked loop shows up here first."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.last_lag_s = 0.0
        self.max_lag_s = 0.0

    async def run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = time.monotonic() - t0 - self.interval_s
            self.last_lag_s = max(0.0, lag)
            self.max_lag_s = max(self.max_lag_s, self.last_lag_s)

    def take_max(self) -> float:
        value, self.max_lag_s = self.max_lag_s, self.last_lag_s
        return value


class _Daemon(Protocol):
    """What the health reporter reads of the daemon (gateway/app/daemon.py)."""

    store: Store | None
    link: MqttLink | None
    pump: OutboxPump | None
    runtime: Runtime | None
    services: PipelineServices | None
    supervisor: Supervisor
    guard: StoreGuard | None
    lag: LoopLagMonitor

    def unhealthy(self) -> list[str]: ...


class HealthReporter:
    """Builds the ``P/G/health`` snapshot and publishes it every ``health_interval_s``."""

    def __init__(self, daemon: _Daemon) -> None:
        self.daemon = daemon
        self._started = time.monotonic()
        self._cpu0 = cpu_seconds()
        self._writer: TextfileWriter | None = None

    def snapshot(self) -> dict[str, Any]:
        d = self.daemon
        now = time.monotonic()
        store = d.store
        oldest = store.oldest_unacked_ms() if store else None
        uptime = now - self._started
        stats: dict[str, Any] = {
            "uptime_s": round(uptime, 1),
            "rss_bytes": rss_bytes(),
            "cpu_pct": round(100 * (cpu_seconds() - self._cpu0) / max(uptime, 1e-9), 2),
            "loop_lag_ms": round(d.lag.take_max() * 1000, 2),
            "event_loop": running_loop_name(),
            "outbox_depth": store.outbox_depth() if store else None,
            "oldest_unacked_age_s": round((time.time_ns() // 1_000_000 - oldest) / 1000, 1)
            if oldest else 0,
            "buses": {b.name: b.health(now) for b in (d.runtime.buses if d.runtime else [])},
            "tasks": d.supervisor.health(),
            "healthy": not d.unhealthy(),
        }
        if d.pump is not None:
            stats["pump"] = dataclasses.asdict(d.pump.status())
        if d.link is not None:
            status = d.link.status()
            stats["mqtt"] = {"state": status.state, "connects": status.connects,
                             "connection_losses": status.connection_losses,
                             "last_error": status.last_error}
        if d.runtime is not None:
            stats["committer"] = dataclasses.asdict(d.runtime.committer.stats)
            stats["commands"] = d.runtime.commands.health()
        if d.services is not None:
            stats["outbox_writer"] = dataclasses.asdict(d.services.writer.stats)
        if d.guard is not None:
            stats["store"] = d.guard.health()
        return stats

    async def run(self) -> None:
        while True:
            d = self.daemon
            interval = d.runtime.config.gateway.health_interval_s if d.runtime else 30.0
            await asyncio.sleep(interval)
            link, store, services = d.link, d.store, d.services
            publish = link is not None and link.connected and store is not None \
                and services is not None
            textfile = self._textfile()
            if not publish and textfile is None:
                continue
            # One snapshot for both: it resets the loop-lag maximum as it reads it.
            snapshot = self.snapshot()
            if textfile is not None and d.runtime is not None:
                textfile.write(render_textfile(d.runtime.config.gateway.id, snapshot))
            if publish:
                assert link is not None and store is not None and services is not None
                topics = services.topics
                payload = build_health(Envelope(topics.gateway_id, store.epoch, store.last_seq,
                                                time.time_ns() // 1_000_000), snapshot)
                link.publish(topics.health, payload, qos=QOS_HEALTH)

    def _textfile(self) -> TextfileWriter | None:
        """The writer for ``[health] textfile_dir`` of the running config (it may change at a
        reload), None when it is unset."""
        runtime = self.daemon.runtime
        directory = runtime.config.health.textfile_dir if runtime is not None else None
        if directory is None:
            self._writer = None
        elif self._writer is None or self._writer.path.parent != directory:
            self._writer = TextfileWriter(directory)
        return self._writer
