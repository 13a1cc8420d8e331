"""Summation groups (总加组, Q/GDW 1376.1 F14): signed sums of meter registers.

A group is a list of members ``{meter, sign, direction}``; each member contributes one
*channel* — the import or the export register of one meter — multiplied by its sign and by the
meter's CT × PT ratio (meters behind instrument transformers count secondary energy). The
same kernel totals three things, only the channel values differ:

* real-time power: ``power_channels`` splits each meter's signed active power into an import
  channel (``max(P, 0)``) and an export channel (``max(-P, 0)``); :func:`group_power` is *the*
  group power, the total published on ``P/G/groups`` and the total load control compares with
  its limits (one definition, so the two can never disagree);
* energy per interval: ``interval_energy`` turns register reads at interval boundaries into
  consumption per interval (a register that goes backwards is not energy: NaN, quality N);
* energy per day: the same, on the registers frozen at 00:00 (DL/T 645 05060101 / 05060201,
  or the 00:00 read of a Modbus meter), or ``day_totals`` over the interval totals.

Coverage is counted, not guessed: ``present`` members had a value, ``actual`` members had an
actual (quality A) value. A total over fewer members than the group has is still returned —
the caller decides whether a partial total is publishable (its quality is then not ``A``) —
but a total with no member present is NaN.

Layout (docs/dev/kernels.md): channel arrays are ``(channels, intervals)`` C-contiguous
float64, NaN for missing, with a uint8 quality array of the same shape (0 = A). Members are
three parallel 1-D arrays: channel row, group index, scale (sign × CT × PT).

Float64 is exact enough for totals: a sum of 10 000 registers of 8 digits at 0.01 kWh stays
below 2**53 hundredths, so quantising the result to the register resolution on publish
recovers the exact decimal total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_rules._jit import njit
from edge_rules.codes import QUALITY_A, QUALITY_E, QUALITY_N

__all__ = [
    "GroupLayout",
    "GroupTotals",
    "build_layout",
    "day_totals",
    "day_totals_nb",
    "day_totals_np",
    "gather_channels",
    "group_power",
    "group_totals",
    "group_totals_nb",
    "group_totals_np",
    "interval_energy",
    "interval_energy_nb",
    "interval_energy_np",
    "latest_power",
    "power_channels",
    "split_register_gaps",
    "split_register_gaps_nb",
    "split_register_gaps_np",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
U8 = NDArray[np.uint8]

IMPORT: Final = "import"
EXPORT: Final = "export"
#: A meter's latest power counts for this many of its poll intervals (plus
#: :data:`STALE_SLACK_S` for a poll that ran late); after that the member is missing.
STALE_POLLS: Final = 3
STALE_SLACK_S: Final = 5.0


# --------------------------------------------------------------------------------------------
# Interval energy from register reads
# --------------------------------------------------------------------------------------------


@njit
def interval_energy_nb(registers: F64, quality: U8) -> tuple[F64, U8]:
    """Consumption between consecutive register reads: ``(channels, n + 1)`` → ``(channels, n)``.

    A delta is actual only when both reads are; otherwise it carries the larger of the two
    quality codes. A missing read or a register that went backwards gives NaN with quality N:
    a decrease is a meter fault or a rollover that VEE must judge, never negative energy.
    """
    channels, reads = registers.shape
    n = max(reads - 1, 0)
    energy = np.empty((channels, n), dtype=np.float64)
    out_quality = np.empty((channels, n), dtype=np.uint8)
    for c in range(channels):
        for t in range(n):
            delta = registers[c, t + 1] - registers[c, t]
            if delta >= 0.0:
                energy[c, t] = delta
                out_quality[c, t] = max(quality[c, t], quality[c, t + 1])
            else:  # NaN compares false as well
                energy[c, t] = np.nan
                out_quality[c, t] = QUALITY_N
    return energy, out_quality


def interval_energy_np(registers: F64, quality: U8) -> tuple[F64, U8]:
    """NumPy twin of :func:`interval_energy_nb`."""
    delta = registers[:, 1:] - registers[:, :-1]
    with np.errstate(invalid="ignore"):
        ok = delta >= 0.0
    energy = np.where(ok, delta, np.nan)
    worst = np.maximum(quality[:, 1:], quality[:, :-1])
    out_quality = np.where(ok, worst, np.uint8(QUALITY_N)).astype(np.uint8)
    return energy, out_quality


def interval_energy(registers: F64, quality: U8) -> tuple[F64, U8]:
    """Validated entry point of :func:`interval_energy_nb`."""
    registers = _f64_2d(registers, "registers")
    quality = _u8_like(quality, registers, "quality")
    if registers.shape[1] == 0:
        raise ValueError("registers need at least one read per channel (n + 1 reads → n intervals)")
    return interval_energy_nb(registers, quality)


@njit
def split_register_gaps_nb(registers: F64, quality: U8, weights: F64) -> tuple[F64, U8]:
    """Like :func:`interval_energy_nb`, but a gap of missing reads between two good reads is
    not lost: the energy the two reads prove (later − earlier) is split over the intervals of
    the gap in proportion to ``weights`` (channels, n) — e.g. the area master's energy per day —
    and marked E (NEM12 method 24, data scaling). The gap's total is exact; only its split is
    estimated, which keeps a day with a lost freeze close to the truth instead of dropping the
    meter from the sum. Equal split when the weights are unusable; NaN (quality N) when the gap
    is not bracketed or the register went backwards across it.
    """
    channels, reads = registers.shape
    n = max(reads - 1, 0)
    energy, out_quality = interval_energy_nb(registers, quality)
    for c in range(channels):
        t = 0
        while t < n:
            if energy[c, t] == energy[c, t] or registers[c, t] != registers[c, t]:
                t += 1
                continue
            # registers[c, t] is read; find the next read register after t.
            e = t + 1
            while e < reads and registers[c, e] != registers[c, e]:
                e += 1
            if e >= reads or e == t + 1:
                t = e
                continue
            total = registers[c, e] - registers[c, t]
            if total >= 0.0:
                w_sum = 0.0
                usable = True
                for k in range(t, e):
                    w = weights[c, k]
                    if not (w >= 0.0):
                        usable = False
                    else:
                        w_sum += w
                for k in range(t, e):
                    if usable and w_sum > 0.0:
                        energy[c, k] = total * (weights[c, k] / w_sum)
                    else:
                        energy[c, k] = total / (e - t)
                    out_quality[c, k] = QUALITY_E
            t = e
    return energy, out_quality


def split_register_gaps_np(registers: F64, quality: U8, weights: F64) -> tuple[F64, U8]:
    """NumPy twin of :func:`split_register_gaps_nb`: each interval finds the read registers
    before and after it by running maxima/minima of read positions."""
    energy, out_quality = interval_energy_np(registers, quality)
    channels, reads = registers.shape
    n = max(reads - 1, 0)
    if n == 0 or channels == 0:
        return energy, out_quality
    read = ~np.isnan(registers)
    index = np.broadcast_to(np.arange(reads), (channels, reads))
    last_read = np.maximum.accumulate(np.where(read, index, -1), axis=1)[:, :n]
    next_read = np.minimum.accumulate(np.where(read, index, reads)[:, ::-1], axis=1)[:, ::-1]
    after = next_read[:, 1:]  # first read at or after the interval's end
    gap = np.isnan(energy) & (last_read >= 0) & (after < reads) & (after - last_read >= 2)
    lo = np.clip(last_read, 0, reads - 1)
    hi = np.clip(after, 0, reads - 1)
    total = np.take_along_axis(registers, hi, axis=1) - np.take_along_axis(registers, lo, axis=1)
    with np.errstate(invalid="ignore"):
        gap &= total >= 0.0
    out = energy.copy()
    q = out_quality.copy()
    for c, k in zip(*np.nonzero(gap), strict=True):
        t, e = int(lo[c, k]), int(hi[c, k])
        w = weights[c, t:e]
        usable = bool(np.all(w >= 0.0))
        w_sum = float(np.cumsum(np.where(usable, w, 0.0))[-1]) if usable else 0.0
        if usable and w_sum > 0.0:
            out[c, k] = total[c, k] * (weights[c, k] / w_sum)
        else:
            out[c, k] = total[c, k] / (e - t)
        q[c, k] = QUALITY_E
    return out, q


def split_register_gaps(registers: F64, quality: U8, weights: F64 | None = None) -> tuple[F64, U8]:
    """Validated entry point of :func:`split_register_gaps_nb` (``weights`` default: equal)."""
    registers = _f64_2d(registers, "registers")
    quality = _u8_like(quality, registers, "quality")
    if registers.shape[1] == 0:
        raise ValueError("registers need at least one read per channel (n + 1 reads → n intervals)")
    shape = (registers.shape[0], registers.shape[1] - 1)
    if weights is None:
        weights = np.ones(shape)
    weights = _f64_2d(weights, "weights")
    if weights.shape != shape:
        raise ValueError(f"weights must be (channels, intervals) = {shape}, got {weights.shape}")
    return split_register_gaps_nb(registers, quality, weights)


# --------------------------------------------------------------------------------------------
# Group totals
# --------------------------------------------------------------------------------------------


@njit
def group_totals_nb(
    values: F64,
    quality: U8,
    member_channel: I64,
    member_group: I64,
    member_scale: F64,
    n_groups: int,
) -> tuple[F64, I32, I32]:
    """Signed, scaled sums of channel rows per group and interval.

    Returns ``total`` (groups, intervals) — Σ scale·value over the members that have a value,
    NaN where none has —, ``present`` (members with a value) and ``actual`` (members with an
    actual value). Members are added in their order, each interval independently, so the
    result does not depend on how intervals are batched.
    """
    n_t = values.shape[1]
    total = np.zeros((n_groups, n_t), dtype=np.float64)
    # Both counts travel in one int64 accumulator (present in the low 32 bits, actual in the
    # high 32) and every step is a select rather than a branch: one 64-bit lane per value like
    # the float sum, so LLVM can vectorise the loop (bench/bench_groups.py compares the rate
    # with np.sum over the same values).
    packed = np.zeros((n_groups, n_t), dtype=np.int64)
    one = np.int64(1)
    actual_one = np.int64(1) << 32
    for m in range(member_channel.shape[0]):
        row = member_channel[m]
        g = member_group[m]
        scale = member_scale[m]
        for t in range(n_t):
            v = values[row, t]
            has = v == v
            total[g, t] += scale * v if has else 0.0
            count = one + actual_one if quality[row, t] == QUALITY_A else one
            packed[g, t] += count if has else np.int64(0)
    present = np.empty((n_groups, n_t), dtype=np.int32)
    actual = np.empty((n_groups, n_t), dtype=np.int32)
    for g in range(n_groups):
        for t in range(n_t):
            present[g, t] = np.int32(packed[g, t] & 0xFFFFFFFF)
            actual[g, t] = np.int32(packed[g, t] >> 32)
            if present[g, t] == 0:
                total[g, t] = np.nan
    return total, present, actual


def group_totals_np(
    values: F64,
    quality: U8,
    member_channel: I64,
    member_group: I64,
    member_scale: F64,
    n_groups: int,
) -> tuple[F64, I32, I32]:
    """NumPy twin of :func:`group_totals_nb`. ``np.add.at`` accumulates member rows in member
    order, the same order as the kernel, so the two agree exactly."""
    n_t = values.shape[1]
    rows = values[member_channel]
    has = ~np.isnan(rows)
    terms = np.where(has, member_scale[:, None] * rows, 0.0)
    total = np.zeros((n_groups, n_t), dtype=np.float64)
    present = np.zeros((n_groups, n_t), dtype=np.int32)
    actual = np.zeros((n_groups, n_t), dtype=np.int32)
    np.add.at(total, member_group, terms)
    np.add.at(present, member_group, has.astype(np.int32))
    np.add.at(actual, member_group, (has & (quality[member_channel] == QUALITY_A)).astype(np.int32))
    total[present == 0] = np.nan
    return total, present, actual


def group_totals(values: F64, quality: U8, layout: GroupLayout) -> GroupTotals:
    """Totals of every group of ``layout`` over channel values gathered in the layout's channel
    order (see :func:`gather_channels`, :func:`power_channels`)."""
    values = _f64_2d(values, "values")
    quality = _u8_like(quality, values, "quality")
    if values.shape[0] != len(layout.channels):
        raise ValueError(
            f"values have {values.shape[0]} channel rows but the layout has "
            f"{len(layout.channels)} channels (one per meter and direction)"
        )
    total, present, actual = group_totals_nb(
        values,
        quality,
        layout.member_channel,
        layout.member_group,
        layout.member_scale,
        len(layout.group_ids),
    )
    return GroupTotals(layout=layout, total=total, present=present, actual=actual, values=values)


# --------------------------------------------------------------------------------------------
# Day totals from interval totals
# --------------------------------------------------------------------------------------------


@njit
def day_totals_nb(totals: F64, intervals_per_day: int) -> F64:
    """Sum ``(rows, days × intervals_per_day)`` into ``(rows, days)``; one missing interval
    makes the day NaN (a day total must cover the whole day or say it does not)."""
    rows, n_t = totals.shape
    days = n_t // intervals_per_day
    out = np.empty((rows, days), dtype=np.float64)
    for r in range(rows):
        for d in range(days):
            acc = 0.0
            base = d * intervals_per_day
            for i in range(intervals_per_day):
                acc += totals[r, base + i]
            out[r, d] = acc
    return out


def day_totals_np(totals: F64, intervals_per_day: int) -> F64:
    """NumPy twin of :func:`day_totals_nb`; ``cumsum`` adds in sequence like the kernel (a
    plain ``sum`` would add pairwise and round differently)."""
    rows, n_t = totals.shape
    days = n_t // intervals_per_day
    if days == 0 or rows == 0:
        return np.empty((rows, days), dtype=np.float64)
    shaped = totals[:, : days * intervals_per_day].reshape(rows, days, intervals_per_day)
    return np.ascontiguousarray(np.cumsum(shaped, axis=2)[:, :, -1])


def day_totals(totals: F64, intervals_per_day: int) -> F64:
    """Validated entry point of :func:`day_totals_nb`."""
    totals = _f64_2d(totals, "totals")
    if intervals_per_day < 1:
        raise ValueError(f"intervals_per_day must be at least 1, got {intervals_per_day}")
    if totals.shape[1] % intervals_per_day:
        raise ValueError(
            f"{totals.shape[1]} intervals are not whole days of {intervals_per_day} intervals"
        )
    return day_totals_nb(totals, int(intervals_per_day))


# --------------------------------------------------------------------------------------------
# Layout: from configuration-shaped objects to index arrays
# --------------------------------------------------------------------------------------------


class MemberLike(Protocol):
    """What a group member must offer (``gateway.config.GroupMember`` does)."""

    @property
    def meter(self) -> str: ...
    @property
    def sign(self) -> str: ...
    @property
    def direction(self) -> str: ...


class GroupLike(Protocol):
    """What a group must offer (``gateway.config.GroupConfig`` does)."""

    @property
    def id(self) -> str: ...
    @property
    def members(self) -> Sequence[MemberLike]: ...


@dataclass(frozen=True, slots=True, eq=False)
class GroupLayout:
    """Index arrays for the group kernel, built once per configuration.

    ``group_ids`` in order; ``channels`` the ``(meter, direction)`` of each channel row the
    caller must supply; per member (config order within each group): ``member_channel``,
    ``member_group``, ``member_scale`` (sign × CT × PT) and ``member_meters``;
    ``group_sizes`` members per group.
    """

    group_ids: tuple[str, ...]
    channels: tuple[tuple[str, str], ...]
    member_channel: I64
    member_group: I64
    member_scale: F64
    member_meters: tuple[str, ...]
    group_sizes: I32

    def group_index(self, group_id: str) -> int:
        """Row of ``group_id`` in the kernel's outputs (KeyError if unknown)."""
        try:
            return self.group_ids.index(group_id)
        except ValueError:
            raise KeyError(group_id) from None

    def member_scale_of_channel(self) -> F64:
        """|CT × PT| of each channel row (1 for channels without a member)."""
        scale = np.ones(len(self.channels))
        scale[self.member_channel] = np.abs(self.member_scale)
        return scale[:, None]

    def members_of(self, group: int) -> NDArray[np.intp]:
        """Member indexes of group row ``group``."""
        return np.flatnonzero(self.member_group == group)


