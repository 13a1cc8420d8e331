"""Drives the sans-IO load-control engine from the daemon: feeds it group power and time, and
carries out what it decides (1CH frames on the bus priority lane, CRM alarms, command outcomes).

Group power is the signed sum of the members' latest ``power.active.total`` reads (× CT × PT,
export members negative), refreshed from every poll; a member not read within three poll
intervals makes the total unknown rather than silently smaller. The engine's state is saved to
``data_dir/load_control.json`` (atomic replace) after every call that produced output, so a
restart continues an episode instead of forgetting which customers it has tripped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from gateway.acquisition.base import ScheduledBus
from gateway.acquisition.dlt645_bus import Dlt645Bus
from gateway.acquisition.modbus_bus import ModbusBus
from gateway.acquisition.poll_result import PollResult
from gateway.config import GatewayConfig
from gateway.control.commands import Journal
from gateway.control.load_control import (
    CommandOutcome,
    ControlCommand,
    EngineSettings,
    LoadControlEngine,
    PublishAlarm,
    RecordRound,
    SendControl,
    Topology,
)
from gateway.control.modbus_relay import actuate_modbus_relay
from gateway.pipeline.committer import Committer
from protocols import dlt645 as d

log = logging.getLogger(__name__)
STATUS_WORD_3 = 0x04000503
STALE_POLLS = 3


def engine_settings(config: GatewayConfig) -> EngineSettings:
    """The engine's settings: ``[load_control]`` as the config loader checked and typed it."""
    return config.load_control


