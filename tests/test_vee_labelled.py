"""Issue 13's "must show" on the labelled generator (bench/vee_labelled.py): spikes flagged as
the bad read, the reads after them left actual, no estimate outside the reads around it, the
clean-read flag rate, recall per fault type and whole-day estimates against a straight line —
through ``gwtool vee``. The default run is small; the documented size is ``-m slow``."""

from __future__ import annotations

import pytest

from bench.vee_labelled import evaluate, misses


def test_small_labelled_set_meets_every_goal() -> None:
    result = evaluate(meters=16, days=28, seed=101)
    assert result["n_spike"] >= 30 and result["n_gap_day"] >= 3
    assert misses(result) == [], result


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_documented_labelled_set_meets_every_goal(seed: int) -> None:
    result = evaluate(meters=40, days=35, seed=seed)
    assert misses(result) == [], result