def build_layout(groups: Sequence[GroupLike], ratios: Mapping[str, float]) -> GroupLayout:
    """The layout for ``groups``; ``ratios`` gives each member meter's CT × PT product.

    Works on ``GatewayConfig.groups`` directly; ``ratios`` is
    ``{m.id: float(m.ct_ratio * m.pt_ratio) for m in config.meters}``.
    """
    channel_index: dict[tuple[str, str], int] = {}
    member_channel: list[int] = []
    member_group: list[int] = []
    member_scale: list[float] = []
    member_meters: list[str] = []
    sizes: list[int] = []
    for g, group in enumerate(groups):
        sizes.append(len(group.members))
        for member in group.members:
            if member.sign not in ("+", "-"):
                raise ValueError(f'group {group.id}: member {member.meter} sign must be "+" or "-"')
            if member.direction not in (IMPORT, EXPORT):
                raise ValueError(
                    f'group {group.id}: member {member.meter} direction must be "import" or "export"'
                )
            if member.meter not in ratios:
                raise ValueError(f"group {group.id}: member {member.meter} has no CT/PT ratio")
            key = (member.meter, member.direction)
            channel = channel_index.setdefault(key, len(channel_index))
            member_channel.append(channel)
            member_group.append(g)
            sign = 1.0 if member.sign == "+" else -1.0
            member_scale.append(sign * float(ratios[member.meter]))
            member_meters.append(member.meter)
    return GroupLayout(
        group_ids=tuple(group.id for group in groups),
        channels=tuple(channel_index),
        member_channel=np.asarray(member_channel, dtype=np.int64),
        member_group=np.asarray(member_group, dtype=np.int64),
        member_scale=np.asarray(member_scale, dtype=np.float64),
        member_meters=tuple(member_meters),
        group_sizes=np.asarray(sizes, dtype=np.int32),
    )


