"""Daily line loss of transformer areas, from midnight freezes to statuses and suspects.

This is the composition the daemon (once a day, after the 00:00 freezes are in) and
``gwtool reconcile`` (offline, from a CSV) share; it calls the kernels of
:mod:`edge_rules.groups`, :mod:`edge_rules.reconcile` and :mod:`edge_rules.theft` and owns no
arithmetic of its own. Inputs are plain arrays and configuration-shaped objects
(``gateway.config.AreaConfig`` / ``GroupConfig`` satisfy the protocols); no I/O, no clocks.

Steps, per area and day D (energy of D = freeze at 00:00 of D+1 − freeze at 00:00 of D):

1. every member channel's day energy from its two freezes (actual only when both are);
2. a member with lost freezes gets the energy its bracketing reads prove, split over the gap
   in proportion to what it would have used (:func:`edge_rules.reconcile.expected_day_energy`:
   like days scaled by the master) by :func:`edge_rules.groups.split_register_gaps`; a day
   still missing takes that estimate — both quality E, so a 98 %-covered area is summed whole
   while the coverage still counts them as not actual;
3. the sub-meters' summation group, signed and scaled by CT × PT, and its coverage;
4. loss % against the master's energy, the coverage gate, the learned band and guards;
5. each import customer's drop against its share of the master, scored by how much of the
   area's excess loss it explains; plus any per-meter indicator evidence the caller ran over
   the day's samples (:mod:`edge_rules.theft`). Suspects are listed most likely first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_rules.codes import QUALITY_A, QUALITY_E
from edge_rules.groups import (
    GroupLayout,
    gather_channels,
    group_totals,
    interval_energy,
    split_register_gaps,
)
from edge_rules.reconcile import (
    STATUS_HIGH,
    STATUS_NAMES,
    STATUS_QUALIFIED,
    STATUS_UNCALCULABLE,
    BandSettings,
    area_loss,
    classify_losses,
    expected_day_energy,
)
from edge_rules.theft import deficit_scores

__all__ = [
    "AreaDayResult",
    "LineLoss",
    "SuspectEvidence",
    "SuspectSettings",
    "reconcile_areas",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]

#: Evidence a caller attaches to (meter, day index): text and a ranking weight.
IndicatorEvidence = Mapping[tuple[str, int], Sequence[tuple[str, float]]]


class AreaLike(Protocol):
    """What an area must offer (``gateway.config.AreaConfig`` does)."""

    @property
    def id(self) -> str: ...
    @property
    def master(self) -> str: ...
    @property
    def subs(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SuspectSettings:
    """When a customer's drop makes it a suspect.

    The reference share is learned over ``baseline_days`` qualified days (at least
    ``min_baseline``, looking back at most ``lookback_days``); the drop is averaged over the
    last ``recent_days``. A customer is named while its area is ``high`` when its deficit is at
    least ``min_deficit_kwh`` a day and ``min_drop`` of its expected energy, and explains at
    least ``min_explained`` of the area's excess, and stands ``min_significance`` times its own
    day-to-day scatter out; candidates rank by the share explained, discounted below
    ``full_significance``, and further ones are added only while those named explain less
    than ``explained_enough`` of the excess. The match is made day by day from ``onset_days``
    before the area's rise began (at most ``max_match_days``), so a drop that began before the
    loss rose — an honest one, which the master saw too — does not match. ``fill_weeks`` / ``fill_days`` /
    ``fill_search_days`` govern the estimate of a member's unread day
    (:func:`edge_rules.reconcile.expected_day_energy`); ``max_suspects`` caps the list.
    """

    baseline_days: int = 28
    recent_days: int = 5
    min_baseline: int = 14
    lookback_days: int = 365
    gap_days: int = 0
    min_drop: float = 0.2
    min_deficit_kwh: float = 0.5
    min_explained: float = 0.1
    explained_enough: float = 0.75
    min_significance: float = 3.0
    full_significance: float = 3.0
    onset_days: int = 7
    max_match_days: int = 60
    fill_weeks: int = 4
    fill_days: int = 7
    fill_search_days: int = 28
    max_suspects: int = 10


@dataclass(frozen=True, slots=True)
class SuspectEvidence:
    """A suspected meter: ``score`` (higher first: the share of the area's excess loss the
    drop explains, 0..1, plus the caller's indicator weights) and human-readable
    ``evidence``. Maps one-to-one onto ``protocols.payload.Suspect``."""

    meter: str
    score: float
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AreaDayResult:
    """One area on one day, as ``gwtool reconcile`` prints it and ``P/G/groups`` carries it
    (``protocols.payload.AreaLoss``: quantise ``input_kwh``/``output_kwh`` to the register
    resolution as Decimals on publish)."""

    area: str
    day: str
    status: str
    coverage: float
    loss_pct: float | None
    input_kwh: float | None
    output_kwh: float | None
    band_center_pct: float | None
    band_halfwidth_pct: float | None
    suspects: tuple[SuspectEvidence, ...] = ()


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True, slots=True, eq=False)
class LineLoss:
    """Every intermediate array of :func:`reconcile_areas`, (areas, days) unless noted, so a
    caller can publish, store or examine any step. ``customer_*`` rows are the import
    sub-meters of each area ((customers, days) for the arrays)."""

    area_ids: tuple[str, ...]
    days: tuple[str, ...]
    master: F64
    subs: F64
    coverage: F64
    loss: F64
    calculable: U8
    status: U8
    center: F64
    halfwidth: F64
    excess: F64
    customer_meters: tuple[str, ...]
    customer_area: I64
    expected: F64
    recent: F64
    deficit: F64
    explains: F64
    recent_excess: F64
    significance: F64
    settings: SuspectSettings
    indicator_evidence: IndicatorEvidence = field(default_factory=dict)
    area_meters: tuple[tuple[str, ...], ...] = ()

    def _candidates(self) -> NDArray[np.bool_]:
        s = self.settings
        with np.errstate(invalid="ignore", divide="ignore"):
            result: NDArray[np.bool_] = (
                (self.status[self.customer_area] == STATUS_HIGH)
                & (self.deficit >= s.min_deficit_kwh)
                & (self.expected > 0)
                & (self.deficit / self.expected >= s.min_drop)
                & (self.explains >= s.min_explained)
                & (self.significance >= s.min_significance)
            )
        return result

    def drop_score(self, row: int, day: int) -> float:
        """Ranking score of a drop: how well it matches the area's excess (0..1), discounted
        while the drop is not yet clearly beyond the customer's own day-to-day scatter."""
        full = self.settings.full_significance
        return float(self.explains[row, day] * min(1.0, self.significance[row, day] / full))

    def _named(self, rows: NDArray[np.intp], day: int) -> list[int]:
        """Greedy explanation: candidates best-matching first, each named while the deficits
        named so far leave part of the area's excess unexplained — so one thief who accounts
        for the rise is named alone, two who share it are both named, and an honest customer
        who happens to use less that week is not added to a rise already explained."""
        order = sorted(rows, key=lambda r: (-self.drop_score(r, day), self.customer_meters[r]))
        named: list[int] = []
        covered = 0.0
        for r in order:
            if named and covered >= self.settings.explained_enough * self.recent_excess[r, day]:
                break
            named.append(int(r))
            covered += float(self.deficit[r, day])
        return named

    def drop_suspects(self) -> NDArray[np.int32]:
        """Rank of each customer row among its area's drop suspects per day, (customers,
        days): 0 most likely, −1 not named. The same rule as :meth:`suspects`, for all days."""
        candidates = self._candidates()
        rank = np.full(candidates.shape, -1, dtype=np.int32)
        for a, d in zip(*np.nonzero(self.status == STATUS_HIGH), strict=True):
            rows = np.flatnonzero((self.customer_area == a) & candidates[:, d])
            for position, r in enumerate(self._named(rows, int(d))):
                rank[r, d] = position
        return rank

    def suspects(self, area: int, day: int) -> tuple[SuspectEvidence, ...]:
        """Suspects of area row ``area`` on day ``day``, most likely first."""
        s = self.settings
        found: dict[str, tuple[float, list[str]]] = {}
        if self.status[area, day] == STATUS_HIGH:
            candidates = self._candidates()[:, day]
            rows = np.flatnonzero((self.customer_area == area) & candidates)
            for c in self._named(rows, day):
                deficit = self.deficit[c, day]
                expected = self.expected[c, day]
                explains = self.explains[c, day]
                text = (
                    f"sustained drop: {self.recent[c, day]:.2f} kWh/day against "
                    f"{expected:.2f} expected from its share of the master "
                    f"(-{deficit / expected:.0%}, {self.significance[c, day]:.1f}× its usual "
                    f"scatter) over the last {s.recent_days} days; "
                    f"its daily deficit matches the area's excess loss "
                    f"({self.recent_excess[c, day]:.2f} kWh/day lately) to {explains:.0%} "
                    f"since the rise began"
                )
                meter = self.customer_meters[c]
                score, texts = found.get(meter, (0.0, []))
                found[meter] = (max(score, self.drop_score(c, day)), [*texts, text])
        for meter in self.area_meters[area] if self.area_meters else ():
            for text, weight in self.indicator_evidence.get((meter, day), ()):
                score, texts = found.get(meter, (0.0, []))
                found[meter] = (score + weight, [*texts, text])
        ranked = sorted(found.items(), key=lambda item: (-item[1][0], item[0]))
        return tuple(
            SuspectEvidence(meter=meter, score=round(score, 4), evidence=tuple(texts))
            for meter, (score, texts) in ranked[: s.max_suspects]
        )

    def record(self, area: int, day: int) -> AreaDayResult:
        """The result of area row ``area`` on day ``day``."""
        status = int(self.status[area, day])
        loss = _finite(self.loss[area, day])
        return AreaDayResult(
            area=self.area_ids[area],
            day=self.days[day],
            status=STATUS_NAMES[status],
            coverage=float(np.clip(self.coverage[area, day], 0.0, 1.0))
            if np.isfinite(self.coverage[area, day])
            else 0.0,
            loss_pct=None if loss is None else round(loss, 4),
            input_kwh=_finite(self.master[area, day]),
            output_kwh=_finite(self.subs[area, day]),
            band_center_pct=_finite(self.center[area, day]),
            band_halfwidth_pct=_finite(self.halfwidth[area, day]),
            suspects=self.suspects(area, day),
        )

    def records(self) -> list[AreaDayResult]:
        """Every (area, day), areas in configuration order, days in order."""
        return [self.record(a, d) for a in range(len(self.area_ids)) for d in range(len(self.days))]


_IMPORT: Final = "import"


def _match_start(status: U8, onset_days: int, max_days: int) -> I64:
    """Where each high day's deficit matching starts: ``onset_days`` before the day the area's
    current high episode began (uncalculable days do not end an episode), at most
    ``max_days`` back; −1 on other days."""
    areas, days = status.shape
    start = np.full((areas, days), -1, dtype=np.int64)
    for a in range(areas):
        began = -1
        for d in range(days):
            if status[a, d] == STATUS_HIGH:
                began = d if began < 0 else began
                start[a, d] = max(began - onset_days, d - max_days + 1, 0)
            elif status[a, d] != STATUS_UNCALCULABLE:
                began = -1
    return start


def reconcile_areas(
    areas: Sequence[AreaLike],
    layout: GroupLayout,
    ratios: Mapping[str, float],
    meter_ids: Sequence[str],
    days: Sequence[str],
    import_freezes: F64,
    import_quality: U8,
    export_freezes: F64 | None = None,
    export_quality: U8 | None = None,
    *,
    band: BandSettings | None = None,
    suspects: SuspectSettings | None = None,
    given_status: U8 | None = None,
    indicator_evidence: IndicatorEvidence | None = None,
) -> LineLoss:
    """Reconcile ``areas`` over ``days`` from the registers frozen at each day's 00:00.

    ``import_freezes`` / ``export_freezes`` are (meters, days + 1) in ``meter_ids`` order —
    column j is the register at 00:00 of day j, the last column 00:00 after the last day — with
    quality codes (0 = A). ``ratios`` maps meter id to CT × PT. ``given_status`` carries
    statuses already decided (history from the store, :data:`edge_rules.reconcile.UNCLASSIFIED`
    for days to judge); ``indicator_evidence`` maps (meter, day index) to (text, weight) pairs
    from the sample-window indicators.
    """
    band = band or BandSettings()
    suspects = suspects or SuspectSettings()
    n_days = len(days)
    if import_freezes.shape != (len(meter_ids), n_days + 1):
        raise ValueError(
            f"import_freezes must be (meters, days + 1) = ({len(meter_ids)}, {n_days + 1}), "
            f"got {import_freezes.shape}"
        )
    row_of = {meter: i for i, meter in enumerate(meter_ids)}

    # 1: the masters' day energies; they also weight how a sub-meter's gap is split or filled.
    n_areas = len(areas)
    master = np.full((n_areas, n_days), np.nan)
    master_actual = np.zeros((n_areas, n_days), dtype=np.uint8)
    for a, area in enumerate(areas):
        i = row_of.get(area.master)
        if i is not None:
            m_energy, m_quality = interval_energy(
                import_freezes[i : i + 1], import_quality[i : i + 1]
            )
            master[a] = m_energy[0] * float(ratios[area.master])
            master_actual[a] = m_quality[0] == QUALITY_A
    weights = np.full((len(layout.channels), n_days), np.nan)
    for a in reversed(range(n_areas)):  # a channel in two areas takes the first one's master
        members = layout.members_of(layout.group_index(areas[a].subs))
        weights[layout.member_channel[members]] = master[a]

    # 2-3: member day energies, gaps split or filled, summed per group.
    freezes, freeze_quality = gather_channels(
        layout, meter_ids, import_freezes, export_freezes, import_quality, export_quality
    )
    plain, plain_quality = interval_energy(freezes, freeze_quality)
    estimate = expected_day_energy(
        plain,
        plain_quality,
        weights,
        suspects.fill_weeks,
        suspects.fill_days,
        suspects.fill_search_days,
    )
    energy, energy_quality = split_register_gaps(freezes, freeze_quality, estimate)
    still_missing = np.isnan(energy) & ~np.isnan(estimate)
    energy = np.where(still_missing, estimate, energy)
    energy_quality = np.where(still_missing, np.uint8(QUALITY_E), energy_quality).astype(np.uint8)
    totals = group_totals(energy, energy_quality, layout)
    coverage_all = totals.coverage()
    complete = totals.complete()

    subs = np.full((n_areas, n_days), np.nan)
    coverage = np.zeros((n_areas, n_days))
    customer_rows: list[int] = []
    customer_area: list[int] = []
    customer_scale: list[float] = []
    area_meters: list[tuple[str, ...]] = []
    for a, area in enumerate(areas):
        g = layout.group_index(area.subs)
        subs[a] = np.where(complete[g], totals.total[g], np.nan)
        coverage[a] = coverage_all[g]
        members = layout.members_of(g)
        area_meters.append((area.master, *(layout.member_meters[m] for m in members)))
        for m in members:
            channel = int(layout.member_channel[m])
            if layout.channels[channel][1] == _IMPORT and layout.member_scale[m] > 0:
                customer_rows.append(channel)
                customer_area.append(a)
                customer_scale.append(float(layout.member_scale[m]))

    # 4: loss, gate, band.
    loss, calculable = area_loss(master, subs, master_actual, coverage, band.min_coverage)
    # Estimated members widen the band by their assumed error; only fully actual days teach it.
    with np.errstate(invalid="ignore", divide="ignore"):
        estimated = np.where(
            energy_quality != QUALITY_A, np.abs(energy * layout.member_scale_of_channel()), 0.0
        )
    allowance = np.zeros((n_areas, n_days))
    for a, area in enumerate(areas):
        channels = layout.member_channel[layout.members_of(layout.group_index(area.subs))]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.nansum(estimated[channels], axis=0) / master[a] * 100.0
        allowance[a] = np.where(np.isfinite(share), share * band.estimate_uncertainty, 0.0)
    learnable = (coverage >= 1.0).astype(np.uint8)
    status, center, halfwidth = classify_losses(
        loss, calculable, band, given_status, learnable, allowance, master
    )
    with np.errstate(invalid="ignore"):
        excess = np.where(calculable != 0, (loss - center) / 100.0 * master, np.nan)
    learn = (status == STATUS_QUALIFIED).astype(np.uint8)

    # 5: who explains the excess.
    rows = np.asarray(customer_rows, dtype=np.int64)
    scale = np.asarray(customer_scale, dtype=np.float64)
    c_energy = energy[rows] * scale[:, None] if rows.size else np.empty((0, n_days))
    c_actual = (
        (energy_quality[rows] == QUALITY_A).astype(np.uint8)
        if rows.size
        else np.empty((0, n_days), dtype=np.uint8)
    )
    c_area = np.asarray(customer_area, dtype=np.int64)
    expected, recent, deficit, explains, recent_excess, significance = deficit_scores(
        c_energy,
        c_actual,
        c_area,
        master,
        excess,
        learn,
        _match_start(status, suspects.onset_days, suspects.max_match_days),
        baseline_days=suspects.baseline_days,
        recent_days=suspects.recent_days,
        min_baseline=suspects.min_baseline,
        lookback_days=suspects.lookback_days,
        gap_days=suspects.gap_days,
    )
    return LineLoss(
        area_ids=tuple(area.id for area in areas),
        days=tuple(days),
        master=master,
        subs=subs,
        coverage=coverage,
        loss=loss,
        calculable=calculable,
        status=status,
        center=center,
        halfwidth=halfwidth,
        excess=excess,
        customer_meters=tuple(layout.channels[r][0] for r in customer_rows),
        customer_area=c_area,
        expected=expected,
        recent=recent,
        deficit=deficit,
        explains=explains,
        recent_excess=recent_excess,
        significance=significance,
        settings=suspects,
        indicator_evidence=indicator_evidence or {},
        area_meters=tuple(area_meters),
    )
