"""Signed commands in the daemon: verify, journal, act on the bus priority lane, report.

Order for every message taken from ``P/G/cmd`` (DESIGN §6): the verifier decides and journals the
verdict durably *before* anything acts; the ``accepted``/``rejected`` result is committed to the
outbox (signed by the gateway's key); an accepted command then acts — for a customer's meter that
means announcing the action to the CRM (alarm) first, then the 1CH frame on the bus's priority lane,
then reading the relay state back to confirm it really moved (:mod:`gateway.control.actuation`,
the same verified operation load-control rounds use) — and the outcome is journaled
and reported (``executed``/``failed``).

At start-up, commands journaled as accepted but never finished (the daemon died between the
journal entry and the action) are reported ``failed`` and **not** re-executed: a trip must happen
once or not at all, and the operator decides whether to send it again.

Actions handled here act on explicit meters (trip, close, allow_close, alarm, protect, unprotect),
record a planned outage window (``planned_outage``, :mod:`gateway.control.commands.planned`), or
queue stored messages to be published again (``replay``, :mod:`gateway.control.commands.replay`).
Group limits (``limit``/``cancel``) belong to the load-control engine. When the engine runs, it is
told of every confirmed operator trip (it becomes the meter's ``remote`` hold, so no round restore
closes it) and close (which lifts every hold).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.acquisition.base import ScheduledBus
from gateway.acquisition.modbus_bus import ModbusBus
from gateway.config import GatewayConfig, MeterConfig
from gateway.control.actuation import actuate_meter
from gateway.control.commands import (
    ChainHead,
    CommandVerifier,
    Journal,
    JournalError,
    ResultSigner,
    VerifiedCommand,
)
from gateway.control.commands.journal import BUNDLE_RECORD
from gateway.control.commands.planned import FILE_NAME as PLANNED_FILE
from gateway.control.commands.planned import PlannedOutageError, PlannedOutages
from gateway.control.commands.replay import ACTION as REPLAY
from gateway.control.commands.replay import ReplayRange
from gateway.control.commands.replay import execute as execute_replay
from gateway.control.errors import ControlError
from gateway.pipeline.committer import Committer
from gateway.store.errors import StoreError
from gateway.store.files import write_atomically
from gateway.uplink.mqtt_link import InboundCommand
from protocols.dlt645.messages import ControlAction
from protocols.ed25519 import BackendError, SigningKey

log = logging.getLogger(__name__)

#: command action → control action; what the relay must show afterwards is the actuation's
#: (:data:`gateway.control.actuation.EXPECTED_FLAGS`, ``expected_modbus_flags``).
ACTIONS: Mapping[str, ControlAction] = {
    "trip": ControlAction.TRIP,
    "close": ControlAction.DIRECT_CLOSE,
    "allow_close": ControlAction.ALLOW_CLOSE,
    "alarm": ControlAction.ALARM,
    "protect": ControlAction.PROTECT,
    "unprotect": ControlAction.PROTECT_RELEASE,
}
#: How long a 1CH frame stays valid in the meter: a frame delayed longer must not act.
FRAME_VALIDITY_S = 300.0
#: Actions that move a relay: a meter without one cannot carry them out.
RELAY_ACTIONS = frozenset({"trip", "close", "allow_close"})
#: Failpoint for crash tests (``after-accept``): a kill -9 between journal entry and action.
FAILPOINT_ENV = "EDGE_GATEWAY_FAILPOINT"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class GatewayKeyError(ControlError):
    """The result-signing key cannot be created or read; the message names the file and what
    to fix. Results must be signed, so the gateway does not start without it."""


def ensure_gateway_key(config: GatewayConfig) -> Path:
    """The gateway's result-signing key: the configured one, or one created in data_dir at first
    start (private, 0600) so results are always signed. Its public key is logged for the operator.
    Raises :class:`GatewayKeyError` when the key cannot be created (a read-only data_dir)."""
    if config.commands.gateway_key is not None:
        return Path(config.commands.gateway_key)
    path = Path(config.gateway.data_dir) / "gateway-result.key"
    if not path.exists():
        key = SigningKey.generate()
        pem = key.to_pkcs8_pem()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, pem, mode=0o600)
        except OSError as exc:
            raise GatewayKeyError(
                f"result key {path}: cannot be created ({exc.strerror}); make the data_dir "
                "writable by the gateway user, or set [commands] gateway_key to an existing key"
            ) from exc
        log.warning("created the gateway's result-signing key %s (public key %s); set "
                    "[commands] gateway_key to manage it yourself", path, key.public_bytes().hex())
    return path


def load_result_signer(config: GatewayConfig) -> ResultSigner:
    """The signer of command results, from :func:`ensure_gateway_key`'s file. An interpreter
    without a usable libcrypto cannot sign at all: that too is a one-line start error."""
    try:
        return _read_result_key(config)
    except BackendError as exc:
        raise GatewayKeyError(f"cannot sign command results: {exc}") from exc


def _read_result_key(config: GatewayConfig) -> ResultSigner:
    path = ensure_gateway_key(config)
    try:
        return ResultSigner.from_pem(path, config.gateway.id)
    except OSError as exc:
        raise GatewayKeyError(
            f"result key {path}: cannot be read ({exc.strerror}); check the file exists and "
            "the gateway user may read it ([commands] gateway_key)"
        ) from exc
    except ValueError as exc:
        raise GatewayKeyError(
            f"result key {path}: {exc}; replace it with an Ed25519 private key in PEM "
            "([commands] gateway_key)"
        ) from exc


@dataclass
class MeterOutcome:
    meter: str
    ok: bool
    detail: str


class CommandHandler:
    def __init__(self, config: GatewayConfig, committer: Committer,
                 buses: list[ScheduledBus]) -> None:  # type: ignore[type-arg]
        self.config = config
        self.store = committer.store
        self.committer = committer
        #: Results and audit heads go through the one outbox writer; alarms through the service.
        self.writer = committer.writer
        self.alarms = committer.alarms
        self.prefix = config.mqtt.topic_prefix
        # The key first: if it cannot be made, no journal is left open behind the error.
        self.signer = load_result_signer(config)
        data_dir = Path(config.gateway.data_dir)
        self.journal = Journal.open(data_dir / "audit.db")
        params_check = None
        if config.groups:  # the engine (and numba) only where group limits can exist
            from gateway.control.load_control import check_params

            params_check = check_params
        #: Planned outage windows (``planned_outage``), read by the power watch's alarms.
        self.planned = PlannedOutages(data_dir / PLANNED_FILE)
        self.verifier = CommandVerifier.from_config(config, self.journal, params_check=params_check,
                                                    relay_check=self.relay_problem,
                                                    planned=self.planned)
        #: The load-control engine's driver, for group limits; set by the daemon.
        self.load_control: Any = None
        self.meters: dict[str, MeterConfig] = {m.id: m for m in config.meters}
        self.bus_of: dict[str, ScheduledBus] = {}  # type: ignore[type-arg]
        self.set_buses(buses)

    def set_buses(self, buses: list[ScheduledBus]) -> None:  # type: ignore[type-arg]
        self.bus_of = {m.meter_id: bus for bus in buses for m in bus.meters}

    def relay_problem(self, action: str, meters: tuple[str, ...]) -> str | None:
        """Why ``action`` cannot be carried out on ``meters`` (the verifier's relay check), or
        None. DL/T 645 meters are assumed to have a relay (the 1CH reply says otherwise);
        a Modbus meter has one only if its profile declares it, and no meter-side alarm or
        protect at all — rejecting up front keeps such a command from being journaled as
        accepted and then failing on every meter."""
        for meter_id in meters:
            bus = self.bus_of.get(meter_id)
            if not isinstance(bus, ModbusBus):
                continue
            slot = next(m for m in bus.meters if m.meter_id == meter_id)
            profile = slot.profile
            name = profile.name if profile is not None else "?"
            relay = profile.relay if profile is not None else None
            if action in RELAY_ACTIONS and relay is None:
                return (f"meter {meter_id} (Modbus, profile {name!r}) has no relay in its profile; "
                        f"if the meter has one, add a relay table to the profile (see "
                        f"the template profile modbus-relay-meter.toml in protocols/meter_profiles/)")
            if action == "allow_close" and relay is not None and relay.allow_close_value is None:
                return (f"meter {meter_id} (Modbus, profile {name!r}): the relay has no "
                        f"allow-close value (relay.allow_close); send close instead, or add the "
                        f"value from the meter's manual to the profile")
            if action in ("alarm", "protect", "unprotect"):
                return (f"meter {meter_id} (Modbus, profile {name!r}) has no meter-side {action}; "
                        f"to keep a customer from being tripped set protected = true on the "
                        f"meter in the gateway configuration")
        return None

    def close(self) -> None:
        self.journal.close()

    def health(self) -> dict[str, int]:
        """For the health message: unauthenticated messages on the command topic rejected since
        start, and how many of them were over the journal budget (counted, not journaled)."""
        junk = self.verifier.junk
        return {"unauthenticated_rejected": junk.rejected,
                "unauthenticated_unjournaled": junk.unjournaled}

    # -- results ------------------------------------------------------------------------------------
    def report(self, cmd: bytes, status: str, reason: str) -> None:
        """Commit a signed result for ``cmd`` to the outbox."""
        self._result(cmd, status, reason)

    def _result(self, cmd: bytes, status: str, reason: str) -> None:
        self.writer.write([self.signer.outbox_message(topic_prefix=self.prefix, epoch=self.store.epoch,
                                                      ts=_now_ms(), cmd=cmd, status=status,
                                                      reason=reason)])

    def recover(self) -> int:
        """Report commands interrupted by a crash between the journal entry and the action."""
        pending = [p for p in self.journal.pending() if p.details.get("what") != BUNDLE_RECORD]
        for p in pending:
            reason = "interrupted by a restart before its outcome was recorded; not re-executed"
            self.journal.record_outcome(p.cmd, "failed", reason, now_ms=_now_ms())
            self._result(p.cmd, "failed", reason)
            log.error("command %s was interrupted by a restart: reported failed, not re-executed",
                      p.cmd.hex())
        return len(pending)

    # -- the audit chain head -------------------------------------------------------------------------
    def publish_audit_head(self, head: ChainHead | None = None) -> ChainHead:
        """Commit the journal's chain head (seq, hash, record count), signed, to the outbox.

        Once a head has left the gateway, cutting records off the journal's end or rewriting
        the chain (and re-hashing it) no longer goes unnoticed: ``gwtool audit verify --head``
        checks a journal against any head the central system kept."""
        head = self.journal.head() if head is None else head
        records = self.journal.record_count()
        self.writer.write([self.signer.audit_head_message(
            topic_prefix=self.prefix, epoch=self.store.epoch, ts=_now_ms(), head=head,
            records=records)])
        return head

    async def _publish_audit_heads(self) -> None:
        """At start, then every ``audit_head_interval_s``: the head, if it moved since the last
        one published here. An unchanged head adds nothing to the anchor, and an empty journal
        (a gateway that never received a command) has nothing to anchor — it would only put a
        message on the result topic of every gateway every few minutes."""
        interval = self.config.commands.audit_head_interval_s
        last: ChainHead | None = None
        while True:
            try:
                head = self.journal.head()
                if head.seq > 0 and head != last:
                    self.publish_audit_head(head)
                    last = head
            except (StoreError, JournalError) as exc:  # worth retrying; the loop goes on
                log.error("audit chain head not published (%s); retrying in %s s", exc,
                          interval or "(no interval: at the next start)")
            if interval <= 0:
                return
            await asyncio.sleep(interval)

    # -- the loop -----------------------------------------------------------------------------------
    async def run(self, commands: asyncio.Queue[InboundCommand]) -> None:
        heads = asyncio.create_task(self._publish_audit_heads(), name="audit-heads")
        try:
            while True:
                inbound = await commands.get()
                try:
                    await self.handle(inbound)
                except JournalError as exc:
                    log.error("command not handled: the audit journal cannot be written (%s)",
                              exc)
        finally:
            heads.cancel()

    async def handle(self, inbound: InboundCommand) -> None:
        decision = self.verifier.verify(inbound.payload, time.time())
        if decision.command_id is not None:
            self._result(decision.command_id, decision.status, decision.reason)
        if not decision.accepted or decision.command is None:
            if decision.journal_seq is not None:  # junk over the journal budget: not the log's either
                log.warning("command rejected: %s", decision.reason)
            return
        cmd = decision.command
        if os.environ.get(FAILPOINT_ENV) == "after-accept":
            # Test rigs only: die exactly between the journal entry and the action.
            os.kill(os.getpid(), signal.SIGKILL)
        if cmd.action == "planned_outage":
            self._plan_outage(cmd)
            return
        if cmd.action == REPLAY:
            self._replay(cmd)
            return
        if self.load_control is not None and (cmd.action in ("limit", "cancel") or cmd.group):
            self.load_control.on_command(cmd)  # the engine reports the outcome when it has one
            return
        if cmd.action not in ACTIONS:
            reason = f"action {cmd.action!r} needs the load-control engine, which is not running"
            self.journal.record_outcome(cmd.id, "failed", reason, now_ms=_now_ms())
            self._result(cmd.id, "failed", reason)
            return
        targets = cmd.trippable if cmd.action == "trip" else cmd.meters
        outcomes = [await self._act(meter_id, cmd.action, cmd.id) for meter_id in targets]
        failed = [o for o in outcomes if not o.ok]
        summary = "; ".join(f"{o.meter}: {o.detail}" for o in outcomes)
        status: Literal["executed", "failed"] = "failed" if failed else "executed"
        self.journal.record_outcome(cmd.id, status, summary, now_ms=_now_ms(),
                                    details={"meters": {o.meter: o.ok for o in outcomes}})
        self._result(cmd.id, status, summary)
        if self.load_control is not None and cmd.action in ("trip", "close", "allow_close"):
            # The engine must know: a round restored later must not close what an operator
            # tripped, and an operator's close lifts the engine's holds.
            for o in outcomes:
                if o.ok:
                    self.load_control.on_operator_relay(o.meter, cmd.action == "trip", cmd.id)

    def _plan_outage(self, cmd: VerifiedCommand) -> None:
        """Record (or cancel) a planned outage window; nothing on the bus moves."""
        area = cmd.group if cmd.group in self.verifier.keys.areas else None
        status: Literal["executed", "failed"] = "executed"
        try:
            reason = self.planned.apply(cmd.id, area, cmd.meters, cmd.params, time.time())
        except PlannedOutageError as exc:
            status, reason = "failed", str(exc)
        self.journal.record_outcome(cmd.id, status, reason, now_ms=_now_ms())
        self._result(cmd.id, status, reason)

    def _replay(self, cmd: VerifiedCommand) -> None:
        """Queue stored messages for re-publishing (:mod:`gateway.control.commands.replay`); the
        outbox pump sends them with ``hist`` in its replay lane, and the result says how many."""
        status, reason = execute_replay(self.store, ReplayRange.from_params(cmd.params))
        self.journal.record_outcome(cmd.id, status, reason, now_ms=_now_ms())
        self._result(cmd.id, status, reason)
        (log.info if status == "executed" else log.warning)("replay: %s", reason)

    async def _act(self, meter_id: str, action: str, cmd_id: bytes) -> MeterOutcome:
        """One meter's part of a command: the verified relay operation
        (:func:`gateway.control.actuation.actuate_meter`), with the CRM alarms around it."""
        meter = self.meters.get(meter_id)
        bus = self.bus_of.get(meter_id)
        if action == "trip" and meter is not None and bus is not None:
            # The customer service centre hears it before the customer does.
            self._trip_pending(meter_id, "raised", cmd_id)
        outcome = await actuate_meter(bus, meter, meter_id, ACTIONS[action],
                                      time.time() + FRAME_VALIDITY_S,
                                      self.config.commands.meter_utc_offset_min)
        if not outcome.ok:
            return MeterOutcome(meter_id, False, outcome.detail)
        if outcome.relay_open is None:
            return MeterOutcome(meter_id, True, outcome.detail or f"{action} acknowledged")
        self._relay_confirmed(meter_id, action, cmd_id)
        again = f" (verified after {outcome.attempts} frames)" if outcome.attempts > 1 else ""
        return MeterOutcome(meter_id, True, f"{action} done, relay "
                                            f"{'open' if outcome.relay_open else 'closed'}{again}")

    def _trip_pending(self, meter_id: str, state: str, cmd_id: bytes) -> None:
        """The CRM's "about to trip" event: raised before the frame goes out, cleared once the
        relay was seen open."""
        self.alarms.transition("load_control.trip_pending", f"load_control.trip_pending/{meter_id}",
                             state, meter_id, {"command": cmd_id.hex()}, _now_ms())

    def _relay_confirmed(self, meter_id: str, action: str, cmd_id: bytes) -> None:
        """CRM alarms once the relay was seen in its new state."""
        if action == "trip":
            self._trip_pending(meter_id, "cleared", cmd_id)
            self.alarms.transition("load_control.tripped", f"load_control.tripped/{meter_id}",
                                 "raised", meter_id, {"command": cmd_id.hex()}, _now_ms())
        elif action == "close":
            self.alarms.transition("load_control.tripped", f"load_control.tripped/{meter_id}",
                                 "cleared", meter_id, {"command": cmd_id.hex(), "restored": True},
                                 _now_ms())