def gather_channels(
    layout: GroupLayout,
    meter_ids: Sequence[str],
    imports: F64,
    exports: F64 | None = None,
    import_quality: U8 | None = None,
    export_quality: U8 | None = None,
) -> tuple[F64, U8]:
    """Channel rows in layout order from per-meter arrays ``(meters, intervals)``.

    A meter not in ``meter_ids`` (or an export channel without ``exports``) gives a NaN row
    with quality N, so its absence shows up as missing coverage instead of an error.
    """
    imports = _f64_2d(imports, "imports")
    n_t = imports.shape[1]
    row_of = {meter: i for i, meter in enumerate(meter_ids)}
    values = np.full((len(layout.channels), n_t), np.nan)
    quality = np.full((len(layout.channels), n_t), QUALITY_N, dtype=np.uint8)
    for c, (meter, direction) in enumerate(layout.channels):
        source = imports if direction == IMPORT else exports
        source_quality = import_quality if direction == IMPORT else export_quality
        i = row_of.get(meter)
        if source is None or i is None:
            continue
        values[c] = source[i]
        quality[c] = QUALITY_A if source_quality is None else source_quality[i]
    quality[np.isnan(values)] = QUALITY_N
    return values, quality


def power_channels(
    layout: GroupLayout, meter_ids: Sequence[str], power_kw: F64, quality: U8 | None = None
) -> tuple[F64, U8]:
    """Channel rows from signed active power (positive = import): an import member counts
    the positive part, an export member the negative part, as the import and export
    registers would integrate them."""
    power_kw = _f64_2d(power_kw, "power_kw")
    with np.errstate(invalid="ignore"):
        imports = np.maximum(power_kw, 0.0)
        exports = np.maximum(-power_kw, 0.0)
    return gather_channels(layout, meter_ids, imports, exports, quality, quality)


