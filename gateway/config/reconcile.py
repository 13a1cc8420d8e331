"""``[reconcile]``: daily line loss, declared like every other table, and its translation to the
settings objects of the line-loss pipeline.

One translation, used by the daemon (:mod:`gateway.analytics.areas`) and by
``gwtool reconcile --config``, so an offline re-run judges a day with exactly the band, guards
and suspect rules the gateway used. The ``edge_rules`` imports are deferred to the call: they
pull in numba (tens of MB), which a gateway without areas must never load.
"""

from __future__ import annotations

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config.fields import Problems, setting
from gateway.config.kinds import Bool, Int, Number

if TYPE_CHECKING:
    from edge_rules.line_loss import SuspectSettings
    from edge_rules.reconcile import BandSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileSection:
    """[reconcile]: how daily line loss is judged, by the daemon and by `gwtool reconcile`.

    Every area is reconciled once per day from the registers frozen at 00:00 (docs/
    reconciliation.md). The band keys are `edge_rules.reconcile.BandSettings`, the suspect
    keys `edge_rules.line_loss.SuspectSettings`; both tools read them from here so an
    offline re-run judges a day exactly as the gateway did.
    """

    utc_offset_min: int = setting(
        Int(minimum=-720, maximum=840, unit="minutes"),
        default=480,
        doc="Local time of the meters (China: +480). Days are local days: meters without a "
        "daily freeze register are read at local 00:00 and days are named by local date.",
    )
    freeze_wait_s: float = setting(
        Number(minimum=0, maximum=86400, unit="seconds"),
        default=3600.0,
        doc="After the first meter of an area reports a day's 00:00 freeze, how long to wait "
        "for the others before reconciling with what arrived (missing meters then count "
        "against the coverage gate). A day is reconciled at once when every meter reported.",
    )
    max_gap_min: float = setting(
        Number(minimum=0, maximum=1440, exclusive_minimum=True, unit="minutes"),
        default=60.0,
        doc="Meters without a freeze register: a 00:00 value is interpolated (quality E) "
        "between reads at most this far before and after midnight; a read in the first "
        "minute after midnight is the actual frozen value.",
    )
    history_days: int = setting(
        Int(minimum=7, maximum=3660, unit="days"),
        default=400,
        doc="Days of frozen values the gateway keeps and reconciles over; the band and the "
        "suspects' baselines look back at most this far.",
    )
    window_days: int = setting(
        Int(minimum=1, maximum=366, unit="days"),
        default=60,
        doc="Learned band: how many qualified, fully actual days it learns from.",
    )
    lookback_days: int = setting(
        Int(minimum=1, maximum=3660, unit="days"),
        default=365,
        doc="Learned band: how far back those days are searched for (at least window_days).",
    )
    min_history_days: int = setting(
        Int(minimum=1, maximum=366, unit="days"),
        default=20,
        doc="Learned band: qualified days needed before it is used; until then only the "
        "guards judge (at most window_days).",
    )
    band_k: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=100),
        default=6.0,
        doc="Learned band half-width in median absolute deviations: median ± k·MAD.",
    )
    min_halfwidth_pct: float = setting(
        Number(minimum=0, maximum=100, unit="percentage points"),
        default=0.5,
        doc="Narrowest band half-width, so an unusually steady area does not flag wobbles.",
    )
    lower_guard_pct: float = setting(
        Number(minimum=-100, maximum=100, unit="percent"),
        default=-1.0,
        doc="Absolute guard: a loss below this is negative whatever the band says.",
    )
    upper_guard_pct: float = setting(
        Number(minimum=-100, maximum=100, unit="percent"),
        default=10.0,
        doc="Absolute guard: a loss above this is high whatever the band says.",
    )
    min_coverage_pct: float = setting(
        Number(minimum=0, maximum=100, unit="percent"),
        default=98.0,
        doc="Coverage gate: a day is uncalculable unless this share of the sub-meter "
        "channels have both freezes actual (and the master's are actual).",
    )
    estimate_uncertainty: float = setting(
        Number(minimum=0, maximum=10),
        default=0.3,
        doc="Relative error assumed of an estimated sub-meter day; the band widens by it on "
        "days with estimates.",
    )
    sustained_days: int = setting(
        Int(minimum=0, maximum=366, unit="days"),
        default=7,
        doc="Sustained-shift rule: the mean of this many days beyond sustained_fraction of "
        "the band makes a day high or negative too (0 turns the rule off).",
    )
    sustained_fraction: float = setting(
        Number(minimum=0, exclusive_minimum=True, maximum=1),
        default=0.5,
        doc="Sustained-shift rule: the fraction of the band half-width the mean must exceed.",
    )
    load_dependent: bool = setting(
        Bool(),
        default=True,
        doc="Centre the band on a robust iron + copper loss model in the master's daily "
        "energy (loss rises on heavy days) instead of a constant median.",
    )
    suspect_baseline_days: int = setting(
        Int(minimum=1, maximum=366, unit="days"),
        default=28,
        doc="Suspects: qualified days a customer's share of the master is learned over.",
    )
    suspect_min_baseline_days: int = setting(
        Int(minimum=1, maximum=366, unit="days"),
        default=14,
        doc="Suspects: qualified days needed before a customer can be named (at most "
        "suspect_baseline_days).",
    )
    suspect_recent_days: int = setting(
        Int(minimum=1, maximum=60, unit="days"),
        default=5,
        doc="Suspects: days a customer's drop is averaged over.",
    )
    suspect_min_drop_pct: float = setting(
        Number(minimum=0, maximum=100, unit="percent"),
        default=20.0,
        doc="Suspects: smallest drop against the customer's expected energy that can name it.",
    )
    suspect_min_deficit_kwh: float = setting(
        Number(minimum=0, maximum=10**6, unit="kWh per day"),
        default=0.5,
        doc="Suspects: smallest daily deficit that can name a customer.",
    )
    max_suspects: int = setting(
        Int(minimum=1, maximum=100),
        default=10,
        doc="Most suspects listed per area and day, most likely first.",
    )

    def table_problems(self) -> Problems:
        if self.lower_guard_pct >= self.upper_guard_pct:
            yield (
                "lower_guard_pct",
                f"must be below upper_guard_pct ({self.upper_guard_pct:g}), "
                f"got {self.lower_guard_pct:g}",
            )
        if self.lookback_days < self.window_days:
            yield (
                "lookback_days",
                f"must be at least window_days ({self.window_days}), got {self.lookback_days}",
            )
        if self.min_history_days > self.window_days:
            yield (
                "min_history_days",
                f"must not exceed window_days ({self.window_days}), got {self.min_history_days}",
            )
        if self.sustained_days > self.window_days:
            yield (
                "sustained_days",
                f"must not exceed window_days ({self.window_days}), got {self.sustained_days}",
            )
        if self.suspect_min_baseline_days > self.suspect_baseline_days:
            yield (
                "suspect_min_baseline_days",
                f"must not exceed suspect_baseline_days ({self.suspect_baseline_days}), "
                f"got {self.suspect_min_baseline_days}",
            )


