"""`[load_control]`: the load-control engine's parameters, declared like every other table.

`EngineSettings` is at once the declaration of the table and the typed object the engine
(`gateway.control.load_control`) receives, so there is no second reading of the table. Every
key has a default: an empty table is a working engine; docs/load_control.md explains them.
"""

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from gateway.config.fields import Problems, setting
from gateway.config.kinds import Bool, Choice, Int, ListOf, MapOf, Number, OneOrMore, Str, Table

#: Q/GDW 1376.1 terminals have at most 8 control rounds (轮次) per group.
MAX_ROUNDS: Final = 8
_MONTH_S: Final = 86400 * 31

RestoreAction = Literal["direct_close", "allow_close"]


def _delay(default: float, doc: str) -> float:
    return setting(  # type: ignore[no-any-return]
        Number(minimum=0, maximum=_MONTH_S, unit="seconds"), default=default, doc=doc
    )


def _below_100(value: float | None, key: str) -> Problems:
    if value is not None and value >= 100:
        yield key, f"must be below 100 (a percentage), got {value:g}"


@dataclass(frozen=True, slots=True)
class PrepaidSettings:
    """[load_control.prepaid]: prepaid balance thresholds (1376.1 F47 购电控: 报警门限 /
    跳闸门限), in the currency or energy unit the balances are reported in."""

    alarm_threshold: float = setting(
        Number(), default=10.0, doc="Balance at or below which the customer is alarmed."
    )
    trip_threshold: float = setting(
        Number(), default=0.0, doc="Balance at or below which the customer is tripped."
    )
    trip_delay_s: float = setting(
        Number(minimum=0, unit="seconds"),
        default=300.0,
        doc="Delay between the trip threshold being reached and the trip.",
    )

    def table_problems(self) -> Problems:
        if self.trip_threshold > self.alarm_threshold:
            yield (
                "trip_threshold",
                f"must not exceed alarm_threshold ({self.alarm_threshold:g}), "
                f"got {self.trip_threshold:g}",
            )


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """[load_control.groups.<group id>]: per-group overrides of the engine's settings."""

    rounds: tuple[tuple[str, ...], ...] | None = setting(
        ListOf(ListOf(Str(hint="a meter id")), min_items=1, max_items=MAX_ROUNDS),
        default=None,
        doc=f"Rounds (轮次): up to {MAX_ROUNDS} lists of meter ids, tripped in order "
        "(unset: the group's sheddable members, one per round).",
    )
    alarm_delay_s: tuple[float, ...] | None = setting(
        OneOrMore(Number(minimum=0, maximum=86400, unit="seconds")),
        default=None,
        doc="Pre-trip alarm delay: one for every round, or one per round.",
    )
    security_floor_kw: float | None = setting(
        Number(minimum=0, unit="kW"),
        default=None,
        doc="Security floor (保安定值): the group is never shed below this power.",
    )
    hysteresis_pct: float | None = setting(
        Number(minimum=0, maximum=100, unit="percent"),
        default=None,
        doc="Restore band under the limit, for this group.",
    )

    def table_problems(self) -> Problems:
        yield from _below_100(self.hysteresis_pct, "hysteresis_pct")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """[load_control]: the load-control engine: rounds, delays, hysteresis, protect (保电) and
    prepaid thresholds (docs/load_control.md).

    Times are seconds. Power is judged over a sliding window of power_window_s made of
    power_step_s buckets (1376.1 F43: 1-60 min; a test rig may go down to one step).
    """

    utc_offset_min: int = setting(
        Int(minimum=-720, maximum=840, unit="minutes"),
        default=480,
        doc="Meters' local time zone: factory-rest days, time-period windows and the month "
        "boundary of monthly energy limits follow it.",
    )
    power_step_s: int = setting(
        Int(minimum=1, maximum=900, unit="seconds"),
        default=60,
        doc="Width of the power buckets the engine keeps.",
    )
    power_window_s: int = setting(
        Int(minimum=1, maximum=3600, unit="seconds"),
        default=60,
        doc="Sliding window power is judged on; a multiple of power_step_s.",
    )
    alarm_delay_s: float = _delay(300.0, "Pre-trip alarm before each round trips.")
    settle_s: float = _delay(
        120.0,
        "Quiet time after a round before the next; at least power_window_s, so the next round "
        "is judged on power measured after the previous trip.",
    )
    after_record_s: float = _delay(120.0, "Power recorded this long after a trip (事后记录).")
    after_record_grace_s: float = _delay(60.0, "Extra time allowed for that record.")
    hysteresis_pct: float = setting(
        Number(minimum=0, maximum=100, unit="percent"),
        default=5.0,
        doc="Restore band under the limit (below 100).",
    )
    restore_delay_min_s: float = _delay(0.0, "Shortest random per-customer restore delay.")
    restore_delay_max_s: float = _delay(1800.0, "Longest random per-customer restore delay.")
    restore_action: RestoreAction = setting(
        Choice(get_args(RestoreAction)),
        default="direct_close",
        doc="How a restore closes a relay: direct_close (1CH 1C) or allow_close (1B: the "
        "customer presses the button).",
    )
    frame_validity_s: float = setting(
        Number(minimum=10, maximum=86400, unit="seconds"),
        default=300.0,
        doc="How long a 1CH frame stays valid (its deadline field).",
    )
    power_up_protect_s: float = _delay(600.0, "No trips for this long after start.")
    link_loss_protect_after_s: float = _delay(
        1800.0, "Protect (保电) automatically after the uplink has been down this long."
    )
    meter_alarm_frames: bool = setting(
        Bool(), default=True, doc="Send 1CH alarm (2A) frames before a trip."
    )
    float_down_window_min: int = setting(
        Int(minimum=1, maximum=60, unit="minutes"),
        default=15,
        doc="Window of the float-down (下浮控) reference power.",
    )
    monthly_alarm_pct: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=100, unit="percent"),
        default=80.0,
        doc="Monthly energy limit: alarm at this share of it.",
    )
    history_s: int = setting(
        Int(minimum=3600, unit="seconds"),
        default=3600,
        doc="Power history kept: at least the longest float-down window (and power_window_s).",
    )
    prepaid: PrepaidSettings = setting(
        Table(PrepaidSettings), default=PrepaidSettings(), doc="Prepaid balance thresholds."
    )
    groups: Mapping[str, GroupSettings] = setting(
        MapOf(Table(GroupSettings), name="group id"),
        default={},
        doc="Per-group overrides, by [[groups]] id.",
    )

    def table_problems(self) -> Problems:
        if self.power_window_s < self.power_step_s or self.power_window_s % self.power_step_s:
            yield (
                "power_window_s",
                f"must be a multiple of power_step_s ({self.power_step_s}) up to 3600 s "
                f"(Q/GDW 1376.1 F43 allows 1-60 min), got {self.power_window_s}",
            )
        if self.settle_s < self.power_window_s:
            yield (
                "settle_s",
                f"must be at least power_window_s ({self.power_window_s} s): the next round "
                "must be judged on power measured after the previous trip",
            )
        if self.restore_delay_min_s > self.restore_delay_max_s:
            yield (
                "restore_delay_min_s",
                f"must not exceed restore_delay_max_s ({self.restore_delay_max_s:g}), "
                f"got {self.restore_delay_min_s:g}",
            )
        yield from _below_100(self.hysteresis_pct, "hysteresis_pct")

    # ---- derived values ---------------------------------------------------------------------

    def group(self, group_id: str) -> GroupSettings:
        return self.groups.get(group_id, GroupSettings())

    def hysteresis(self, group_id: str) -> float:
        """Hysteresis of ``group_id`` as a fraction."""
        pct = self.group(group_id).hysteresis_pct
        return (self.hysteresis_pct if pct is None else pct) / 100.0

    @property
    def window_buckets(self) -> int:
        return self.power_window_s // self.power_step_s

    @property
    def history_buckets(self) -> int:
        return -(-self.history_s // self.power_step_s)