def latest_power(
    latest: Mapping[str, tuple[float, float]],
    meter_ids: Sequence[str],
    poll_interval_s: Mapping[str, float],
    now: float,
) -> F64:
    """The ``(meters, 1)`` column :func:`group_power` takes: each meter's latest signed active
    power (``latest``: meter → (kW, seconds it was read)), NaN when it has none or when it is
    older than :data:`STALE_POLLS` of the meter's poll intervals — a meter that stopped
    answering makes its groups' totals incomplete instead of silently frozen at its last value.
    """
    column = np.full((len(meter_ids), 1), np.nan)
    for i, meter in enumerate(meter_ids):
        entry = latest.get(meter)
        if entry is not None and now - entry[1] <= STALE_POLLS * poll_interval_s[meter] + STALE_SLACK_S:
            column[i, 0] = entry[0]
    return column


def group_power(layout: GroupLayout, meter_ids: Sequence[str], power_kw: F64) -> GroupTotals:
    """The signed power total of every group: the one definition, published on
    ``P/G/groups/{group}`` and compared with load-control limits.

    Each member contributes ``sign × CT × PT ×`` the part of its meter's signed active power
    ``P`` (+ import) that flows in the member's configured direction: ``max(P, 0)`` for an
    import member, ``max(−P, 0)`` for an export member. A member running against its direction
    (an import member whose rooftop PV feeds back) contributes 0, not a negative amount.

    Why this and not the plain signed ``P`` of every member: the direction names a register
    (Q/GDW 1376.1 F14: forward or reverse active), and the power total must be the rate of the
    energy total the same group publishes per day — an import register does not run backwards
    while a customer exports. It is also the only reading under which sign and direction
    compose: a utility that wants a feeder's *net* power lists the meter twice, ``+ import``
    and ``− export``, which gives ``max(P, 0) − max(−P, 0) = P``; with signed ``P`` per member
    the same configuration would count the meter twice (``P + P``). So a load limit on net
    power is configured as net power, and a limit on consumption is not lowered by a
    neighbour's export.

    ``power_kw`` is ``(meters, intervals)`` in ``meter_ids`` order (NaN: no value, see
    :func:`latest_power`); a missing member leaves the total incomplete
    (:meth:`GroupTotals.complete`).
    """
    values, quality = power_channels(layout, meter_ids, power_kw)
    return group_totals(values, quality, layout)


