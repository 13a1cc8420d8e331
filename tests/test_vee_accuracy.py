"""VEE accuracy on generated data with labelled faults (bench/vee_accuracy.py).

The default run uses a small fleet to prove the detectors and the estimator work end to end
through the production engine; the issue's full-size run (1,000 meters × 1 year) is marked slow.
"""

from __future__ import annotations

import math

import pytest

from bench.vee_accuracy import HARD, run


def check(meters: int, days: int, min_recall: float) -> None:
    report = run(meters, days, seed=3, fault_rate=0.03)
    for name in HARD:
        tally = report.recall[name]
        assert tally.total > 0, f"no {name} faults generated"
        assert tally.rate >= min_recall, (name, tally.found, tally.total)
    assert report.recall["rollover"].rate == 1.0  # never mistaken for a decrease
    assert report.recall["duplicate"].rate >= min_recall
    # a gap on the very first day has no register to start from: the only unestimated ones
    assert report.recall["gap_day"].rate >= 0.99 and report.recall["gap_short"].rate >= 0.99
    assert report.clean.total > 0 and report.clean.rate <= 0.001
    for kind in ("gap_short", "gap_day"):
        ours = report.estimation[(kind, "vee")].mape()
        for baseline in ("repeat last value", "last month's average"):
            theirs = report.estimation[(kind, baseline)].mape()
            assert not math.isnan(ours) and theirs > ours, (kind, baseline, ours, theirs)


def test_small_fleet_detects_hard_faults_and_estimates_better_than_the_baselines() -> None:
    check(meters=60, days=70, min_recall=0.99)


@pytest.mark.slow
def test_issue_scale_accuracy() -> None:
    check(meters=1000, days=365, min_recall=0.99)
