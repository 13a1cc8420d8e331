"""The limits a group can be under, how a command's ``params`` describe them, and how they
become the kernel's :class:`~edge_rules.load_limits.LimitSchedule`.

Power limits (功控, Q/GDW 1376.1), highest priority first — only the highest kind in force
applies (edge_rules/load_limits.py evaluates them):

``float_down`` (当前功率下浮控, AFN05 F12)
    ``coefficient_pct`` (−100 < c ≤ 100: the limit is the reference × (1 + c/100)),
    ``window_min`` (1–60, the sliding window the reference is averaged over), ``freeze_delay_min``
    (0–60: the reference is frozen this long after the command, over the window just before),
    and how long it lasts: ``duration_s`` from the command, or an absolute ``end``.
``business_suspension`` (营业报停控, F44)
    ``limit_kw`` over ``start`` .. ``end`` (UTC seconds; ``start`` defaults to now, ``end`` to
    "until cancelled"). A ``limit`` command without ``kind`` is this kind.
``factory_rest`` (厂休控, F42)
    ``limit_kw`` on ``weekdays`` (1 = Monday … 7 = Sunday, or ``"mon"`` … ``"sun"``) from
    ``start_time`` (local ``"HH:MM"``) for ``duration_min`` (1–1440); optional ``start``/``end``.
``time_period`` (时段控, F41)
    ``windows``: up to 8 ``{start: "HH:MM", end: "HH:MM", limit_kw}`` in local time, not
    overlapping (``end`` may be ``"24:00"``; a window with start > end runs over midnight);
    optional ``start``/``end``.

Energy limit (电控): ``monthly_energy`` (月电控, F46) — ``limit_kwh`` for the calendar month,
``alarm_pct`` (default from the settings) of it raises an alarm first.

Every kind may carry ``rounds`` (up to 8 lists of meter ids, the order customers are shed in)
and ``alarm_delay_s`` (seconds, one for all rounds or one per round); without them the group's
configured rounds and delays apply. A new limit of a kind replaces the group's previous one of
that kind.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Final, TypeAlias

import numpy as np

from edge_rules.load_limits import (
    KIND_BUSINESS_SUSPENSION,
    KIND_FACTORY_REST,
    KIND_FLOAT_DOWN,
    KIND_TIME_PERIOD,
    MAX_PERIODS,
    LimitSchedule,
)
from gateway.control.errors import ControlError
from gateway.control.load_control.settings import MAX_ROUNDS

__all__ = [
    "BusinessSuspensionLimit",
    "FactoryRestLimit",
    "FloatDownLimit",
    "Limit",
    "LimitKind",
    "LimitParamsError",
    "MonthlyEnergyLimit",
    "PowerLimit",
    "TimePeriodLimit",
    "TimeWindow",
    "build_schedule",
    "check_params",
    "limit_from_dict",
    "limit_to_dict",
    "parse_limit",
]

_INT64_MIN: Final = int(np.iinfo(np.int64).min)
_INT64_MAX: Final = int(np.iinfo(np.int64).max)
_HHMM: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
_WEEKDAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Longest a command's times may reach (≈ 10 years): a typo in ``end`` must not be forever.
_MAX_SPAN_S: Final = 10 * 366 * 86400


class LimitParamsError(ControlError, ValueError):
    """A ``limit`` (or other load-control) command's params are wrong; the text says which
    field and what it must be."""


class LimitKind(enum.Enum):
    """Power limit kinds; ``priority`` 1 is the highest (edge_rules.load_limits KIND_*)."""

    FLOAT_DOWN = "float_down"
    BUSINESS_SUSPENSION = "business_suspension"
    FACTORY_REST = "factory_rest"
    TIME_PERIOD = "time_period"

    @property
    def priority(self) -> int:
        return _PRIORITY[self]


_PRIORITY: Final = {
    LimitKind.FLOAT_DOWN: KIND_FLOAT_DOWN,
    LimitKind.BUSINESS_SUSPENSION: KIND_BUSINESS_SUSPENSION,
    LimitKind.FACTORY_REST: KIND_FACTORY_REST,
    LimitKind.TIME_PERIOD: KIND_TIME_PERIOD,
}
MONTHLY_ENERGY: Final = "monthly_energy"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily local window ``[start_min, end_min)`` (minutes, end may be 1440) at ``limit_kw``."""

    start_min: int
    end_min: int
    limit_kw: float

    def minutes(self) -> set[int]:
        if self.start_min <= self.end_min:
            return set(range(self.start_min, self.end_min))
        return set(range(self.start_min, 1440)) | set(range(0, self.end_min))


