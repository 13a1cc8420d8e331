"""Power control (功控) and monthly energy control (月电控): the round sequencers of each group.

Each control is a :class:`~.state.Controller` whose phase moves only through
:data:`~.phases.ROUND_TRANSITIONS`: over the limit → announce the next round (pre-trip alarm) →
still over when its alarm delay has run → trip it (and note the value before, and after
``after_record_s``) → power settles for ``settle_s`` → the next round if still over. Restores come
back in reverse round order with random per-customer delays (cold-load pickup). The limits are
judged by the kernels of ``edge_rules.load_limits`` on the sliding-window group power.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from edge_rules.load_limits import (
    KIND_NAMES,
    STATE_NO_DATA,
    STATE_NO_LIMIT,
    STATE_OVER,
    STATE_UNDER,
    effective_limits,
    float_down_reference,
    limit_states,
    sliding_mean,
)
from gateway.control.load_control.core import CLOSE_ACTIONS, ENERGY, POWER, EngineCore
from gateway.control.load_control.events import RecordRound
from gateway.control.load_control.limits import (
    MONTHLY_ENERGY,
    FloatDownLimit,
    Limit,
    LimitKind,
    build_schedule,
)
from gateway.control.load_control.phases import RoundEvent, RoundPhase
from gateway.control.load_control.settings import MAX_ROUNDS, GroupSpec, Topology
from gateway.control.load_control.state import Controller, RecordDue, TripStep

__all__ = ["RoundControl", "default_rounds"]


def default_rounds(group: GroupSpec, topology: Topology) -> tuple[tuple[str, ...], ...]:
    """Rounds when none are configured: the group's sheddable, unprotected members in file
    order, cut into at most 8 contiguous rounds of near-equal size (customers listed first are
    shed first)."""
    members = [m for m in group.sheddable if not topology.is_protected(m)]
    if not members:
        return ()
    n = min(MAX_ROUNDS, len(members))
    size, extra = divmod(len(members), n)
    rounds: list[tuple[str, ...]] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        rounds.append(tuple(members[start:end]))
        start = end
    return tuple(rounds)


class RoundControl(EngineCore):
    """The group controls, on top of :class:`~.core.EngineCore`."""

    # ---- limits and power view -----------------------------------------------------------

    def _expire_limits(self, group: str) -> None:
        g = self._groups[group]
        for kind in [k for k, lim in g.limits.items()
                     if lim.valid_until is not None and self._now >= lim.valid_until]:
            del g.limits[kind]
        if g.monthly is not None and g.monthly.valid_until is not None and self._now >= g.monthly.valid_until:
            g.monthly = None

    def _bucket_means(self, group: str, last: int, count: int) -> NDArray[np.float64]:
        g = self._groups[group]
        values = np.full((1, count), np.nan)
        for i, b in enumerate(range(last - count + 1, last + 1)):
            cell = g.buckets.get(b)
            if cell is not None and cell[1] > 0:
                values[0, i] = cell[0] / cell[1]
        return values

    def _power_view(self, group: str) -> tuple[float, float, int, int]:
        """(compared kW, limit kW, kernel kind, kernel state) of ``group`` now."""
        s = self.settings
        g = self._groups[group]
        now = self._now if math.isfinite(self._now) else 0.0
        k = s.window_buckets
        values = self._bucket_means(group, math.floor(now / s.power_step_s), k)
        compared = sliding_mean(values, np.array([k], dtype=np.int64))[:, -1:]
        floor = s.group(group).security_floor_kw
        schedule = build_schedule([g.limits], [floor], s.utc_offset_min)
        limit, kind = effective_limits(np.array([math.floor(now * 1000)], dtype=np.int64), schedule)
        state = limit_states(compared, limit, np.array([s.hysteresis(group)]))
        return float(compared[0, 0]), float(limit[0, 0]), int(kind[0, 0]), int(state[0, 0])

    def _freeze_float_down(self, group: str) -> None:
        g = self._groups[group]
        limit = g.limits.get(LimitKind.FLOAT_DOWN)
        if not isinstance(limit, FloatDownLimit) or limit.limit_kw is not None:
            return
        if self._now < limit.freeze_at:
            return
        step = self.settings.power_step_s
        window = max(1, limit.window_min * 60 // step)
        end = math.floor(limit.freeze_at / step) - 1  # the buckets wholly before the freeze
        values = self._bucket_means(group, end, window)
        kw = float(float_down_reference(values, np.array([window - 1], dtype=np.int64),
                                        np.array([window], dtype=np.int64),
                                        np.array([limit.coefficient]))[0])
        progress = self._commands.get(limit.cmd)
        if progress is not None:
            progress.freeze_pending = False
        if math.isnan(kw):
            del g.limits[LimitKind.FLOAT_DOWN]
            if progress is not None:
                progress.failures.append(
                    f"float_down on {group}: no group power in the {limit.window_min} min before "
                    "the freeze; nothing to float down from — send it again once the group "
                    "power is being read")
        else:
            reference = kw / (1.0 + limit.coefficient)
            g.limits[LimitKind.FLOAT_DOWN] = limit.frozen(reference, kw)
            if progress is not None:
                progress.done.append(
                    f"float_down on {group}: {kw:.3f} kW = reference {reference:.3f} kW × "
                    f"{1.0 + limit.coefficient:.3f} (mean of {limit.window_min} min)")
        self._maybe_finish(limit.cmd)

    def _limit_of_kind(self, group: str, kernel_kind: int) -> Limit | None:
        g = self._groups[group]
        for kind, limit in g.limits.items():
            if kind.priority == kernel_kind:
                return limit
        return None

    # ---- power control -------------------------------------------------------------------

    def _evaluate_power(self, group: str) -> None:
        g = self._groups[group]
        ctl = g.power
        if (not g.limits and not ctl.steps and ctl.phase is RoundPhase.IDLE and not g.records_due
                and f"group.over_limit/{group}" not in self._alarms
                and f"group.shedding_exhausted/{group}" not in self._alarms):
            return  # nothing installed, nothing held: no kernel call for idle groups
        compared, limit_kw, kind, state = self._power_view(group)
        self._complete_records(group, POWER, None if math.isnan(compared) else compared)
        key = f"{POWER}:{group}"
        if state == STATE_NO_LIMIT:
            self._call_off(group, ctl, key)
            self._clear("group.over_limit", group, group=group)
            self._clear("group.shedding_exhausted", group, group=group)
            if ctl.steps:
                self._release_all(group, ctl, key, "limit no longer in force")
            ctl.fire(RoundEvent.STOP)
            return
        if self._suspended(group):
            self._call_off(group, ctl, key)
            ctl.restore_since = None
            return
        if state == STATE_NO_DATA:
            return  # timers wait: never trip or restore on no data
        limit = self._limit_of_kind(group, kind)
        rounds = self._rounds(group, limit)
        delays = self._delays(group, limit, len(rounds))
        over = state == STATE_OVER
        if ctl.phase is RoundPhase.SETTLE:
            if self._now < ctl.settle_until:
                return
            ctl.fire(RoundEvent.SETTLED)
        if over:
            self._raise("group.over_limit", group, "warning", group=group,
                        details={"power_kw": compared, "limit_kw": limit_kw,
                                 "kind": KIND_NAMES[kind]})
        else:
            self._clear("group.over_limit", group, group=group)
            self._clear("group.shedding_exhausted", group, group=group)
        if ctl.phase is RoundPhase.ALARM:
            if not over:
                self._call_off(group, ctl, key)
                return
            if self._now >= ctl.alarm_since + delays[min(ctl.alarm_round, len(delays) - 1)]:
                if self._trip_round(group, ctl, key, rounds, KIND_NAMES[kind], limit_kw, compared,
                                    "power"):
                    ctl.fire(RoundEvent.ROUND_TRIPPED)
                    ctl.settle_until = self._now + self.settings.settle_s
                else:
                    ctl.fire(RoundEvent.ROUND_DONE)
            return
        # idle
        if over:
            ctl.restore_since = None
            announced = self._announce_next(group, ctl, key, rounds, delays, limit_kw, compared,
                                            "kW")
            if announced and delays[ctl.alarm_round] <= 0:
                self._evaluate_power(group)  # zero alarm delay: trip in the same instant
            return
        if state == STATE_UNDER and ctl.steps:
            self._restore_under_limit(group, ctl, key, compared, limit_kw)
        else:
            ctl.restore_since = None

    def _restore_under_limit(self, group: str, ctl: Controller, key: str, compared: float,
                             limit_kw: float) -> None:
        """Bring the last round back while the limit is still in force — only when the power now
        plus what that round shed stays under the limit by the hysteresis, for ``settle_s``."""
        if self._now < ctl.restore_blocked_until:
            return
        top = ctl.steps[-1]
        if top.before is None or top.after is None:
            ctl.restore_since = None  # no shed estimate yet: wait for the record or the limit's end
            return
        shed = max(top.before - top.after, 0.0)
        if compared + shed > limit_kw * (1.0 - self.settings.hysteresis(group)):
            ctl.restore_since = None
            return
        if ctl.restore_since is None:
            ctl.restore_since = self._now
        if self._now - ctl.restore_since < self.settings.settle_s:
            return
        ctl.restore_since = None
        last_due = self._release_steps(group, ctl, key, [ctl.steps.pop()],
                                       "load back under the limit with room for this round")
        ctl.restore_blocked_until = last_due + self.settings.settle_s

    # ---- energy control ------------------------------------------------------------------

    def _evaluate_energy(self, group: str) -> None:
        g = self._groups[group]
        ctl = g.energy
        key = f"{ENERGY}:{group}"
        limit = g.monthly
        if limit is not None and not limit.active_range(self._now):
            limit = None
        self._complete_records(group, ENERGY, g.month_kwh)
        if limit is None:
            self._call_off(group, ctl, key)
            self._clear("group.energy_alarm", group, group=group)
            if ctl.steps:
                self._release_all(group, ctl, key, "monthly energy limit no longer in force")
            ctl.fire(RoundEvent.STOP)
            return
        if g.month_kwh is None:
            return
        kwh = g.month_kwh
        if kwh >= limit.limit_kwh * limit.alarm_pct / 100.0:
            self._raise("group.energy_alarm", group, "warning", group=group,
                        details={"month_kwh": kwh, "limit_kwh": limit.limit_kwh,
                                 "alarm_pct": limit.alarm_pct})
        else:
            self._clear("group.energy_alarm", group, group=group)
        if kwh < limit.limit_kwh:
            self._call_off(group, ctl, key)
            self._clear("group.shedding_exhausted", f"{group}:energy", group=group)
            if ctl.steps:
                self._release_all(group, ctl, key, "month-to-date energy under the monthly limit")
            ctl.fire(RoundEvent.STOP)
            return
        if self._suspended(group):
            self._call_off(group, ctl, key)
            return
        rounds = self._rounds(group, limit)
        delays = self._delays(group, limit, len(rounds))
        for _ in range(MAX_ROUNDS + 1):  # zero delays may trip several rounds in one instant
            if ctl.phase is RoundPhase.ALARM:
                if self._now < ctl.alarm_since + delays[min(ctl.alarm_round, len(delays) - 1)]:
                    return
                self._trip_round(group, ctl, key, rounds, MONTHLY_ENERGY, limit.limit_kwh, kwh,
                                 "energy")
                ctl.fire(RoundEvent.ROUND_DONE)  # energy does not come down by itself: no settle
            self._announce_next(group, ctl, key, rounds, delays, limit.limit_kwh, kwh, "kWh",
                                exhausted_key=f"{group}:energy")
            if ctl.phase is not RoundPhase.ALARM:
                return

    # ---- rounds --------------------------------------------------------------------------

    def _rounds(self, group: str, limit: Limit | None) -> tuple[tuple[str, ...], ...]:
        if limit is not None and limit.rounds is not None:
            return limit.rounds
        configured = self.settings.group(group).rounds
        if configured is not None:
            return configured
        return default_rounds(self.topology.groups[group], self.topology)

    def _delays(self, group: str, limit: Limit | None, n: int) -> tuple[float, ...]:
        source = (
            (limit.alarm_delay_s if limit is not None else None)
            or self.settings.group(group).alarm_delay_s
            or (self.settings.alarm_delay_s,)
        )
        n = max(n, 1)
        if len(source) >= n:
            return tuple(source[:n])
        return tuple(source) + (source[-1],) * (n - len(source))

    def _next_round(self, ctl_key: str, rounds: tuple[tuple[str, ...], ...]) -> int | None:
        """The lowest round with a customer this control could still trip."""
        for index, members in enumerate(rounds):
            if any(self._trippable(m, True) and ctl_key not in self._meters[m].holds
                   for m in members):
                return index
        return None

    def _announce_next(self, group: str, ctl: Controller, key: str,
                       rounds: tuple[tuple[str, ...], ...], delays: tuple[float, ...],
                       limit: float, value: float, unit: str,
                       exhausted_key: str | None = None) -> bool:
        """Announce the next round (its customers get the pre-trip alarm); False when no
        customer is left to trip (``group.shedding_exhausted``)."""
        index = self._next_round(key, rounds)
        if index is None:
            self._raise("group.shedding_exhausted", exhausted_key or group, "critical", group=group,
                        details={"value": value, "limit": limit, "unit": unit,
                                 "rounds_tripped": len(ctl.steps)})
            return False
        meters = [m for m in rounds[index]
                  if self._trippable(m, True) and key not in self._meters[m].holds]
        ctl.fire(RoundEvent.ANNOUNCE)
        ctl.alarm_round = index
        ctl.alarm_since = self._now
        ctl.alarm_meters = meters
        trip_at = self._now + delays[min(index, len(delays) - 1)]
        for meter in meters:
            self._alarm_on(meter, key, {"group": group, "control": key.split(":")[0],
                                        "round": index + 1, "limit": limit, "value": value,
                                        "unit": unit, "trip_at": trip_at})
        return True

    def _call_off(self, group: str, ctl: Controller, key: str) -> None:
        """Withdraw a pending round alarm (back under, suspended, or no limit any more)."""
        if not ctl.allows(RoundEvent.CALL_OFF):
            return
        for meter in ctl.alarm_meters:
            if meter in self._meters:
                self._alarm_off(meter, key, "called_off")
        ctl.alarm_meters = []
        ctl.alarm_round = -1
        ctl.fire(RoundEvent.CALL_OFF)

    def _trip_round(self, group: str, ctl: Controller, key: str,
                    rounds: tuple[tuple[str, ...], ...], kind: str, limit: float, value: float,
                    control: str) -> bool:
        index = ctl.alarm_round
        announced = ctl.alarm_meters
        ctl.alarm_meters = []
        ctl.alarm_round = -1
        members = rounds[index] if 0 <= index < len(rounds) else ()
        # Judged again at the moment of the trip: a meter protected meanwhile stays on.
        meters = [m for m in members if self._trippable(m, True) and key not in self._meters[m].holds]
        reason = f"{control} control of {group}: round {index + 1} ({kind})"
        details = {"group": group, "round": index + 1, "kind": kind, "limit": limit,
                   "value": value}
        tripped = [m for m in meters if self._hold(m, key, reason, details)]
        for meter in announced:
            if meter in self._meters:
                self._alarm_off(meter, key, "tripped" if meter in tripped else "called_off")
        if not tripped:
            return False
        ctl.steps.append(TripStep(index + 1, tripped, self._now, kind, limit, value))
        self._groups[group].records_due.append(RecordDue(
            control, index + 1, kind, self._now, limit, value, tripped,
            self._now + self.settings.after_record_s))
        return True

    def _complete_records(self, group: str, control: str, value: float | None) -> None:
        g = self._groups[group]
        remaining = []
        for record in g.records_due:
            late = self._now >= record.due + self.settings.after_record_grace_s
            if record.control != control or self._now < record.due or (value is None and not late):
                remaining.append(record)
                continue
            after = value
            for step in (g.power if control == POWER else g.energy).steps:
                if step.round_no == record.round_no and step.tripped_at == record.tripped_at:
                    step.after = after
            self._out.append(RecordRound(group, POWER if control == POWER else ENERGY,
                                         record.round_no, record.kind, record.tripped_at,
                                         record.limit, record.before, after,
                                         "kW" if control == POWER else "kWh",
                                         tuple(record.meters)))
        g.records_due = remaining

    def _release_all(self, group: str, ctl: Controller, key: str, reason: str) -> None:
        steps = list(reversed(ctl.steps))
        ctl.steps = []
        ctl.restore_since = None
        ctl.restore_blocked_until = 0.0
        self._release_steps(group, ctl, key, steps, reason)

    def _release_steps(self, group: str, ctl: Controller, key: str, steps: list[TripStep],
                       reason: str) -> float:
        """Release ``steps`` (last round first) with random per-customer delays, smallest delays
        to the first listed; returns the last due time."""
        s = self.settings
        ordered: list[tuple[str, int]] = []
        for step in steps:
            meters = list(step.meters)
            self._rng.shuffle(meters)  # nobody is always first back within a round
            ordered.extend((m, step.round_no) for m in meters)
        delays = sorted(self._rng.uniform(s.restore_delay_min_s, s.restore_delay_max_s)
                        for _ in ordered)
        action = CLOSE_ACTIONS[s.restore_action]
        last = self._now
        for (meter, round_no), delay in zip(ordered, delays, strict=True):
            if meter not in self._meters:
                continue
            self._release(meter, key, delay, action, f"{reason} (round {round_no} of {group})")
            last = max(last, self._now + delay)
        return last
