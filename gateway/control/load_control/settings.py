"""Engine parameters (with their defaults) and the topology the engine acts on.

The engine never reads the configuration file: the daemon builds a :class:`Topology` from the
``[[meters]]`` and ``[[groups]]`` tables (:meth:`Topology.from_config`) and
:class:`EngineSettings` from a ``[load_control]`` table (:meth:`EngineSettings.from_mapping`,
which reports every problem with its key path, as the config loader does). Every setting has a
default, so an empty table is a working engine; docs/load_control.md lists them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

__all__ = [
    "MAX_ROUNDS",
    "EngineSettings",
    "GroupSettings",
    "GroupSpec",
    "MeterSpec",
    "PrepaidSettings",
    "RestoreAction",
    "SettingsError",
    "Topology",
]

#: Q/GDW 1376.1 terminals have at most 8 control rounds (轮次) per group.
MAX_ROUNDS: Final = 8

RestoreAction = Literal["direct_close", "allow_close"]


class SettingsError(ValueError):
    """``[load_control]`` is wrong; ``problems`` lists ``(key path, what is expected)``."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{path}: {text}" for path, text in self.problems))


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """What the engine needs to know of one meter: ``id``, ``protected`` (never tripped, whatever
    the input), ``contract_kw`` (informational, carried into alarms), ``meter_class``."""

    id: str
    protected: bool = False
    contract_kw: float | None = None
    meter_class: str = "residential"


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A summation group as load control sees it: ``members`` in file order and ``sheddable``,
    the members whose relay shedding *reduces* the group total — added (``+``) import members.
    Tripping a subtracted member or an export register would raise the total, so those never
    go into rounds."""

    id: str
    members: tuple[str, ...]
    sheddable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    """Meters and groups by id."""

    meters: Mapping[str, MeterSpec]
    groups: Mapping[str, GroupSpec]

    @classmethod
    def build(cls, meters: Sequence[MeterSpec], groups: Sequence[GroupSpec]) -> Topology:
        meter_map = {m.id: m for m in meters}
        for group in groups:
            unknown = [m for m in group.members if m not in meter_map]
            if unknown:
                raise ValueError(f"group {group.id}: unknown member meter(s) {unknown}")
        return cls(MappingProxyType(meter_map), MappingProxyType({g.id: g for g in groups}))

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Topology:
        """Meters and groups of a loaded gateway configuration."""
        meters = [
            MeterSpec(m.id, m.protected, m.contract_kw, m.meter_class) for m in config.meters
        ]
        groups = [
            GroupSpec(
                g.id,
                tuple(member.meter for member in g.members),
                tuple(
                    member.meter
                    for member in g.members
                    if member.sign == "+" and member.direction == "import"
                ),
            )
            for g in config.groups
        ]
        return cls.build(meters, groups)

    def is_protected(self, meter: str) -> bool:
        spec = self.meters.get(meter)
        return spec is not None and spec.protected


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrepaidSettings:
    """Prepaid balance thresholds (1376.1 F47 购电控: 报警门限 / 跳闸门限), in the currency or
    energy unit the balances are reported in."""

    alarm_threshold: float = 10.0
    trip_threshold: float = 0.0
    trip_delay_s: float = 300.0


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """Per-group overrides: ``rounds`` (lists of meter ids, ≤ 8), ``alarm_delay_s`` (one per
    round, or one for all), ``security_floor_kw`` (保安定值), ``hysteresis_pct``."""

    rounds: tuple[tuple[str, ...], ...] | None = None
    alarm_delay_s: tuple[float, ...] | None = None
    security_floor_kw: float | None = None
    hysteresis_pct: float | None = None


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Engine parameters; the defaults are the ones docs/load_control.md documents.

    Times are seconds. ``utc_offset_min`` is the meters' local time zone (factory-rest days,
    time-period windows); ``power_step_s`` the width of the power buckets the engine keeps and
    ``power_window_s`` the sliding window power is judged on (1376.1 F43: 1–60 min; a test rig
    may go down to one step); ``restore_delay_min_s``..``restore_delay_max_s`` the range of the
    random per-customer restore delay; ``restore_action`` how a load-control restore closes a
    relay (``direct_close`` 1CH/1C, or ``allow_close`` 1B: the customer presses the button);
    ``frame_validity_s`` how long a 1CH frame stays valid (its deadline field);
    ``power_up_protect_s`` and ``link_loss_protect_after_s`` the automatic protect (保电)
    triggers; ``meter_alarm_frames`` sends 1CH alarm (2A) frames before a trip.
    """

    utc_offset_min: int = 480
    power_step_s: int = 60
    power_window_s: int = 60
    alarm_delay_s: float = 300.0
    settle_s: float = 120.0
    after_record_s: float = 120.0
    after_record_grace_s: float = 60.0
    hysteresis_pct: float = 5.0
    restore_delay_min_s: float = 0.0
    restore_delay_max_s: float = 1800.0
    restore_action: RestoreAction = "direct_close"
    frame_validity_s: float = 300.0
    power_up_protect_s: float = 600.0
    link_loss_protect_after_s: float = 1800.0
    meter_alarm_frames: bool = True
    float_down_window_min: int = 15
    monthly_alarm_pct: float = 80.0
    history_s: int = 3600
    prepaid: PrepaidSettings = field(default_factory=PrepaidSettings)
    groups: Mapping[str, GroupSettings] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise SettingsError(problems)

    def _problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []

        def need(ok: bool, key: str, text: str) -> None:
            if not ok:
                out.append((f"load_control.{key}", text))

        need(-720 <= self.utc_offset_min <= 840, "utc_offset_min", "minutes from UTC, -720..840")
        need(1 <= self.power_step_s <= 900, "power_step_s", "an integer 1..900 seconds")
        need(
            self.power_step_s <= self.power_window_s <= 3600
            and self.power_window_s % self.power_step_s == 0,
            "power_window_s",
            f"a multiple of power_step_s ({self.power_step_s}) up to 3600 s "
            "(Q/GDW 1376.1 F43 allows 1-60 min)",
        )
        for key in ("alarm_delay_s", "settle_s", "after_record_s", "after_record_grace_s",
                    "restore_delay_min_s", "restore_delay_max_s", "power_up_protect_s",
                    "link_loss_protect_after_s"):
            value = getattr(self, key)
            need(math.isfinite(value) and 0 <= value <= 86400 * 31, key,
                 "seconds, 0 up to 31 days")
        need(self.settle_s >= self.power_window_s, "settle_s",
             f"at least power_window_s ({self.power_window_s} s): the next round must be judged "
             "on power measured after the previous trip")
        need(self.restore_delay_min_s <= self.restore_delay_max_s, "restore_delay_min_s",
             "must not exceed restore_delay_max_s")
        need(math.isfinite(self.frame_validity_s) and 10 <= self.frame_validity_s <= 86400,
             "frame_validity_s", "seconds, 10..86400")
        need(0 <= self.hysteresis_pct < 100, "hysteresis_pct", "a percentage 0..<100")
        need(0 < self.monthly_alarm_pct <= 100, "monthly_alarm_pct", "a percentage 0<..100")
        need(1 <= self.float_down_window_min <= 60, "float_down_window_min", "minutes 1..60")
        need(self.restore_action in ("direct_close", "allow_close"), "restore_action",
             '"direct_close" or "allow_close"')
        need(self.history_s >= max(3600, self.power_window_s), "history_s",
             "at least 3600 s (the longest float-down window) and power_window_s")
        p = self.prepaid
        need(p.trip_threshold <= p.alarm_threshold, "prepaid.trip_threshold",
             "must not exceed prepaid.alarm_threshold")
        need(math.isfinite(p.trip_delay_s) and p.trip_delay_s >= 0, "prepaid.trip_delay_s",
             "seconds ≥ 0")
        for gid, gs in self.groups.items():
            where = f"groups.{gid}"
            if gs.rounds is not None:
                need(1 <= len(gs.rounds) <= MAX_ROUNDS, f"{where}.rounds",
                     f"1..{MAX_ROUNDS} rounds (lists of meter ids)")
            if gs.alarm_delay_s is not None:
                need(all(0 <= d <= 86400 for d in gs.alarm_delay_s), f"{where}.alarm_delay_s",
                     "seconds 0..86400")
            if gs.security_floor_kw is not None:
                need(gs.security_floor_kw >= 0, f"{where}.security_floor_kw", "kW ≥ 0")
            if gs.hysteresis_pct is not None:
                need(0 <= gs.hysteresis_pct < 100, f"{where}.hysteresis_pct",
                     "a percentage 0..<100")
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> EngineSettings:
        """Settings from a parsed ``[load_control]`` table; unknown keys are errors."""
        problems: list[tuple[str, str]] = []
        simple = {f.name: f for f in fields(cls) if f.name not in ("prepaid", "groups")}
        values: dict[str, object] = {}
        for key, value in data.items():
            path = f"load_control.{key}"
            if key == "prepaid":
                values["prepaid"] = _prepaid(value, path, problems)
            elif key == "groups":
                values["groups"] = _groups(value, path, problems)
            elif key in simple:
                default = getattr(cls(), key)
                checked = _typed(value, default, path, problems)
                if checked is not None:
                    values[key] = checked
            else:
                problems.append((path, f"unknown key; allowed: {sorted([*simple, 'prepaid', 'groups'])}"))
        if problems:
            raise SettingsError(problems)
        return cls(**values)  # type: ignore[arg-type]

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