@dataclass(frozen=True, slots=True, kw_only=True)
class _LimitBase:
    """Fields every limit has: the installing command (``cmd``, hex id), its validity
    ``valid_from``..``valid_until`` (UTC seconds, None = open), and optional ``rounds`` /
    ``alarm_delay_s`` overriding the group's."""

    cmd: str
    valid_from: float | None = None
    valid_until: float | None = None
    rounds: tuple[tuple[str, ...], ...] | None = None
    alarm_delay_s: tuple[float, ...] | None = None

    def active_range(self, t: float) -> bool:
        return (self.valid_from is None or self.valid_from <= t) and (
            self.valid_until is None or t < self.valid_until
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FloatDownLimit(_LimitBase):
    """Float-down: ``reference_kw`` (None until frozen at ``freeze_at``) × (1 + ``coefficient``)."""

    coefficient: float
    window_min: int
    freeze_at: float
    limit_kw: float | None = None
    reference_kw: float | None = None
    kind: LimitKind = LimitKind.FLOAT_DOWN

    def frozen(self, reference_kw: float, limit_kw: float) -> FloatDownLimit:
        return replace(self, reference_kw=reference_kw, limit_kw=limit_kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessSuspensionLimit(_LimitBase):
    """Business suspension: ``limit_kw`` over the validity range."""

    limit_kw: float
    kind: LimitKind = LimitKind.BUSINESS_SUSPENSION


@dataclass(frozen=True, slots=True, kw_only=True)
class FactoryRestLimit(_LimitBase):
    """Factory rest: ``limit_kw`` on ``weekdays`` (mask, Monday = bit 0) from ``start_min``
    (local minute of day) for ``duration_min``."""

    limit_kw: float
    weekdays: int
    start_min: int
    duration_min: int
    kind: LimitKind = LimitKind.FACTORY_REST


@dataclass(frozen=True, slots=True, kw_only=True)
class TimePeriodLimit(_LimitBase):
    """Time period: up to 8 daily ``windows``."""

    windows: tuple[TimeWindow, ...]
    kind: LimitKind = LimitKind.TIME_PERIOD


@dataclass(frozen=True, slots=True, kw_only=True)
class MonthlyEnergyLimit(_LimitBase):
    """Monthly energy: ``limit_kwh`` this calendar month; ``alarm_pct`` of it alarms first."""

    limit_kwh: float
    alarm_pct: float


PowerLimit: TypeAlias = FloatDownLimit | BusinessSuspensionLimit | FactoryRestLimit | TimePeriodLimit
Limit: TypeAlias = PowerLimit | MonthlyEnergyLimit


# --------------------------------------------------------------------------------------------
# Parsing command params
# --------------------------------------------------------------------------------------------


def parse_limit(
    params: Mapping[str, object], now: float | None, cmd: str, *, monthly_alarm_pct: float = 80.0,
    float_down_window_min: int = 15,
) -> Limit:
    """The limit a ``limit`` command describes. ``now`` (UTC seconds) anchors relative times;
    None only checks the syntax (the verifier's params check, before acceptance)."""
    p = _Params(params)
    kind = p.text("kind", default=LimitKind.BUSINESS_SUSPENSION.value)
    if kind not in _ALLOWED:
        raise LimitParamsError(f"params.kind {kind!r} is not one of {', '.join(_ALLOWED)}")
    p.finish(_ALLOWED[kind])  # a misspelt key is the real problem: report it before "required"
    anchor = 0.0 if now is None else now
    rounds = p.rounds()
    delays = p.delays(len(rounds) if rounds is not None else None)
    common: dict[str, object] = {"cmd": cmd, "rounds": rounds, "alarm_delay_s": delays}
    start = p.time("start")
    end = p.time("end")
    if start is not None and end is not None and end <= start:
        raise LimitParamsError(f"params.end ({end:g}) must be after params.start ({start:g})")
    if now is not None and end is not None and end <= now:
        raise LimitParamsError(f"params.end ({end:g}) is already past (now {now:.0f})")
    limit: Limit
    if kind == LimitKind.FLOAT_DOWN.value:
        coefficient = p.number("coefficient_pct", low=-100.0, high=100.0, low_open=True)
        window = p.integer("window_min", 1, 60, default=float_down_window_min)
        freeze_delay = p.integer("freeze_delay_min", 0, 60, default=0)
        duration = p.optional("duration_s", 0.0, low=1.0, high=float(_MAX_SPAN_S))
        if not duration and end is None:
            raise LimitParamsError(
                "a float_down limit needs params.duration_s (how long it lasts, 1376.1 控制时间) "
                "or params.end"
            )
        valid_from = anchor if start is None else start
        freeze_at = valid_from + 60.0 * freeze_delay
        until = end if end is not None else valid_from + duration
        if until <= freeze_at:
            raise LimitParamsError("the float_down control ends before its reference is frozen; "
                                   "lengthen duration_s or shorten freeze_delay_min")
        limit = FloatDownLimit(coefficient=coefficient / 100.0, window_min=window,
                               freeze_at=freeze_at, valid_from=freeze_at, valid_until=until,
                               **common)  # type: ignore[arg-type]
    elif kind == LimitKind.BUSINESS_SUSPENSION.value:
        limit = BusinessSuspensionLimit(limit_kw=p.kw("limit_kw"), valid_from=start,
                                        valid_until=end, **common)  # type: ignore[arg-type]
    elif kind == LimitKind.FACTORY_REST.value:
        limit = FactoryRestLimit(limit_kw=p.kw("limit_kw"), weekdays=p.weekdays(),
                                 start_min=p.clock("start_time", allow_2400=False),
                                 duration_min=p.integer("duration_min", 1, 1440),
                                 valid_from=start, valid_until=end,
                                 **common)  # type: ignore[arg-type]
    elif kind == LimitKind.TIME_PERIOD.value:
        limit = TimePeriodLimit(windows=p.windows(), valid_from=start, valid_until=end,
                                **common)  # type: ignore[arg-type]
    elif kind == MONTHLY_ENERGY:
        limit = MonthlyEnergyLimit(
            limit_kwh=p.number("limit_kwh", low=0.0, high=1e12),
            alarm_pct=p.optional("alarm_pct", monthly_alarm_pct, low=0.0, high=100.0,
                                 low_open=True),
            valid_from=start, valid_until=end, **common)  # type: ignore[arg-type]
    else:  # pragma: no cover - _ALLOWED lists exactly the kinds above
        raise AssertionError(kind)
    return limit


_COMMON_KEYS: Final = frozenset({"kind", "rounds", "alarm_delay_s", "start", "end"})
_ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    LimitKind.FLOAT_DOWN.value: _COMMON_KEYS
    | {"coefficient_pct", "window_min", "freeze_delay_min", "duration_s"},
    LimitKind.BUSINESS_SUSPENSION.value: _COMMON_KEYS | {"limit_kw"},
    LimitKind.FACTORY_REST.value: _COMMON_KEYS
    | {"limit_kw", "weekdays", "start_time", "duration_min"},
    LimitKind.TIME_PERIOD.value: _COMMON_KEYS | {"windows"},
    MONTHLY_ENERGY: _COMMON_KEYS | {"limit_kwh", "alarm_pct"},
}
_ACTION_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "trip": frozenset({"alarm_delay_s", "duration_s"}),
    "close": frozenset(),
    "allow_close": frozenset(),
    "alarm": frozenset({"release"}),
    "cancel": frozenset({"kind"}),
    "protect": frozenset({"duration_s", "mode"}),
    "unprotect": frozenset({"mode"}),
}


