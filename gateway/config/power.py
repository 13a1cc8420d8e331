"""`[power]` and `[outage]`: the gateway's own power-fail input and what counts as an outage.

A gateway in a transformer area loses mains together with its meters; a UPS or supercap HAT
keeps it up for `hold_up_s` and tells it so on a GPIO line (docs/outages.md). The input is
read as a file so that a rig can drive it by writing one.
"""

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.fields import setting
from gateway.config.kinds import FilePath, Int, Number, Str


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerSection:
    """[power]: the gateway's power-fail input (unset: the gateway cannot tell mains loss)."""

    fail_input: Path | None = setting(
        FilePath("file"),
        default=None,
        doc="A file read every 100 ms whose text says whether mains is lost: the GPIO value "
        "file of a UPS/supercap HAT (/sys/class/gpio/gpioN/value) or any file a rig writes. "
        "Unset: no power-fail input, no outage.area alarms.",
    )
    fail_value: str = setting(
        Str(max_length=64),
        default="1",
        doc="The file's text (surrounding whitespace ignored) that means mains is lost; any "
        "other text means mains is present.",
    )
    hold_up_s: float = setting(
        Number(minimum=0, maximum=86400, exclusive_minimum=True, unit="seconds"),
        default=90.0,
        doc="How long the battery or supercap keeps the gateway up after mains loss; shown in "
        "the outage alarm. The gateway stops itself cleanly stop_margin_s before it ends "
        "(exit code 3, docs/outages.md).",
    )
    stop_margin_s: float = setting(
        Number(minimum=0, maximum=86400, unit="seconds"),
        default=15.0,
        doc="How long before the end of hold_up_s the gateway stops itself when mains is still "
        "lost: time for a clean stop (everything polled committed, the outbox's final drain, "
        "the retained MQTT death message, the store closed). Measured: 0.5 s on the test rig "
        "(tests/test_e2e_hold_up.py); the bound is the buses' 10 s to finish a transaction plus "
        "the outbox pump's 3 s final drain. The stop comes no earlier than "
        "the outage.area alarm, even when the margin is as long as hold_up_s.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutageSection:
    """[outage]: how power losses are classified (docs/outages.md)."""

    min_duration_s: float = setting(
        Number(minimum=0, maximum=86400, exclusive_minimum=True, unit="seconds"),
        default=60.0,
        doc="A power loss shorter than this is momentary, not an outage (IEEE 1366 treats "
        "< 5 min as momentary; 60 s is the concentrators' usual limit): no outage.area "
        "alarm if it ends before the alarm is due, else the alarm is cleared as momentary.",
    )
    verify_sample: int = setting(
        Int(minimum=0, maximum=64),
        default=5,
        doc="After an outage ends, how many of each area's DL/T 645-2007 meters (master first, "
        "in configuration order) are asked for their power-down records (03110000 count, "
        "03110001 newest start/end) on the bus priority lane; the verdict is an "
        "outage.verified event within 120 s. 0: no verification.",
    )
