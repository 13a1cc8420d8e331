"""Signed update bundles in the daemon: watch the inbox, verify, stage, switch, prove, roll back.

A bundle (format: :mod:`protocols.bundle`, docs/bundles.md) dropped into ``[update] inbox_dir``
goes through these steps, each journaled in the audit journal under the bundle's id (the
SHA-256 of its manifest):

1. **verify** — signed by an ENGINEER key of the running configuration's ``[[operators]]``, for
   this gateway, ``seq`` above the last accepted one, every payload matching its digest. A
   refusal is one ``rejected`` record and one log line with the reason. Acceptance is an
   ``accepted`` record written in the same transaction as the new ``seq`` (the journal's replay
   state, under the reserved key name :data:`SEQ_KEY`), so a seq once accepted is spent even if
   the power fails the next instant — an old bundle can never come back, not even after a
   rollback (sign a new one with a higher seq).
2. **stage** — the payloads are written into ``bundle-staged/`` in the data_dir and read
   back; a wheel stays there for the installer (docs/bundles.md), the daemon never installs it.
3. **switch** — the config and profiles are replaced file by file (gateway/app/bundle_files.py)
   and the plan is built from them by the same function as a start and a SIGHUP; a plan that
   fails validation puts the old files back at once, and the running configuration was never
   stopped.
4. **prove** — the new plan replaces the runtime through the daemon's reload path; within
   ``[update] health_timeout_s`` every bus must be open and have polled a meter successfully
   and no supervised task may have failed. Otherwise the previous files come back and the
   previous plan is reloaded, by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

from gateway.app.bundle_files import FileSwitch
from gateway.app.plan import Plan, build_plan
from gateway.config import ConfigError, format_errors
from gateway.config.issues import ConfigIssue
from gateway.config.update import UpdateSection
from gateway.control.commands.journal import BUNDLE_RECORD, Journal, JournalEntry, ReplayMark
from gateway.errors import GatewayError
from gateway.store.files import write_atomically
from protocols.bundle import MAX_BUNDLE_BYTES, BundleError, SignedBundle, verify_bundle

if TYPE_CHECKING:
    from gateway.app.runtime import Runtime

log = logging.getLogger("gateway")

#: The name under which the journal keeps the last accepted bundle seq (its per-key counter
#: table). ``#`` cannot start an operator kid (gateway/config/ids.py), so no key shares it.
SEQ_KEY: Final = "#bundle"
BUNDLE_SUFFIX: Final = ".bundle"
STAGING_DIR: Final = "bundle-staged"
PROCESSED_DIR: Final = "processed"
HEALTH_POLL_S: Final = 0.5


class _Daemon(Protocol):
    """What the applier needs of the daemon (gateway/app/daemon.py)."""

    config_path: Path
    runtime: Runtime | None

    async def apply_plan(self, plan: Plan) -> None: ...

    def unhealthy(self) -> list[str]: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BundleApplier:
    """Applies bundles to one daemon; :meth:`run` is the supervised inbox watcher."""

    def __init__(self, daemon: _Daemon, settings: UpdateSection) -> None:
        self.daemon = daemon
        self.settings = settings

    # -- the inbox --------------------------------------------------------------------------
    async def run(self) -> None:
        inbox = self.settings.inbox_dir
        assert inbox is not None
        inbox.mkdir(parents=True, exist_ok=True)
        self.close_interrupted()
        while True:
            for path in sorted(inbox.glob(f"*{BUNDLE_SUFFIX}")):
                try:
                    with path.open("rb") as f:  # one byte over the limit is enough to refuse
                        data = f.read(MAX_BUNDLE_BYTES + 1)
                except OSError as exc:
                    log.error("bundle %s cannot be read (%s); left in place", path, exc)
                    continue
                await self.apply(data, path.name)
                _move_processed(path)
            await asyncio.sleep(self.settings.scan_interval_s)

    def close_interrupted(self) -> int:
        """Journal the bundles a restart interrupted (accepted, no final outcome) as failed:
        the daemon's start already put their files back (bundle_files.recover_switch)."""
        journal = self._journal()
        interrupted = [p for p in journal.pending() if p.details.get("what") == BUNDLE_RECORD]
        for p in interrupted:
            journal.record_outcome(p.cmd, "failed", "interrupted by a restart; the previous "
                                   "configuration and profiles were put back", now_ms=_now_ms(),
                                   details={"what": BUNDLE_RECORD, "step": "interrupted",
                                            "seq": p.details.get("seq")})
            log.error("bundle seq %s was interrupted by a restart: journaled failed",
                      p.details.get("seq"))
        return len(interrupted)

    # -- one bundle -------------------------------------------------------------------------
    async def apply(self, data: bytes, source: str) -> bool:
        """Verify and apply one bundle; True when its configuration is running and healthy (or
        it carried only a wheel). Every outcome is journaled and logged in one line."""
        runtime = self._runtime()
        config = runtime.config
        journal = runtime.commands.journal
        keys = {op.kid: op.public_key for op in config.operators if "ENGINEER" in op.roles}
        try:
            # Off the event loop: a bundle with a wheel is megabytes to decode and hash.
            bundle, kid = await asyncio.to_thread(
                verify_bundle, data, keys=keys, gateway_id=config.gateway.id,
                last_seq=journal.last_counter(SEQ_KEY))
        except BundleError as exc:
            log.error("bundle %s refused (%s): %s", source, exc.code, exc.reason)
            journal.append([JournalEntry("rejected", details={
                "what": BUNDLE_RECORD, "file": source, "size": len(data),
                "sha256": hashlib.sha256(data).digest(), "code": exc.code,
                "reason": exc.reason})], now_ms=_now_ms())
            return False
        seq = bundle.manifest.seq
        journal.append([JournalEntry("accepted", cmd=bundle.digest, kid=kid, details={
            "what": BUNDLE_RECORD, "file": source, "seq": seq, "size": len(data),
            "payloads": [{"name": p.name, "kind": p.kind, "sha256": p.sha256}
                         for p in bundle.manifest.payloads]})],
            now_ms=_now_ms(), replay=ReplayMark(SEQ_KEY, seq, bundle.digest))
        log.info("bundle %s (seq %d, signed by %s) accepted", source, seq, kid)
        return await self._apply_verified(bundle, source)

    async def _apply_verified(self, bundle: SignedBundle, source: str) -> bool:
        config_path = self.daemon.config_path
        data_dir = Path(self._runtime().config.gateway.data_dir)
        try:
            staged = _stage(bundle, data_dir / STAGING_DIR)
        except OSError as exc:
            return self._outcome(bundle, "failed", f"staging failed: {exc}", step="stage")
        self._outcome(bundle, "executed", f"staged in {staged}", step="stage", final=False)
        files: list[tuple[Path, bytes]] = []
        for entry in bundle.manifest.payloads:
            if entry.kind == "config":
                files.append((config_path, bundle.payloads[entry.name]))
            elif entry.kind == "profile":
                files.append((config_path.parent / "profiles" / entry.name,
                              bundle.payloads[entry.name]))
        if not files:
            wheel = bundle.manifest.entry("wheel")[0].name
            return self._outcome(bundle, "executed", f"wheel {wheel} recorded in {staged} for "
                                 "the installer; nothing for the daemon to switch",
                                 step="recorded")
        switch = FileSwitch.plan(config_path, files)
        try:
            switch.switch()
        except OSError as exc:
            return self._outcome(bundle, "failed", f"switching files failed: {exc}",
                                 step="switch")
        try:
            plan = build_plan(config_path)
            _check_restartless(plan, data_dir)
        except ConfigError as err:
            switch.restore()
            first = format_errors(err).strip().splitlines()
            reason = "; ".join(line.strip() for line in first[:3])
            log.error("bundle %s refused: its configuration fails validation (%s); the running "
                      "configuration stays", source, reason)
            return self._outcome(bundle, "failed", f"refused, fails validation: {reason}",
                                 step="validate")
        self._outcome(bundle, "executed", "configuration valid; switching",
                      step="switch", final=False)
        problem = await self._reload(plan)
        if problem is None:
            problem = await self._prove(self.settings.health_timeout_s)
        if problem is None:
            switch.commit()
            log.info("bundle %s (seq %d) applied: configuration running and healthy", source,
                     bundle.manifest.seq)
            return self._outcome(bundle, "executed", "running and healthy", step="healthy")
        log.error("bundle %s: %s; rolling back to the previous configuration", source, problem)
        switch.restore()
        try:
            rollback_problem = await self._reload(build_plan(config_path))
        except ConfigError as err:  # the previous files changed under us: say so, keep going
            rollback_problem = f"the previous configuration no longer validates: {err}"
        if rollback_problem is not None:
            log.error("rollback of bundle %s: %s", source, rollback_problem)
            problem += f"; rollback: {rollback_problem}"
        return self._outcome(bundle, "failed", f"rolled back: {problem}", step="rollback")

    async def _reload(self, plan: Plan) -> str | None:
        """The daemon's reload path; the reason it failed, or None."""
        try:
            await self.daemon.apply_plan(plan)
        except GatewayError as exc:
            return f"the new configuration does not start: {exc}"
        return None

    async def _prove(self, timeout_s: float) -> str | None:
        """None once the running configuration is healthy, else why not after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            reasons = self._health_problems()
            if not reasons:
                return None
            if time.monotonic() >= deadline:
                return f"not healthy within {timeout_s:g} s: {'; '.join(reasons)}"
            await asyncio.sleep(HEALTH_POLL_S)

    def _health_problems(self) -> list[str]:
        runtime = self.daemon.runtime
        if runtime is None:
            return ["no configuration running"]
        reasons = list(self.daemon.unhealthy())
        for bus in runtime.buses:
            if bus.line_error is not None:
                reasons.append(f"bus {bus.name} line unavailable ({bus.line_error})")
            elif not any(m.stats.polls_ok for m in bus.meters):
                reasons.append(f"bus {bus.name} has no successful poll")
        return reasons

    def _runtime(self) -> Runtime:
        runtime = self.daemon.runtime
        if runtime is None:
            raise GatewayError("no configuration is running")
        return runtime

    def _journal(self) -> Journal:
        return self._runtime().commands.journal

    def _outcome(self, bundle: SignedBundle, status: Literal["executed", "failed"], reason: str,
                 *, step: str, final: bool = True) -> bool:
        self._journal().record_outcome(bundle.digest, status, reason, now_ms=_now_ms(),
                                       final=final, details={"what": BUNDLE_RECORD, "step": step,
                                                             "seq": bundle.manifest.seq})
        return status == "executed"


def _check_restartless(plan: Plan, data_dir: Path) -> None:
    """A bundle's configuration must take effect at a reload: a new ``[gateway] data_dir``
    would only move the store and the audit journal at the next start, and this bundle's own
    journal records with them, so it is refused (change data_dir by hand, with a restart)."""
    if Path(plan.config.gateway.data_dir) != data_dir:
        raise ConfigError([ConfigIssue(
            plan.config.source_file or Path("gateway.toml"), "gateway.data_dir", f"changes from {data_dir} to {plan.config.gateway.data_dir}, "
            "which a bundle cannot do without a restart; change it by hand")])


def _stage(bundle: SignedBundle, directory: Path) -> Path:
    """Write every payload into ``directory`` and read it back against its digest (a disk that
    returns other bytes than it took must not get to switch anything)."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in bundle.manifest.payloads:
        path = directory / entry.name
        write_atomically(path, bundle.payloads[entry.name])
        if hashlib.sha256(path.read_bytes()).digest() != entry.sha256:
            raise OSError(f"{path} reads back different from what was written")
    return directory


def _move_processed(path: Path) -> None:
    target_dir = path.parent / PROCESSED_DIR
    try:
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        if target.exists():
            target = target_dir / f"{path.stem}-{_now_ms()}{path.suffix}"
        path.rename(target)
    except OSError as exc:
        log.error("bundle %s cannot be moved into %s (%s): remove it, or it is read again",
                  path, target_dir, exc)
