"""CT and PT ratios the meters report, against the ones the gateway multiplies by.

Group totals, line loss and load-control power multiply each meter's secondary readings by its
configured ``ct_ratio × pt_ratio``. A meter reprogrammed in the field (a CT changed from 200/5
to 300/5 and the meter's ratio parameter with it) while the configuration kept the old ratio
makes every one of those figures wrong by the same factor, and nothing in the readings shows it.
A profile that reads the meter's own ratios (DL/T 645-2007 04000306 / 04000307, ``every_s =
86400``: once a day) publishes them as ``ratio.ct`` / ``ratio.pt``; this subscriber grades
them with the VEE engine's ``check_ratios`` (the ``multiplier`` rule — the same call ``gwtool
vee`` makes for ``ratio.*`` rows), starting from the configured ratio, and raises
``meter.ratio`` (key ``meter.ratio/<meter>/<ct|pt>``) when the reported ratio changes away from
it; the alarm clears when the meter reports the configured ratio again (or the configuration
is corrected and reloaded).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

import numpy as np

from edge_rules import vee_kernels as vk
from gateway.acquisition.base import is_dlt645_meter
from gateway.config import GatewayConfig
from gateway.pipeline.alarms import Alarms
from gateway.pipeline.feed import ValidatedPoll
from gateway.pipeline.vee_stage import S_DAY, VeeStage
from protocols.modbus.profile import ModbusProfile

ALARM_KIND: Final = "meter.ratio"
#: Reported quantity → (configuration key, short name).
RATIOS: Final = {"ratio.ct": ("ct_ratio", "ct"), "ratio.pt": ("pt_ratio", "pt")}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def reads_ratios(buses: Iterable[object]) -> bool:
    """Whether any meter's plan reads a ``ratio.*`` quantity (else nobody subscribes: a poll
    costs nothing more)."""
    for bus in buses:
        for slot in getattr(bus, "meters", ()):
            if is_dlt645_meter(slot):
                for read in slot.reads:
                    item = slot.catalogue.lookup(read.request.di)
                    names = (read.name, *read.names, item.name if item else None)
                    if any(n in RATIOS for n in names if n):
                        return True
            profile = getattr(slot, "profile", None)
            if isinstance(profile, ModbusProfile) and any(
                    r.quantity in RATIOS for r in profile.registers):
                return True
    return False


class RatioCheck:
    """The feed subscriber ``meter-ratios`` (module docstring)."""

    def __init__(self, config: GatewayConfig, vee: VeeStage, alarms: Alarms) -> None:
        self.vee = vee
        self.alarms = alarms
        meters = {m.id: m for m in config.meters}
        #: Configured ratios per quantity, in the engine's meter order.
        self.configured = {q: np.array([float(getattr(meters[m], key)) for m in vee.meter_ids])
                           for q, (key, _) in RATIOS.items()}

    def on_poll(self, poll: ValidatedPoll) -> None:
        row = self.vee.row_of.get(poll.meter_id)
        if row is None:
            return
        for quantity, (key, short) in RATIOS.items():
            value = poll.value(quantity)
            if value is None or not isinstance(value.value, Decimal | float | int):
                continue
            reported = float(value.value)
            day = self.vee.grid.due_end(_now_ms()) // S_DAY
            verdict = self.vee.engine.check_ratios(
                quantity, np.array([row], dtype=np.int64), np.array([reported]), day,
                configured=self.configured[quantity])
            configured = float(self.configured[quantity][row])
            alarm_key = f"{ALARM_KIND}/{poll.meter_id}/{short}"
            details = {"reported": reported, "configured": configured, "quantity": quantity}
            if reported == configured:
                self.alarms.clear(ALARM_KIND, alarm_key, poll.meter_id, details, value.t_ms)
            elif int(verdict.published[0]) & vk.BIT_MULTIPLIER:
                self.alarms.raise_(ALARM_KIND, alarm_key, poll.meter_id, {
                    **details, "hint": f"meter {poll.meter_id} reports a {short.upper()} ratio "
                    f"of {reported:g}, the configuration says {key} = {configured:g}: group "
                    f"totals and line loss use the configured one — check the installation "
                    f"and correct [[meters]] {key} or the meter"}, value.t_ms)
