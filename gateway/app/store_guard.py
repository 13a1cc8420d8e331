"""Watching the store's disk: free-space alarms, the ballast, store failures, spills.

The pipeline's outbox writer already keeps data when the store cannot be written
(gateway/pipeline/outbox.py). This is the daemon's side of it:

* **disk alarms before and during full** — every ``disk_check_interval_s`` (5 s by default,
  often enough to fire before a small partition fills) free space is compared with the
  thresholds (``disk.low``); the check survives store errors. When the store itself reports the
  disk full, ``disk.full`` is raised; any other store failure (a filesystem remounted read-only
  after an I/O error) raises ``store.failed``. Both travel at once as ephemeral MQTT messages
  (the store cannot take them) and durably once the store works again; health shows the state.
* **the ballast** — a reserve file laid while there is room, released by the writer when the
  disk fills, laid again once free space is back above the alarm threshold plus its size.
* **WAL** — checkpointed (and truncated) while space is low.
* **no loss on stop** — what is still held at a stop is spilled to ``[store] spill_dir`` and
  adopted at the next start (gateway/pipeline/spill.py); where there is no spill location (or
  it fails too) the stop says how many messages are lost and the daemon exits 1.
* **no progress possible** — a store that has failed (other than full) for
  :data:`STORE_FAILED_UNHEALTHY_S` makes the daemon unhealthy: the watchdog stops.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.pipeline.committer import PipelineServices
from gateway.pipeline.outbox import StoreFailure
from gateway.pipeline.spill import SpillError, adopt_spills, spill
from gateway.store import Store
from gateway.store.disk import Ballast
from gateway.store.errors import StoreError

log = logging.getLogger("gateway")

DISK_LOW = "disk.low"
DISK_FULL = "disk.full"
STORE_FAILED = "store.failed"
#: A store failing for this long (other than a full disk, which frees itself when retention or
#: an operator frees space) means no progress is possible: the watchdog is no longer fed.
STORE_FAILED_UNHEALTHY_S = 120.0
PRUNE_INTERVAL_S = 3600.0
BALLAST_NAME = "ballast"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class StoreGuard:
    """The daemon's watch over the store and its filesystem."""

    def __init__(self, store: Store, config: GatewayConfig) -> None:
        self.store = store
        self.config = config
        self.ballast = Ballast(Path(config.gateway.data_dir) / BALLAST_NAME,
                               config.store.ballast_mb * 2**20)
        self.services: PipelineServices | None = None
        self._last_prune = time.monotonic()
        self._failure_alarm: str | None = None

    # -- start ----------------------------------------------------------------------------------
    def adopt_spills(self) -> int:
        """Commit what the last stop spilled (before anything else is committed)."""
        spill_dir = self.config.store.spill_dir
        if spill_dir is None:
            return 0
        try:
            return adopt_spills(self.store, Path(spill_dir), now_ms=_now_ms())
        except StoreError as exc:
            log.error("the messages spilled at the last stop could not be committed (%s); they "
                      "stay in %s for the next start", exc, spill_dir)
            return 0

    def attach(self, services: PipelineServices) -> None:
        self.services = services
        services.writer.on_state_change = self._store_state_changed
        now = _now_ms()
        for kind in (STORE_FAILED, DISK_FULL):  # raised before a restart, spilled, adopted
            if services.alarms.active(kind):
                services.alarms.clear(kind, kind, None, {
                    "hint": f"store {self.store.path} writable again (after a restart)"}, now)
        # The ballast is laid by the first check(), which the maintenance task runs at start.

    def reconfigure(self, config: GatewayConfig) -> None:
        self.config = config
        self.ballast.size_bytes = config.store.ballast_mb * 2**20

    # -- periodic -------------------------------------------------------------------------------
    def check(self) -> None:
        """One round: disk alarm, retry of what is held, WAL and ballast, retention. A store
        error is logged and the next round tries again (this loop must not die with the disk)."""
        try:
            self._check()
        except StoreError as exc:
            log.warning("disk check postponed: %s", exc)

    def _check(self) -> None:
        services = self.services
        if services is None:
            return
        cfg = self.config.store
        try:
            status = self.store.disk_status(cfg.disk_alarm_free_mb, cfg.disk_alarm_free_pct)
        except OSError as exc:
            log.warning("free space of %s cannot be measured: %s", self.store.path.parent, exc)
            return
        alarms = services.alarms
        low = alarms.active(DISK_LOW)
        if status.alarm and not low:
            alarms.raise_(DISK_LOW, DISK_LOW, None,
                          {"free_bytes": status.free_bytes, "total_bytes": status.total_bytes,
                           "hint": status.describe()}, _now_ms())
        elif not status.alarm and low:
            alarms.clear(DISK_LOW, DISK_LOW, None, {"free_bytes": status.free_bytes}, _now_ms())
        services.writer.flush()
        if services.writer.failure is not None:
            return
        if status.alarm:
            self.store.checkpoint()  # the WAL is the room the next commit needs
        self._lay_ballast_if_room(status.free_bytes)
        if time.monotonic() - self._last_prune > PRUNE_INTERVAL_S:
            self._last_prune = time.monotonic()
            removed = self.store.prune(_now_ms(), cfg.retention_days)
            if removed:
                log.info("pruned %d acknowledged outbox rows older than %s days", removed,
                         cfg.retention_days)

    def _lay_ballast_if_room(self, free_bytes: int) -> None:
        """Lay the reserve again only with room to spare beyond the alarm threshold, so laying
        it never causes the disk alarm it is there to survive."""
        if free_bytes > self.config.store.disk_alarm_free_mb * 2**20 + 2 * self.ballast.size_bytes:
            self._lay_ballast()

    def _lay_ballast(self) -> None:
        if self.ballast.size_bytes and not self.ballast.present and self.ballast.lay():
            log.info("laid a %.1f MiB disk reserve at %s", self.ballast.size_bytes / 2**20,
                     self.ballast.path)

    def _store_state_changed(self, failure: StoreFailure | None) -> None:
        services = self.services
        assert services is not None
        now = _now_ms()
        if failure is not None:
            kind = DISK_FULL if failure.full else STORE_FAILED
            if self._failure_alarm is not None and self._failure_alarm != kind:
                services.alarms.clear(self._failure_alarm, self._failure_alarm, None,
                                      {"hint": f"now {kind}"}, now)
            self._failure_alarm = kind
            services.alarms.raise_(kind, kind, None, {"error": failure.error,
                                                      "path": failure.path,
                                                      "hint": failure.hint}, now)
        elif self._failure_alarm is not None:
            kind, self._failure_alarm = self._failure_alarm, None
            services.alarms.clear(kind, kind, None,
                                  {"hint": f"store {self.store.path} writable again"}, now)

    # -- health ---------------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        services = self.services
        if services is None:
            return {}
        writer = services.writer
        failure = writer.failure
        out: dict[str, object] = {"state": "ok" if failure is None else "failing",
                                  "held": writer.held, "dropped": writer.stats.dropped,
                                  "ballast": self.ballast.present}
        if failure is not None:
            out.update(error=failure.error, full=failure.full,
                       failing_s=round(time.monotonic() - failure.since, 1))
        return out

    def unhealthy(self) -> str | None:
        services = self.services
        failure = services.writer.failure if services is not None else None
        if failure is None or failure.full:
            return None
        failing = time.monotonic() - failure.since
        if failing < STORE_FAILED_UNHEALTHY_S:
            return None
        return f"store {failure.path} failing for {failing:.0f} s ({failure.error})"

    # -- stop -----------------------------------------------------------------------------------
    def settle_at_stop(self) -> int:
        """Commit, or else spill, what is held; returns how many messages are lost (0 when
        everything reached the store or a spill file)."""
        services = self.services
        if services is None:
            return 0
        writer = services.writer
        writer.flush()
        if not writer.held:
            return 0
        held = writer.held_items()
        spill_dir = self.config.store.spill_dir
        if spill_dir is not None:
            try:
                result = spill(held, Path(spill_dir), epoch=self.store.epoch,
                               last_seq=self.store.last_seq, now_ms=_now_ms())
            except (SpillError, StoreError) as exc:
                log.error("%d held messages could not be spilled: %s", len(held), exc)
            else:
                writer.forget_held()
                log.warning("the store could not take %d held messages; spilled to %s for the "
                            "next start", result.messages, result.path)
                return 0
        log.error("%d messages held in memory are LOST with this stop: the store cannot be "
                  "written and %s", len(held),
                  "the spill failed" if spill_dir is not None else
                  "no [store] spill_dir is configured")
        return len(held)
