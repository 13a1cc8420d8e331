"""`[clock]`: reading the meters' clocks and keeping them right (docs/clock.md).

A meter whose clock is off puts energy into the wrong tariff and its daily freeze and load
records at the wrong time. The gateway reads each meter's clock at `read_interval_s` (daily by
default: the drift of a meter's quartz is seconds a day), grades the offset with the VEE rules
`clock_drift` / `clock_fail`, raises `clock.drift` alarms, and — when `mode` allows it — sends a
time sync under the guards below.
"""

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from gateway.config.fields import setting
from gateway.config.kinds import Choice, Int, ListOf, Number, Str

ClockMode = Literal["off", "alarm-only", "broadcast", "addressed"]

#: "HH:MM" on a 24-hour clock.
HHMM_PATTERN = r"([01][0-9]|2[0-3]):[0-5][0-9]"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockSection:
    """[clock]: meter clock reads, drift alarms and automatic time sync."""

    mode: ClockMode = setting(
        Choice(get_args(ClockMode)),
        default="alarm-only",
        doc="off: meter clocks are not read. alarm-only: read and graded, clock.drift alarms, "
        "never synced. broadcast: a meter above the clock_drift rule's resync_s gets a DL/T "
        "645 broadcast time sync (08H) on its bus — every meter on that bus is set. addressed: "
        "the meter alone gets its date (04000101) and time (04000102) written with its "
        "control_password and operator_code (14H).",
    )
    read_interval_s: float = setting(
        Number(minimum=1, maximum=31 * 86400, unit="seconds"),
        default=86400.0,
        doc="How often each meter's clock is read (three extra transactions: date, time, "
        "date). Only meters whose profile has a [clock] table are read.",
    )
    read_spread_s: float = setting(
        Number(minimum=0, maximum=31 * 86400, unit="seconds"),
        default=3600.0,
        doc="The first clock reads after a start are spread evenly over this span (at most "
        "read_interval_s), meter by meter in configuration order, so a bus is not asked for "
        "every clock at once.",
    )
    max_step_s: float = setting(
        Number(minimum=1, maximum=86400, unit="seconds"),
        default=900.0,
        doc="The largest correction sent automatically. A meter further off is left alone "
        "(its clock.drift alarm says so): a clock that far off is a fault (battery, "
        "tampering, a wrong zone) for a person to look at; gwtool time-sync sets it by hand.",
    )
    guard_minutes: int = setting(
        Int(minimum=0, maximum=60, unit="minutes"),
        default=5,
        doc="No automatic sync when the meter's clock, the gateway's clock or anything "
        "between them is within this many minutes of the meters' local midnight or a freeze "
        "time: a step across one would skip or repeat the daily freeze.",
    )
    freeze_times: tuple[str, ...] = setting(
        ListOf(Str(pattern=HHMM_PATTERN, hint='a local time "HH:MM"'), unique=True),
        default=(),
        doc="Meter-local times (\"HH:MM\") of freezes besides midnight (timed or hourly freezes "
        "the meters are set up for), guarded like midnight.",
    )