def band_settings(section: ReconcileSection) -> BandSettings:
    """The learned-band and guard settings of ``[reconcile]`` (percent keys become the
    fractions the kernels take)."""
    from edge_rules.reconcile import BandSettings

    return BandSettings(
        k=section.band_k,
        window_days=section.window_days,
        lookback_days=section.lookback_days,
        min_history=section.min_history_days,
        min_halfwidth_pct=section.min_halfwidth_pct,
        lower_guard_pct=section.lower_guard_pct,
        upper_guard_pct=section.upper_guard_pct,
        min_coverage=section.min_coverage_pct / 100.0,
        estimate_uncertainty=section.estimate_uncertainty,
        sustained_days=section.sustained_days,
        sustained_fraction=section.sustained_fraction,
        load_dependent=section.load_dependent,
    )


def suspect_settings(section: ReconcileSection) -> SuspectSettings:
    """When a customer becomes a theft suspect, from ``[reconcile]``; the keys the table does
    not expose keep the pipeline's defaults (docs/reconciliation.md)."""
    from edge_rules.line_loss import SuspectSettings

    return SuspectSettings(
        baseline_days=section.suspect_baseline_days,
        min_baseline=section.suspect_min_baseline_days,
        recent_days=section.suspect_recent_days,
        lookback_days=section.lookback_days,
        min_drop=section.suspect_min_drop_pct / 100.0,
        min_deficit_kwh=section.suspect_min_deficit_kwh,
        max_suspects=section.max_suspects,
    )
