"""The daemon's VEE stage (gateway/pipeline/vee_stage.py) driven with poll results on a compressed grid:
the real engine, the real store; time is passed in, so every boundary is exact."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from edge_rules.codes import Method, Reason
from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.config import ConfigError, load_config
from gateway.config.vee import vee_config_from_table
from gateway.pipeline.vee_stage import BASIC, GRID_QUANTITY, VeeStage
from gateway.store import Store
from protocols.payload import ReadRecord

REPO = Path(__file__).resolve().parent.parent
INTERVAL_MS = 2000
T0 = 1_800_000_000_000  # a multiple of a 96 x 2 s grid day: the stage's anchor
CONFIG = {"interval_seconds": 2, "kernels": "numpy", "estimation": {"snap_seconds": 450}}
LIKE_DAY_KWH = 0.02  # per interval, in the seeded history


class Fleet:
    """Meters whose registers rise 0.01 kWh a second whether or not anyone asks (a silent meter
    still measures), polled once a second: two polls per 2-second interval, and the first
    within 1 s of a boundary is the interval's read."""

    def __init__(self, meters: Iterable[str]) -> None:
        self.base = {m: Decimal("100.00") + 100 * i for i, m in enumerate(meters)}

    def register(self, meter: str, t_ms: int) -> Decimal:
        return self.base[meter] + Decimal((t_ms - T0) // 1000) / 100

    def poll(self, meter: str, t_ms: int, volts: float = 229.5,
             tariffs: tuple[Decimal, ...] | None = None) -> tuple[PollResult, list[ReadRecord]]:
        """What the shipped profile reads: the total and its tariffs (t1 holds it all unless
        given), a voltage, the power."""
        value = self.register(meter, t_ms)
        shares = tariffs if tariffs is not None else (value, Decimal("0.00"), Decimal("0.00"))
        records = [ReadRecord(GRID_QUANTITY, value, "kWh", t_ms)]
        records += [ReadRecord(f"energy.active.import.t{n}", share, "kWh", t_ms)
                    for n, share in enumerate(shares, start=1)]
        records += [ReadRecord("voltage.a", volts, "V", t_ms),
                    ReadRecord("power.active.total", 0.5, "kW", t_ms)]
        result = PollResult(meter, "rs485-1", t_ms - 30, t_ms, True,
                            tuple(PolledValue(r.q, r.val, r.unit, t_ms) for r in records))
        return result, records


def seeded_stage(meters: list[str], store: Store | None = None, now_ms: int = T0,
                 config: dict[str, object] | None = None) -> VeeStage:
    """A stage whose engine has four weeks of like days (what a gateway that has been running
    for a month has), so an open gap can be estimated from them."""
    stage = VeeStage(vee_config_from_table(config or CONFIG), meters, now_ms, store)
    rows = np.arange(len(meters), dtype=np.int64)
    today = stage.grid.anchor_interval // 96
    for day in range(today - 30, today - 1):
        intervals = np.full((len(meters), 96), LIKE_DAY_KWH)
        daily = np.full((len(meters), 5), np.nan)
        daily[:, 0] = intervals.sum(axis=1)
        stage.engine.hist.put_day(rows, day, daily, np.zeros(len(meters), bool), intervals,
                                  np.zeros((len(meters), 96), bool))
    return stage


def run(stage: VeeStage, fleet: Fleet, seconds: range, silent: Iterable[str] = ()
        ) -> list[tuple[str, ReadRecord]]:
    out: list[tuple[str, ReadRecord]] = []
    mute = set(silent)
    for second in seconds:
        t = T0 + second * 1000 + 100
        polled = [fleet.poll(m, t) for m in fleet.base if m not in mute]
        for meter, records in stage.apply(polled, t + 50):
            out += [(meter, r) for r in records]
    return out


def test_healthy_meters_need_no_interval_records_and_vee_grades_every_read() -> None:
    fleet = Fleet(["m-1", "m-2", "m-3"])
    stage = seeded_stage(list(fleet.base))
    extra = run(stage, fleet, range(100, 140))
    assert extra == [], extra  # every read went out with the poll and VEE agrees with it
    # reads at +0.1 s and +1.1 s of each 2 s interval: the first within 1 s of a boundary is
    # its read (boundaries 100 s … 140 s: 21 of them)
    assert stage.stats.grid_reads == 3 * 21
    graded = stage.pub_bits[:, :stage._due_done]
    assert stage._due_done > 0 and not np.any(graded == BASIC)  # the engine graded each one
    assert stage.stats.evaluations >= 19  # one per boundary, all meters at once


def test_silent_meter_gets_estimates_then_the_reads_around_the_gap_supersede_them() -> None:
    fleet = Fleet(["m-1", "m-2"])
    stage = seeded_stage(list(fleet.base))
    before = run(stage, fleet, range(100, 110))
    last_read = fleet.register("m-2", T0 + 109_100)
    during = run(stage, fleet, range(110, 125), silent=["m-2"])
    estimates = [r for m, r in during if m == "m-2"]
    assert before == [] and all(m == "m-2" for m, _ in during)
    # one E per interval that came due without a read, at its boundary, with a like-day method
    assert len(estimates) >= 6
    assert {r.quality for r in estimates} == {"E"} and {r.rev for r in estimates} == {0}
    assert {r.method for r in estimates} <= {Method.AVERAGE_LIKE_DAY, Method.LIKE_DAY}
    assert all(Reason.COMMUNICATIONS_FAULT in r.reasons for r in estimates)
    assert all((r.t - T0) % INTERVAL_MS == 0 for r in estimates)
    assert [r.t for r in estimates] == sorted({r.t for r in estimates})
    assert all(isinstance(r.val, Decimal) and r.val > last_read for r in estimates)
    after = run(stage, fleet, range(125, 135))
    returned = fleet.register("m-2", T0 + 125_100)  # its first read after the silence
    revised = {r.t: r for m, r in after if m == "m-2" and r.rev}
    # every estimate is re-published under the same key, now bracketed by real reads
    assert set(revised) >= {r.t for r in estimates}
    for estimate in estimates:
        new = revised[estimate.t]
        assert new.rev == 1 and new.quality == "E" and new.q == estimate.q
        assert new.method in (Method.LINEAR, Method.DATA_SCALING)
        assert isinstance(new.val, Decimal) and last_read <= new.val <= returned
        # the register rose steadily: the bracketed estimate is the truth within an LSB or two
        assert abs(new.val - fleet.register("m-2", estimate.t)) <= Decimal("0.02"), new
    assert stage.stats.revisions == len(revised)


def test_an_actual_read_that_arrives_after_its_estimate_supersedes_it_under_the_same_key() -> None:
    fleet = Fleet(["m-1", "m-2"])
    stage = seeded_stage(list(fleet.base))
    run(stage, fleet, range(100, 110))
    # m-2's read for the boundary at T0+112 s is held up: its estimate goes out first
    t_late = T0 + 112_000 + 400
    out = run(stage, fleet, range(110, 114), silent=["m-2"])
    estimate = next(r for m, r in out if m == "m-2" and r.t == T0 + 112_000)
    assert estimate.quality == "E" and estimate.rev == 0
    late_poll = fleet.poll("m-2", t_late)
    extra = stage.apply([late_poll], T0 + 114_200)
    extra += stage.apply([], T0 + 115_200)
    run_after = run(stage, fleet, range(115, 118))
    records = [r for m, rs in extra for r in rs if m == "m-2"] + [
        r for m, r in run_after if m == "m-2"]
    superseding = [r for r in records if r.t == estimate.t]
    assert len(superseding) == 1, records
    actual = superseding[0]
    assert actual.quality == "A" and actual.rev == 1 and actual.method is None
    assert actual.val == late_poll[0].values[0].value


def test_history_state_and_published_keys_survive_a_restart(tmp_path: Path) -> None:
    fleet = Fleet(["m-1", "m-2"])
    with Store.open(tmp_path / "gateway.sqlite") as store:
        stage = seeded_stage(list(fleet.base), store)
        run(stage, fleet, range(100, 110))
        estimates = [r for m, r in run(stage, fleet, range(110, 118), silent=["m-2"])]
        stage.save()
        history = stage.engine.hist.to_arrays()
        # a new process, with meters in another order and one more meter
        again = VeeStage(vee_config_from_table(CONFIG), ["m-3", "m-2", "m-1"], T0 + 500_000, store)
        assert again.load()
        assert again.grid == stage.grid and again.first_day == stage.first_day
        restored = again.engine.hist.reindexed(["m-1", "m-2"]).to_arrays()
        for name, array in history.items():
            np.testing.assert_array_equal(restored[name], array, err_msg=name)
        fleet.base["m-3"] = Decimal("300.00")
        after = run(again, fleet, range(118, 130), silent=["m-3"])
        revised = {r.t: r for m, r in after if m == "m-2" and r.rev}
        assert {r.t for r in estimates} <= set(revised)
        last_rev: dict[int, int] = {}
        for r in estimates:
            last_rev[r.t] = max(last_rev.get(r.t, 0), r.rev)
        assert {t: revised[t].rev for t in last_rev} == {t: n + 1 for t, n in last_rev.items()}
        assert not [r for m, r in after if m == "m-1"]  # nothing re-published for m-1


def test_gateway_config_vee_problems_are_config_errors_with_key_paths(tmp_path: Path) -> None:
    base = (REPO / "configs" / "minimal.toml").read_text()
    path = tmp_path / "gateway.toml"
    path.write_text(base + textwrap.dedent("""
        [vee]
        kernels = "fast"
        interval_seconds = 7
        bogus = 1

        [vee.classes.commercial]
        contract_kw = "lots"
        """))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    paths = {issue.path for issue in caught.value.errors}
    assert paths == {"vee.kernels", "vee.interval_seconds", "vee.bogus",
                     "vee.classes.commercial.contract_kw"}, caught.value.errors
    assert all(issue.file == path for issue in caught.value.errors)


@pytest.mark.parametrize(("kernels", "meters", "numba"), [
    ("auto", 200, False), ("numpy", 2000, False), ("auto", 600, True), ("numba", 2, True)])
def test_numba_is_imported_only_when_the_compiled_kernels_are_chosen(
        kernels: str, meters: int, numba: bool) -> None:
    """The compiled kernels come from numba's JIT, or without numba from the module built ahead
    of time (edge_rules/aot.py) when there is a fresh one (``make aot``)."""
    script = textwrap.dedent(f"""
        import sys
        from gateway.config.vee import vee_config_from_table
        from gateway.pipeline.vee_stage import VeeStage
        stage = VeeStage(vee_config_from_table({{"kernels": "{kernels}"}}),
                         [f"m-{{i}}" for i in range({meters})], 1_800_000_000_000)
        stage.apply([], 1_800_000_000_000 + 3_600_000)
        from edge_rules.aot import aot_status
        print(stage.implementation, "numba" in sys.modules, aot_status() == "loaded")
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    aot = out[2] == "True"
    assert out[:2] == ["nb" if numba else "np", str(numba and not aot)]


def test_voltages_and_tariff_sums_are_judged_at_the_boundary_and_findings_re_published() -> None:
    fleet = Fleet(["m-1", "m-2"])
    stage = VeeStage(vee_config_from_table({**CONFIG, "rules": [
        {"name": "voltage", "class": "*", "severity": "fail", "high_pct": 10}]}),
        list(fleet.base), T0)
    run(stage, fleet, range(100, 104))
    t = T0 + 104_100
    total = fleet.register("m-2", t)
    high = fleet.poll("m-1", t, volts=242.5)  # above 220 V + 10 %: a fail rule now
    torn = fleet.poll("m-2", t, tariffs=(total - Decimal("0.50"), Decimal("0.10")))
    assert stage.apply([high, torn], t + 50) == []  # judged at the boundary, not per poll
    extra = {m: rs for m, rs in stage.apply([], T0 + 106_050)}
    voltage = [r for r in extra["m-1"] if r.q == "voltage.a"]
    assert voltage == [ReadRecord("voltage.a", None, "V", t, "N", None, (Reason.CT_VT_FAULT,),
                                  raw=242.5, rev=1)]
    tariffs = [r for r in extra["m-2"] if r.q.startswith("energy.active.import.t")]
    assert [(r.q, r.val, r.quality, r.reasons, r.rev) for r in tariffs] == [
        ("energy.active.import.t1", total - Decimal("0.50"), "A", (Reason.FAILED_TO_VALIDATE,), 1),
        ("energy.active.import.t2", Decimal("0.10"), "A", (Reason.FAILED_TO_VALIDATE,), 1)]
    assert {r.t for r in voltage + tariffs} == {t}
    # in-band voltages and consistent tariffs are never re-published (the interval whose read
    # the test skipped above is estimated, as it should be)
    later = run(stage, fleet, range(107, 115))
    assert later and all(r.q == GRID_QUANTITY and r.quality == "E" for _, r in later)


def test_held_sparse_reads_are_graded_before_the_boundary_once_the_bound_is_reached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The off-grid reads the sparse rules judge are bounded (vee_stage.SPARSE_HOLD_MAX): once
    that many are held they are graded at once, with the same verdict the boundary gives."""
    from gateway.pipeline import vee_stage

    monkeypatch.setattr(vee_stage, "SPARSE_HOLD_MAX", 4)
    fleet = Fleet(["m-1", "m-2"])
    stage = VeeStage(vee_config_from_table({**CONFIG, "rules": [
        {"name": "voltage", "class": "*", "severity": "fail", "high_pct": 10}]}),
        list(fleet.base), T0)
    run(stage, fleet, range(100, 104))
    t = T0 + 104_100
    high = fleet.poll("m-1", t, volts=242.5)
    assert stage.apply([high], t + 50) == []  # 3 voltages held: below the bound
    fine = fleet.poll("m-2", t + 10, volts=229.5)
    extra = {m: rs for m, rs in stage.apply([fine], t + 60)}  # 6 held: graded now
    assert extra == {"m-1": [ReadRecord("voltage.a", None, "V", t, "N", None,
                                        (Reason.CT_VT_FAULT,), raw=242.5, rev=1)]}
    assert stage._volts == []
    at_boundary = stage.apply([], T0 + 106_050)
    assert all(r.q != "voltage.a" for _, rs in at_boundary for r in rs)  # not graded twice


def test_prolonged_estimation_raises_a_field_read_alarm_that_clears_when_reads_return(
        tmp_path: Path) -> None:
    """Reason 9 (rule prolonged_estimation) asks for a field read: the committer raises
    vee.field_read once for the meter, and clears it when actual interval reads come back."""
    import asyncio

    from gateway.pipeline.committer import FIELD_READ_ALARM, Committer, PipelineServices
    from protocols.topics import GatewayTopics

    config = dict(CONFIG, rules=[{"name": "prolonged_estimation", "intervals": 3}])
    fleet = Fleet(["m-1", "m-2"])
    stage = seeded_stage(list(fleet.base), config=config)
    with Store.open(tmp_path / "gw.db") as store:
        committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", "gw")), asyncio.Queue())

        def step(seconds: range, silent: Iterable[str] = ()) -> list[ReadRecord]:
            flagged: list[ReadRecord] = []
            for second in seconds:
                t = T0 + second * 1000 + 100
                polled = [fleet.poll(m, t) for m in fleet.base if m not in set(silent)]
                vee_reads = stage.apply(polled, t + 50)
                committer._field_reads(polled, vee_reads, t + 50)
                flagged += [r for _m, rs in vee_reads for r in rs if 9 in r.reasons]
            return flagged

        assert step(range(100, 110)) == []
        assert store.active_alarms() == []
        flagged = step(range(110, 130), silent=["m-2"])
        assert flagged, "the silent meter's estimates never reached prolonged_estimation"
        active = store.active_alarms()
        assert [(a.kind, a.key) for a in active] == [(FIELD_READ_ALARM, f"{FIELD_READ_ALARM}/m-2")]
        step(range(130, 140))
        assert store.active_alarms() == []
        assert store.alarm(f"{FIELD_READ_ALARM}/m-2") is not None  # raised once, then cleared