def _typed(value: object, default: object, path: str, problems: list[tuple[str, str]]) -> object:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        problems.append((path, f"must be true or false, got {value!r}"))
        return None
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append((path, f"must be an integer, got {value!r}"))
        return None
    if isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        problems.append((path, f"must be a number, got {value!r}"))
        return None
    if isinstance(value, str):
        return value
    problems.append((path, f"must be text, got {value!r}"))
    return None


def _prepaid(value: object, path: str, problems: list[tuple[str, str]]) -> PrepaidSettings:
    if not isinstance(value, Mapping):
        problems.append((path, "must be a table { alarm_threshold, trip_threshold, trip_delay_s }"))
        return PrepaidSettings()
    defaults = PrepaidSettings()
    values: dict[str, float] = {}
    for key, item in value.items():
        if key not in ("alarm_threshold", "trip_threshold", "trip_delay_s"):
            problems.append((f"{path}.{key}", "unknown key; allowed: alarm_threshold, "
                                              "trip_threshold, trip_delay_s"))
            continue
        checked = _typed(item, getattr(defaults, key), f"{path}.{key}", problems)
        if isinstance(checked, float):
            values[key] = checked
    return PrepaidSettings(**values)


def _groups(value: object, path: str, problems: list[tuple[str, str]]) -> Mapping[str, GroupSettings]:
    if not isinstance(value, Mapping):
        problems.append((path, "must be a table of group id → { rounds, alarm_delay_s, ... }"))
        return MappingProxyType({})
    out: dict[str, GroupSettings] = {}
    for gid, table in value.items():
        where = f"{path}.{gid}"
        if not isinstance(table, Mapping):
            problems.append((where, "must be a table"))
            continue
        rounds: tuple[tuple[str, ...], ...] | None = None
        delays: tuple[float, ...] | None = None
        floor: float | None = None
        hysteresis: float | None = None
        for key, item in table.items():
            if key == "rounds":
                rounds = _rounds(item, f"{where}.rounds", problems)
            elif key == "alarm_delay_s":
                delays = _delays(item, f"{where}.alarm_delay_s", problems)
            elif key in ("security_floor_kw", "hysteresis_pct"):
                checked = _typed(item, 0.0, f"{where}.{key}", problems)
                if isinstance(checked, float):
                    if key == "security_floor_kw":
                        floor = checked
                    else:
                        hysteresis = checked
            else:
                problems.append((f"{where}.{key}", "unknown key; allowed: rounds, alarm_delay_s, "
                                                   "security_floor_kw, hysteresis_pct"))
        out[str(gid)] = GroupSettings(rounds, delays, floor, hysteresis)
    return MappingProxyType(out)


def _rounds(value: object, path: str, problems: list[tuple[str, str]]) -> tuple[tuple[str, ...], ...] | None:
    if not isinstance(value, list | tuple) or not all(
        isinstance(r, list | tuple) and all(isinstance(m, str) for m in r) for r in value
    ):
        problems.append((path, 'must be a list of lists of meter ids, e.g. [["m-001"], ["m-002"]]'))
        return None
    return tuple(tuple(r) for r in value)


def _delays(value: object, path: str, problems: list[tuple[str, str]]) -> tuple[float, ...] | None:
    items: list[object] = list(value) if isinstance(value, list | tuple) else [value]
    numbers = [d for d in items
               if isinstance(d, int | float) and not isinstance(d, bool) and math.isfinite(d)]
    if not items or len(numbers) != len(items):
        problems.append((path, "must be seconds, or a list of seconds (one per round)"))
        return None
    return tuple(float(d) for d in numbers)
