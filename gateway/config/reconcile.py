"""From the ``[reconcile]`` config table to the settings objects of the line-loss pipeline.

One translation, used by the daemon (:mod:`gateway.analytics.areas`) and by
``gwtool reconcile --config``, so an offline re-run judges a day with exactly the band, guards
and suspect rules the gateway used. The ``edge_rules`` imports are deferred to the call: they
pull in numba (tens of MB), which a gateway without areas must never load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config import ReconcileSection

if TYPE_CHECKING:
    from edge_rules.line_loss import SuspectSettings
    from edge_rules.reconcile import BandSettings


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