@dataclass(frozen=True, slots=True, eq=False)
class GroupTotals:
    """Result of :func:`group_totals`: ``total``, ``present``, ``actual`` (groups, intervals),
    plus the layout and the channel values, to name the missing members."""

    layout: GroupLayout
    total: F64
    present: I32
    actual: I32
    values: F64

    def coverage(self) -> F64:
        """Fraction of each group's members with an actual value, (groups, intervals)."""
        sizes = np.maximum(self.layout.group_sizes, 1).astype(np.float64)
        result: F64 = self.actual / sizes[:, None]
        return result

    def complete(self) -> NDArray[np.bool_]:
        """Every member had a value (actual or not)."""
        result: NDArray[np.bool_] = self.present == self.layout.group_sizes[:, None]
        return result

    def missing(self, group: int, interval: int) -> tuple[str, ...]:
        """Meters of group row ``group`` without a value at ``interval``, in member order, each
        once (a meter listed for import and export is one meter that did not answer)."""
        members = self.layout.members_of(group)
        rows = self.layout.member_channel[members]
        gone = np.isnan(self.values[rows, interval])
        return tuple(dict.fromkeys(self.layout.member_meters[m] for m in members[gone]))


# --------------------------------------------------------------------------------------------
# Validation shared by the entry points
# --------------------------------------------------------------------------------------------


def _f64_2d(array: F64, name: str) -> F64:
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, intervals)")
    result: F64 = np.ascontiguousarray(array, dtype=np.float64)
    return result


def _u8_like(array: U8, like: F64, name: str) -> U8:
    if not isinstance(array, np.ndarray) or array.shape != like.shape:
        raise ValueError(f"{name} must be an array shaped like the values, {like.shape}")
    result: U8 = np.ascontiguousarray(array, dtype=np.uint8)
    return result