def check_params(action: str, params: Mapping[str, object]) -> str | None:
    """The verifier's params hook (``gateway.control.commands.ParamsCheck``): None when ``params`` are
    acceptable for ``action``, else a sentence saying what is wrong. Topology (do the rounds'
    meters belong to the group?) is checked when the engine executes the command."""
    try:
        if action == "limit":
            parse_limit(params, None, "-")
            return None
        allowed = _ACTION_KEYS.get(action)
        if allowed is None:
            return None
        p = _Params(params)
        if action == "trip":
            p.optional("alarm_delay_s", 0.0, low=0.0, high=86400.0)
            p.optional("duration_s", 0.0, low=0.0, high=float(_MAX_SPAN_S))
        elif action == "alarm":
            p.flag("release")
        elif action == "cancel":
            kind = p.params.get("kind")
            kinds = [k.value for k in LimitKind] + [MONTHLY_ENERGY]
            if kind is not None and kind not in kinds:
                raise LimitParamsError(f"params.kind {kind!r} is not one of {', '.join(kinds)}")
        elif action in ("protect", "unprotect"):
            mode = p.text("mode", default="protect")
            if mode not in ("protect", "exempt"):
                raise LimitParamsError(f'params.mode must be "protect" or "exempt", got {mode!r}')
            if action == "protect":
                p.optional("duration_s", 0.0, low=0.0, high=float(_MAX_SPAN_S))
        p.finish(allowed)
    except LimitParamsError as exc:
        return str(exc)
    return None


