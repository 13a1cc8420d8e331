"""Drives the sans-IO load-control engine from the daemon: feeds it group power and time, and
carries out what it decides (verified relay operations on the bus priority lane through
:mod:`gateway.control.actuation`, CRM alarms, command outcomes).

Group power is :func:`edge_rules.groups.group_power` over the members' latest
``power.active.total`` reads, refreshed from every poll: the very total published on
``P/G/groups`` (each member counts the part of its power flowing in its configured direction,
× sign × CT × PT); a member not read within three poll intervals makes the total unknown
rather than silently smaller.

Prepaid balances come from the meters' own balance reads (``prepaid.balance.money`` or
``prepaid.balance.energy``, less the overdraft; DL/T 645 00900200/00900201, a Modbus profile's
balance register): each validated poll that carries one calls
:meth:`LoadControlEngine.on_balance`. Month-to-date group energy for monthly limits comes from
the validated register reads through :class:`~.month_energy.MonthToDate` and goes to
:meth:`LoadControlEngine.on_energy` after every poll of a member. Alarms about a meter carry its
configured ``customer`` id, for the CRM. The engine's state is saved to
``data_dir/load_control.json`` (atomic replace) after every call that produced output, so a
restart continues an episode instead of forgetting which customers it has tripped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from edge_rules.groups import build_layout, group_power, latest_power
from gateway.acquisition.base import ScheduledBus
from gateway.config import GatewayConfig
from gateway.control.actuation import actuate_meter
from gateway.control.commands import Journal
from gateway.control.load_control import (
    CommandOutcome,
    ControlCommand,
    LoadControlEngine,
    PublishAlarm,
    RecordRound,
    SendControl,
    Topology,
)
from gateway.control.load_control.month_energy import REGISTERS, MonthToDate
from gateway.pipeline.committer import Committer
from gateway.pipeline.feed import ValidatedPoll
from gateway.store.files import write_atomically

log = logging.getLogger(__name__)


class LoadControlRunner:
    def __init__(self, config: GatewayConfig, committer: Committer, journal: Journal,
                 buses: Sequence[ScheduledBus], report: Any,  # type: ignore[type-arg]
                 link_up: Any = None) -> None:
        self.config = config
        self._link_up = link_up
        self._last_link: bool | None = None
        self.committer = committer
        self.alarms = committer.alarms
        self.journal = journal
        self._report = report  # (cmd_id, status, reason) -> None: signed result to the outbox
        self.state_path = Path(config.gateway.data_dir) / "load_control.json"
        topology = Topology.from_config(config)
        settings = config.load_control  # checked and typed by the config loader
        saved = self._load()
        rng = random.Random()
        self.engine = (LoadControlEngine.from_dict(saved, topology, settings, rng=rng) if saved
                       else LoadControlEngine(topology, settings, rng=rng))
        self.meters = {m.id: m for m in config.meters}
        self.groups = {g.id: g for g in config.groups}
        self.bus_of: dict[str, ScheduledBus] = {m.meter_id: b for b in buses for m in b.meters}  # type: ignore[type-arg]
        self.power: dict[str, tuple[float, float]] = {}  # meter → (kW, wall time)
        self.layout = build_layout(
            config.groups, {m.id: float(m.ct_ratio * m.pt_ratio) for m in config.meters})
        self.power_meters = sorted({member.meter for g in config.groups for member in g.members})
        self.poll_interval = {m.id: m.poll_interval_s for m in config.meters}
        self.customers = {m.id: m.customer for m in config.meters if m.customer}
        self.groups_of: dict[str, list[str]] = {}
        for g in config.groups:
            for member in g.members:
                self.groups_of.setdefault(member.meter, [])
                if g.id not in self.groups_of[member.meter]:
                    self.groups_of[member.meter].append(g.id)
        self.month_path = Path(config.gateway.data_dir) / "month_energy.json"
        self.month = MonthToDate(self.layout, settings.utc_offset_min, self._load_month())
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

    def _load_month(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.month_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("month-to-date energy %s unreadable (%s); counting from the next reads",
                      self.month_path, exc)
            return None
        return data if isinstance(data, dict) else None

    def _save(self) -> None:
        # Durably: a restart after a power cut must still know which customers it tripped.
        write_atomically(self.state_path, json.dumps(self.engine.to_dict()).encode("utf-8"))

    # -- inputs -------------------------------------------------------------------------------------
    def on_poll(self, result: ValidatedPoll) -> None:
        meter = result.meter_id
        numbers = {v.quantity: (float(v.value), v.t_ms / 1000) for v in result.values
                   if isinstance(v.value, Decimal | float | int)}
        if "power.active.total" in numbers:
            self.power[meter] = numbers["power.active.total"]
        if "relay_open" in result.flags:
            self.dispatch(self.engine.on_meter_status(meter, time.time(),
                                                      relay_open=result.flags["relay_open"]))
        balance = prepaid_balance(numbers)
        if balance is not None and meter in self.meters:
            self.dispatch(self.engine.on_balance(meter, balance[1], balance[0]))
        groups = self.groups_of.get(meter)
        if groups:
            self._month_to_date(meter, numbers, groups)

    def _month_to_date(self, meter: str, numbers: dict[str, tuple[float, float]],
                       groups: list[str]) -> None:
        saved = False
        latest = 0.0
        for direction, quantity in REGISTERS.items():
            if quantity in numbers:
                kwh, t = numbers[quantity]
                latest = max(latest, t)
                saved |= self.month.observe(meter, direction, t, kwh)
        if saved:
            write_atomically(self.month_path, json.dumps(self.month.to_dict()).encode("utf-8"))
        if latest:
            for group, kwh in self.month.group_kwh(groups, latest).items():
                self.dispatch(self.engine.on_energy(group, latest, kwh))

    def group_power(self, group_id: str, now: float) -> float | None:
        """The group's power in kW as published on ``P/G/groups``, None unless every member
        has a fresh read."""
        column = latest_power(self.power, self.power_meters, self.poll_interval, now)
        totals = group_power(self.layout, self.power_meters, column)
        g = self.layout.group_index(group_id)
        return float(totals.total[g, 0]) if bool(totals.complete()[g, 0]) else None

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
                details = dict(out.details)
                if out.group:
                    details["group"] = out.group
                if out.meter in self.customers:  # the CRM routes on the customer, not the meter
                    details["customer"] = self.customers[out.meter]
                self.alarms.transition(out.kind, out.key, out.state, out.meter, details,
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
        """One engine decision carried out as the verified relay operation operator commands
        use too (:func:`gateway.control.actuation.actuate_meter`, valid until the engine's
        deadline); the engine hears the relay state read back, then the outcome."""
        outcome = await actuate_meter(self.bus_of.get(out.meter), self.meters.get(out.meter),
                                      out.meter, out.action, out.valid_until,
                                      self.config.commands.meter_utc_offset_min)
        if outcome.relay_open is not None:
            self.dispatch(self.engine.on_meter_status(out.meter, time.time(),
                                                      relay_open=outcome.relay_open))
        self.dispatch(self.engine.on_actuation(out.request_id, time.time(), outcome.ok,
                                               outcome.detail))


def prepaid_balance(numbers: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """(balance, seconds read) from one poll's numbers: the money balance, else the energy
    balance, less what the customer has overdrawn (a meter in overdraft shows 0 remaining and
    the overdraft beside it); None when the poll read no balance."""
    for unit in ("money", "energy"):
        found = numbers.get(f"prepaid.balance.{unit}")
        if found is not None:
            overdraft = numbers.get(f"prepaid.overdraft.{unit}", (0.0, found[1]))[0]
            return found[0] - overdraft, found[1]
    return None
