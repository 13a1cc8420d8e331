"""The VEE stage's side of backfill: estimates are owed on the board, and the meter's own records
supersede them as actuals (``A``, ``rev`` + 1, ``hist``) and become the intervals' reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gateway.acquisition.poll_result import IntervalRecords
from gateway.config.vee import vee_config_from_table
from gateway.pipeline.vee_stage import VeeStage
from gateway.store import Store
from tests.test_vee_stage import CONFIG, T0, Fleet, run, seeded_stage


def _interval(stage: object, t: int) -> int:
    grid = stage.grid  # type: ignore[attr-defined]
    return int(grid.anchor_interval + (t - grid.anchor_ms) // grid.interval_ms - 1)


def test_records_read_back_supersede_the_estimates_and_feed_the_window() -> None:
    fleet = Fleet(["m-1", "m-2", "m-3"])
    stage = seeded_stage(list(fleet.base))
    assert stage.backfill is not None
    run(stage, fleet, range(100, 110))
    during = run(stage, fleet, range(110, 120), silent=["m-2", "m-3"])
    estimates = {r.t: r for m, r in during if m == "m-2" and r.quality == "E"}
    assert len(estimates) >= 3 and any(m == "m-3" for m, _ in during)
    owed = stage.backfill.owed("m-2")
    assert owed == sorted(_interval(stage, t) for t in estimates)
    # m-3 is owed too (noted for every meter); only a bus whose profile keeps load records asks
    assert stage.backfill.owed("m-3")

    # the meter answers again; its bus reads the records back (the true registers)
    records = tuple((_interval(stage, t), fleet.register("m-2", t)) for t in sorted(estimates))
    out = stage.backfill_records([IntervalRecords("m-2", "rs485-1", T0 + 120_300, records)],
                                 T0 + 120_400)
    assert [m for m, _ in out] == ["m-2"]
    published = {r.t: r for r in out[0][1]}
    assert set(published) == set(estimates)
    for t, estimate in estimates.items():
        actual = published[t]
        assert actual.quality == "A" and actual.hist and actual.method is None
        assert actual.rev == estimate.rev + 1 and actual.q == estimate.q
        assert actual.val == fleet.register("m-2", t)
    row = stage.row_of["m-2"]
    cols = [i - stage.first_day * 96 for i in owed]  # type: ignore[operator]
    assert not np.isnan(stage.reads[row, cols]).any()  # the intervals now have their reads

    # later grading agrees with the actuals: none of those keys goes out again as an estimate
    after = run(stage, fleet, range(120, 130))
    again = [r for m, r in after if m == "m-2" and r.t in estimates]
    assert all(r.quality == "A" for r in again), again
    # a second copy of the same records changes nothing (the intervals have reads now)
    assert stage.backfill_records([IntervalRecords("m-2", "rs485-1", T0 + 131_000, records)],
                                  T0 + 131_000) == []


def test_backfill_off_owes_nothing() -> None:
    config = vee_config_from_table({**CONFIG, "backfill": {"enabled": False}})
    assert VeeStage(config, ["m-1"], T0).backfill is None


def test_estimates_still_owed_after_a_restart(tmp_path: Path) -> None:
    fleet = Fleet(["m-1", "m-2"])
    with Store.open(tmp_path / "gw.sqlite") as store:
        stage = seeded_stage(list(fleet.base), store)
        run(stage, fleet, range(100, 110))
        run(stage, fleet, range(110, 118), silent=["m-2"])
        assert stage.backfill is not None
        owed = stage.backfill.owed("m-2")
        assert len(owed) >= 3
        stage.save(T0 + 118_500)
        again = VeeStage(vee_config_from_table(CONFIG), list(fleet.base), T0 + 119_000, store)
        assert again.load() and again.backfill is not None
        assert again.backfill.owed("m-2") == owed and again.backfill.owed("m-1") == []