class _Params:
    """Typed access to a command's params, naming the field in every error."""

    def __init__(self, params: Mapping[str, object]) -> None:
        self.params = params

    def finish(self, allowed: frozenset[str]) -> None:
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise LimitParamsError(
                f"unknown params {unknown}; allowed here: {sorted(allowed) or 'none'}"
            )

    def _num(self, key: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise LimitParamsError(f"params.{key} must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise LimitParamsError(f"params.{key} must be finite, got {value!r}")
        return number

    def number(self, key: str, *, low: float, high: float, low_open: bool = False) -> float:
        if key not in self.params:
            raise LimitParamsError(f"params.{key} is required")
        number = self._num(key, self.params[key])
        if number > high or number < low or (low_open and number == low):
            bracket = "(" if low_open else "["
            raise LimitParamsError(f"params.{key} must be in {bracket}{low:g}, {high:g}], got {number:g}")
        return number

    def optional(self, key: str, default: float, *, low: float, high: float,
                 low_open: bool = False) -> float:
        if key not in self.params:
            return default
        return self.number(key, low=low, high=high, low_open=low_open)

    def kw(self, key: str) -> float:
        return self.number(key, low=0.0, high=1e9)

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        if key not in self.params:
            if default is None:
                raise LimitParamsError(f"params.{key} is required")
            return default
        value = self.params[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise LimitParamsError(f"params.{key} must be an integer {low}..{high}, got {value!r}")
        return value

    def text(self, key: str, default: str | None) -> str:
        value = self.params.get(key, default)
        if not isinstance(value, str):
            raise LimitParamsError(f"params.{key} must be text, got {value!r}")
        return value

    def flag(self, key: str) -> bool:
        value = self.params.get(key, False)
        if not isinstance(value, bool):
            raise LimitParamsError(f"params.{key} must be true or false, got {value!r}")
        return value

    def time(self, key: str) -> float | None:
        if key not in self.params:
            return None
        return self.number(key, low=0.0, high=4102444800.0)  # up to 2100-01-01

    def clock(self, key: str, *, allow_2400: bool = True, value: object = None) -> int:
        text = self.params.get(key) if value is None else value
        if not isinstance(text, str) or not _HHMM.match(text) or (text == "24:00" and not allow_2400):
            last = "24:00" if allow_2400 else "23:59"
            raise LimitParamsError(f"params.{key} must be local time \"HH:MM\" (00:00..{last}), "
                                   f"got {text!r}")
        hours, minutes = text.split(":")
        return int(hours) * 60 + int(minutes)

    def weekdays(self) -> int:
        value = self.params.get("weekdays")
        if not isinstance(value, list | tuple) or not value:
            raise LimitParamsError('params.weekdays must be a non-empty list of 1..7 (Monday = 1) '
                                   'or "mon".."sun"')
        mask = 0
        for day in value:
            if isinstance(day, int) and not isinstance(day, bool) and 1 <= day <= 7:
                mask |= 1 << (day - 1)
            elif isinstance(day, str) and day.lower()[:3] in _WEEKDAY_NAMES:
                mask |= 1 << _WEEKDAY_NAMES.index(day.lower()[:3])
            else:
                raise LimitParamsError(f"params.weekdays: {day!r} is not 1..7 (Monday = 1) or "
                                       '"mon".."sun"')
        return mask

    def windows(self) -> tuple[TimeWindow, ...]:
        value = self.params.get("windows")
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_PERIODS:
            raise LimitParamsError(f"params.windows must be a list of 1..{MAX_PERIODS} "
                                   '{start: "HH:MM", end: "HH:MM", limit_kw}')
        out: list[TimeWindow] = []
        taken: set[int] = set()
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or set(item) != {"start", "end", "limit_kw"}:
                raise LimitParamsError(f'params.windows[{i}] must be {{start: "HH:MM", end: '
                                       '"HH:MM", limit_kw}')
            start = self.clock(f"windows[{i}].start", allow_2400=False, value=item["start"])
            end = self.clock(f"windows[{i}].end", value=item["end"])
            if start == end:
                raise LimitParamsError(f"params.windows[{i}] is empty (start = end)")
            kw = _Params({"limit_kw": item["limit_kw"]}).kw("limit_kw")
            window = TimeWindow(start, end, kw)
            overlap = window.minutes() & taken
            if overlap:
                raise LimitParamsError(f"params.windows[{i}] overlaps an earlier window; windows "
                                       "must not overlap")
            taken |= window.minutes()
            out.append(window)
        return tuple(out)

    def rounds(self) -> tuple[tuple[str, ...], ...] | None:
        if "rounds" not in self.params:
            return None
        value = self.params["rounds"]
        if (
            not isinstance(value, list | tuple)
            or not 1 <= len(value) <= MAX_ROUNDS
            or not all(isinstance(r, list | tuple) and r and all(isinstance(m, str) for m in r)
                       for r in value)
        ):
            raise LimitParamsError(f"params.rounds must be 1..{MAX_ROUNDS} non-empty lists of "
                                   "meter ids (round 1 is shed first)")
        rounds = tuple(tuple(r) for r in value)
        flat = [m for r in rounds for m in r]
        if len(set(flat)) != len(flat):
            raise LimitParamsError("params.rounds names a meter more than once")
        return rounds

    def delays(self, rounds: int | None) -> tuple[float, ...] | None:
        if "alarm_delay_s" not in self.params:
            return None
        value = self.params["alarm_delay_s"]
        items = value if isinstance(value, list | tuple) else [value]
        delays = tuple(
            _Params({"alarm_delay_s": d}).number("alarm_delay_s", low=0.0, high=86400.0)
            for d in items
        )
        if not delays or len(delays) > MAX_ROUNDS:
            raise LimitParamsError(f"params.alarm_delay_s must be seconds or a list of 1..{MAX_ROUNDS}")
        if rounds is not None and len(delays) not in (1, rounds):
            raise LimitParamsError(f"params.alarm_delay_s has {len(delays)} values for {rounds} "
                                   "rounds; give one, or one per round")
        return delays


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------


def limit_to_dict(limit: Limit) -> dict[str, object]:
    """A JSON-compatible form of ``limit`` (for the engine's persisted state)."""
    data: dict[str, object] = {
        "cmd": limit.cmd, "valid_from": limit.valid_from, "valid_until": limit.valid_until,
        "rounds": None if limit.rounds is None else [list(r) for r in limit.rounds],
        "alarm_delay_s": None if limit.alarm_delay_s is None else list(limit.alarm_delay_s),
    }
    if isinstance(limit, MonthlyEnergyLimit):
        data.update(kind=MONTHLY_ENERGY, limit_kwh=limit.limit_kwh, alarm_pct=limit.alarm_pct)
    elif isinstance(limit, FloatDownLimit):
        data.update(kind=limit.kind.value, coefficient=limit.coefficient,
                    window_min=limit.window_min, freeze_at=limit.freeze_at,
                    limit_kw=limit.limit_kw, reference_kw=limit.reference_kw)
    elif isinstance(limit, BusinessSuspensionLimit):
        data.update(kind=limit.kind.value, limit_kw=limit.limit_kw)
    elif isinstance(limit, FactoryRestLimit):
        data.update(kind=limit.kind.value, limit_kw=limit.limit_kw, weekdays=limit.weekdays,
                    start_min=limit.start_min, duration_min=limit.duration_min)
    else:
        data.update(kind=limit.kind.value,
                    windows=[[w.start_min, w.end_min, w.limit_kw] for w in limit.windows])
    return data


def limit_from_dict(data: Mapping[str, Any]) -> Limit:
    """Inverse of :func:`limit_to_dict`."""
    d: dict[str, Any] = dict(data)
    kind = d.pop("kind")
    rounds = d.get("rounds")
    d["rounds"] = None if rounds is None else tuple(tuple(r) for r in rounds)
    delays = d.get("alarm_delay_s")
    d["alarm_delay_s"] = None if delays is None else tuple(float(x) for x in delays)
    if kind == MONTHLY_ENERGY:
        return MonthlyEnergyLimit(**d)
    if kind == LimitKind.FLOAT_DOWN.value:
        return FloatDownLimit(**d)
    if kind == LimitKind.BUSINESS_SUSPENSION.value:
        return BusinessSuspensionLimit(**d)
    if kind == LimitKind.FACTORY_REST.value:
        return FactoryRestLimit(**d)
    if kind == LimitKind.TIME_PERIOD.value:
        windows = d.pop("windows")
        return TimePeriodLimit(
            windows=tuple(TimeWindow(int(a), int(b), float(k)) for a, b, k in windows), **d
        )
    raise ValueError(f"persisted limit has unknown kind {kind!r}")


# --------------------------------------------------------------------------------------------
# To the kernel
# --------------------------------------------------------------------------------------------


def _ms(t: float | None, open_value: int) -> int:
    return open_value if t is None else math.floor(t * 1000)


def build_schedule(
    limits: Sequence[Mapping[LimitKind, PowerLimit]],
    floors_kw: Sequence[float | None],
    utc_offset_min: int,
) -> LimitSchedule:
    """The kernel's view of ``limits`` (one mapping per group, in the kernel's group order)."""
    schedule = LimitSchedule.empty(len(limits), utc_offset_min * 60_000)
    for g, (by_kind, floor) in enumerate(zip(limits, floors_kw, strict=True)):
        if floor is not None:
            schedule.floor_kw[g] = floor
        for kind, limit in by_kind.items():
            k = kind.priority - 1
            if isinstance(limit, FloatDownLimit):
                if limit.limit_kw is None:
                    continue  # not frozen yet: the kind is not in force
                schedule.fixed_kw[g, k] = limit.limit_kw
            elif isinstance(limit, BusinessSuspensionLimit):
                schedule.fixed_kw[g, k] = limit.limit_kw
            elif isinstance(limit, FactoryRestLimit):
                schedule.fixed_kw[g, k] = limit.limit_kw
                schedule.rest_weekdays[g] = limit.weekdays
                schedule.rest_start_min[g] = limit.start_min
                schedule.rest_duration_min[g] = limit.duration_min
            else:
                for p, window in enumerate(limit.windows):
                    schedule.period_start_min[g, p] = window.start_min
                    schedule.period_end_min[g, p] = window.end_min
                    schedule.period_kw[g, p] = window.limit_kw
            schedule.kind_from_ms[g, k] = _ms(limit.valid_from, _INT64_MIN)
            schedule.kind_until_ms[g, k] = _ms(limit.valid_until, _INT64_MAX)
    return schedule