class LoadControlRunner:
    def __init__(self, config: GatewayConfig, committer: Committer, journal: Journal,
                 buses: Sequence[ScheduledBus], report: Any,  # type: ignore[type-arg]
                 link_up: Any = None) -> None:
        self.config = config
        self._link_up = link_up
        self._last_link: bool | None = None
        self.committer = committer
        self.journal = journal
        self._report = report  # (cmd_id, status, reason) -> None: signed result to the outbox
        self.state_path = Path(config.gateway.data_dir) / "load_control.json"
        topology = Topology.from_config(config)
        settings = engine_settings(config)
        saved = self._load()
        rng = random.Random()
        self.engine = (LoadControlEngine.from_dict(saved, topology, settings, rng=rng) if saved
                       else LoadControlEngine(topology, settings, rng=rng))
        self.meters = {m.id: m for m in config.meters}
        self.groups = {g.id: g for g in config.groups}
        self.bus_of: dict[str, ScheduledBus] = {m.meter_id: b for b in buses for m in b.meters}  # type: ignore[type-arg]
        self.power: dict[str, tuple[float, float]] = {}  # meter → (kW, wall time)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- persistence --------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("load-control state %s unreadable (%s); starting fresh", self.state_path, exc)
            return None
        return data if isinstance(data, dict) else None

    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.engine.to_dict()))
        os.replace(tmp, self.state_path)

    # -- inputs -------------------------------------------------------------------------------------
    def on_poll(self, result: PollResult) -> None:
        for v in result.values:
            if v.quantity == "power.active.total" and isinstance(v.value, Decimal | float | int):
                self.power[result.meter_id] = (float(v.value), v.t_ms / 1000)
        if "relay_open" in result.flags:
            self.dispatch(self.engine.on_meter_status(result.meter_id, time.time(),
                                                      relay_open=result.flags["relay_open"]))

    def group_power(self, group_id: str, now: float) -> float | None:
        group = self.groups[group_id]
        total = 0.0
        for member in group.members:
            entry = self.power.get(member.meter)
            meter = self.meters[member.meter]
            if entry is None or now - entry[1] > STALE_POLLS * meter.poll_interval_s + 5:
                return None
            kw = entry[0] * float(meter.ct_ratio * meter.pt_ratio)
            kw = -kw if member.direction == "export" else kw
            total += kw if member.sign == "+" else -kw
        return total

    def on_command(self, command: Any) -> None:
        self.dispatch(self.engine.on_command(ControlCommand.from_verified(command), time.time()))

    def on_operator_relay(self, meter: str, opened: bool, cmd: bytes) -> None:
        """The command handler tripped or closed ``meter`` for an operator (see
        :meth:`LoadControlEngine.on_operator_relay`); saved at once even when the engine has
        nothing to say, so a restart still knows the operator's hold."""
        outputs = self.engine.on_operator_relay(meter, time.time(), opened=opened, cmd=cmd)
        self.dispatch(outputs)
        if not outputs:
            self._save()

    def on_link(self, up: bool) -> None:
        self.dispatch(self.engine.on_link(time.time(), up))

    async def run(self) -> None:
        self.dispatch(self.engine.power_up(time.time()))
        while True:
            now = time.time()
            if callable(self._link_up):
                up = bool(self._link_up())
                if up != self._last_link:
                    self._last_link = up
                    self.on_link(up)
            for group_id in self.groups:
                kw = self.group_power(group_id, now)
                if kw is not None:
                    self.dispatch(self.engine.on_power(group_id, now, kw))
            self.dispatch(self.engine.tick(now))
            await asyncio.sleep(1.0)

    # -- outputs ------------------------------------------------------------------------------------
    def dispatch(self, outputs: Sequence[object]) -> None:
        if not outputs:
            return
        for out in outputs:
            if isinstance(out, SendControl):
                task = asyncio.get_running_loop().create_task(self._send(out))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(out, PublishAlarm):
                self.committer.alarm(out.kind, out.key, out.state, out.meter,
                                     {**dict(out.details), **({"group": out.group} if out.group else {})},
                                     int(out.t * 1000))
            elif isinstance(out, RecordRound):
                log.warning("load control %s round %d (%s): tripped %s, %s %s before, %s after",
                            out.group, out.round_no, out.kind, ",".join(out.meters), out.before,
                            out.unit, out.after)
            elif isinstance(out, CommandOutcome):
                status: Literal["executed", "failed"] = out.status
                self.journal.record_outcome(out.cmd_id, status, out.reason,
                                            now_ms=time.time_ns() // 1_000_000)
                self._report(out.cmd_id, out.status, out.reason)
        self._save()

    async def _send(self, out: SendControl) -> None:
        ok, reason = await self._actuate(out)
        self.dispatch(self.engine.on_actuation(out.request_id, time.time(), ok, reason))

    async def _actuate(self, out: SendControl) -> tuple[bool, str]:
        meter = self.meters.get(out.meter)
        bus = self.bus_of.get(out.meter)
        if meter is not None and isinstance(bus, ModbusBus):
            return await self._actuate_modbus(out, bus)
        if meter is None or not isinstance(bus, Dlt645Bus):
            return False, f"meter {out.meter} has no DL/T 645 bus for relay control"
        import datetime as dt

        offset = dt.timedelta(minutes=self.config.commands.meter_utc_offset_min)
        valid_until = (dt.datetime.fromtimestamp(out.valid_until, dt.UTC) + offset).replace(
            tzinfo=None, microsecond=0)
        frame = d.ControlRequest(str(meter.address), out.action, valid_until,
                                 password_level=meter.control_password_level,
                                 password=meter.control_password.upper(),
                                 operator=meter.operator_code.upper())
        try:
            await bus.submit_priority(frame)
            tx = await bus.submit_priority(d.ReadRequest(str(meter.address), STATUS_WORD_3))
        except d.ExceptionReply as exc:
            return False, f"meter refused: {', '.join(exc.errors) or exc}"
        except Exception as exc:
            return False, f"no confirmation: {exc}"
        flags: Mapping[str, bool] = next(
            (r.value for r in tx.readings if isinstance(r.value, Mapping)), {})
        self.dispatch(self.engine.on_meter_status(out.meter, time.time(),
                                                  relay_open=bool(flags.get("relay_open"))))
        return True, "acknowledged; relay " + ("open" if flags.get("relay_open") else "closed")

    async def _actuate_modbus(self, out: SendControl, bus: ModbusBus) -> tuple[bool, str]:
        """The profile's relay write, verified by reading it back (the engine hears the state
        read, as it hears status word 3 from DL/T 645 meters)."""
        slot = next(m for m in bus.meters if m.meter_id == out.meter)
        relay = slot.profile.relay if slot.profile is not None else None
        if relay is None:
            name = slot.profile.name if slot.profile is not None else "?"
            return False, (f"meter {out.meter} (Modbus, profile {name!r}) has no relay in its "
                           "profile; add a relay table or remove the meter from the group")
        outcome = await actuate_modbus_relay(bus, out.meter, slot.unit, relay, out.action)
        if outcome.relay_open is not None:
            self.dispatch(self.engine.on_meter_status(out.meter, time.time(),
                                                      relay_open=outcome.relay_open))
        return outcome.ok, outcome.detail
