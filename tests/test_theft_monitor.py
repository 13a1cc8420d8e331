"""The daemon's theft and tamper stage in process: a real config, a real SQLite store, the real
committer, and poll results as the buses produce them (tests/test_e2e_daemon.py runs the same
stage inside the daemon against simulated DL/T 645 meters)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_rules import theft
from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.analytics.theft import INDICATORS, KINDS, TheftMonitor, _may_be_stopped
from gateway.config import ConfigError, load_config
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.store import Store
from protocols.payload import decode_message
from protocols.topics import GatewayTopics
from tests.test_payload_cddl import CDDL, Validator, parse_rules

REPO = Path(__file__).resolve().parent.parent

CONFIG = """\
[gateway]
id = "gw-t"
data_dir = "var"

[mqtt]
host = "127.0.0.1"

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "/dev/null"

[[meters]]
id = "m-1"
bus = "rs485-1"
address = "000000000001"
profile = "dlt645-2007"

[[meters]]
id = "m-2"
bus = "rs485-1"
address = "000000000002"
profile = "dlt645-2007"

[[meters]]
id = "pv"
bus = "rs485-1"
address = "000000000003"
profile = "dlt645-2007"
generating = true

[[meters]]
id = "ht"
bus = "rs485-1"
address = "000000000004"
profile = "dlt645-2007"
nominal_voltage_v = 57.7
basic_current_a = 1.5
"""

T0 = 1_767_225_600_000
STEP = 30_000  # a 30-s poll: 60 s of loss of voltage is three polls


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "dlt645-2007.toml").write_text("# test profile\n")
    (tmp_path / "gateway.toml").write_text(CONFIG)
    return tmp_path


class Rig:
    def __init__(self, site: Path, extra: str = "") -> None:
        if extra:
            (site / "gateway.toml").write_text(CONFIG + extra)
        self.config = load_config(site / "gateway.toml")
        self.store = Store.open(site / "var" / "gateway.sqlite")
        self.committer = Committer(PipelineServices.open(self.store, GatewayTopics("mtr/v1", "gw-t")), asyncio.Queue())
        self.monitor = TheftMonitor(self.config, self.committer.alarms)
        self.committer.feed.subscribe("theft", self.monitor.on_poll)

    def alarms(self) -> list[dict[str, Any]]:
        return alarm_messages(self.store)

    def close(self) -> None:
        self.store.close()


def alarm_messages(store: Store) -> list[dict[str, Any]]:
    """The alarm events committed to the outbox, decoded, in commit order."""
    return [decode_message(row.payload) for row in store.pending(10_000)
            if row.topic.endswith("/alarms")]


@pytest.fixture
def rig(site: Path) -> Any:
    r = Rig(site)
    yield r
    # Every alarm any test raised or cleared has the documented shape (docs/payloads.cddl).
    validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
    for message in r.alarms():
        validator.check("alarm-message", message, message["key"])
        validator.check(f"theft-{message['state']}-details", message["details"], message["key"])
    r.close()


def poll(meter: str, t_ms: int, *, v: tuple[float, float, float] = (220.0, 221.0, 219.0),
         i: tuple[float, float, float] = (4.0, 4.0, 4.0), p: tuple[float, ...] | None = None,
         total: float | None = None, imported: str | None = "1000.00",
         exported: str | None = "0.00") -> PollResult:
    """A DL/T 645 poll as the bus reports it: Decimals at the meter's resolutions."""
    if p is None:
        p = tuple(round(vv * ii * 0.95 / 1000, 4) for vv, ii in zip(v, i, strict=True))
    if total is None:
        total = round(sum(p), 4)
    values = [PolledValue(f"voltage.{ph}", Decimal(f"{x:.1f}"), "V", t_ms)
              for ph, x in zip("abc", v, strict=True)]
    values += [PolledValue(f"current.{ph}", Decimal(f"{x:.3f}"), "A", t_ms)
               for ph, x in zip("abc", i, strict=True)]
    values += [PolledValue(f"power.active.{ph}", Decimal(f"{x:.4f}"), "kW", t_ms)
               for ph, x in zip("abc", p, strict=True)]
    values.append(PolledValue("power.active.total", Decimal(f"{total:.4f}"), "kW", t_ms))
    if imported is not None:
        values.append(PolledValue("energy.active.import.total", Decimal(imported), "kWh", t_ms))
    if exported is not None:
        values.append(PolledValue("energy.active.export.total", Decimal(exported), "kWh", t_ms))
    return PollResult(meter, "rs485-1", t_ms - 200, t_ms, True, values=tuple(values))


def events(rig: Rig, kind: str, meter: str = "m-1") -> list[tuple[str, dict[str, Any]]]:
    return [(a["state"], a) for a in rig.alarms() if a["kind"] == kind and a["meter"] == meter]


def honest(k: int) -> str:
    """Import register of a meter drawing ~2.5 kW, 0.01 kWh resolution, at poll k."""
    return f"{1000 + 2.5 * k * STEP / 3_600_000:.2f}"


def test_loss_of_voltage_is_raised_after_sustain_s_with_its_evidence_and_cleared(rig: Rig) -> None:
    lost = (96.5, 221.0, 219.0)
    for k in range(2):  # honest first: the window holds normal polls too
        rig.committer.commit([poll("m-1", T0 + k * STEP, imported=honest(k))])
    for k in range(2, 4):  # 30 s of loss: not yet
        rig.committer.commit([poll("m-1", T0 + k * STEP, v=lost, imported=honest(k))])
    assert events(rig, "theft.loss_of_voltage") == []
    rig.committer.commit([poll("m-1", T0 + 4 * STEP, v=lost, i=(4.5, 4.0, 4.0),
                               imported=honest(4))])
    (state, raised), = events(rig, "theft.loss_of_voltage")
    assert state == "raised" and raised["severity"] == "minor"
    assert raised["key"] == "theft.loss_of_voltage/m-1"
    d = raised["details"]
    assert (d["phases"], d["start_ms"], d["end_ms"]) == ("a", T0 + 2 * STEP, T0 + 4 * STEP)
    assert d["lowest_voltage_v"] == 96.5 and d["highest_current_a"] == 4.5
    assert d["voltage_below_v"] == pytest.approx(0.78 * 220)
    assert d["thresholds"] == {"voltage_below_v": pytest.approx(171.6), "current_above_a": 0.025,
                               "sustain_s": 60.0}
    assert (d["window_start_ms"], d["window_end_ms"], d["samples"]) == (T0, T0 + 4 * STEP, 5)
    assert (d["un_v"], d["ib_a"]) == (220.0, 5.0)
    assert "phase a" in d["hint"] and "96.5 V" in d["hint"]
    assert raised["ts"] == T0 + 4 * STEP
    # Still lost: no second raise. Restored: one clear.
    rig.committer.commit([poll("m-1", T0 + 5 * STEP, v=lost, imported=honest(5))])
    assert len(events(rig, "theft.loss_of_voltage")) == 1
    rig.committer.commit([poll("m-1", T0 + 6 * STEP, imported=honest(6))])
    states = [s for s, _ in events(rig, "theft.loss_of_voltage")]
    assert states == ["raised", "cleared"]
    cleared = events(rig, "theft.loss_of_voltage")[1][1]
    assert cleared["raised"] == T0 + 4 * STEP
    assert cleared["details"]["window_end_ms"] == T0 + 6 * STEP
    active = rig.store.alarm("theft.loss_of_voltage/m-1")
    assert active is not None and active.cleared_ms == T0 + 6 * STEP


def test_a_voltage_dip_shorter_than_sustain_s_raises_nothing(rig: Rig) -> None:
    for k in range(8):
        v = (96.5, 221.0, 219.0) if k in (2, 3, 5, 6) else (220.0, 221.0, 219.0)
        rig.committer.commit([poll("m-1", T0 + k * STEP, v=v, imported=honest(k))])
    assert rig.alarms() == []


@pytest.mark.parametrize(
    ("kind", "faulty", "evidence"),
    [
        ("theft.phase_break", {"v": (220.0, 0.0, 219.0), "i": (4.0, 0.0, 4.0)},
         {"phases": "b", "lowest_voltage_v": 0.0, "live_voltage_v": 220.0}),
        ("theft.loss_of_current", {"i": (4.0, 3.0, 0.0)},
         {"phases": "c", "lowest_current_a": 0.0, "other_phase_current_a": 4.0}),
        ("theft.current_imbalance", {"i": (4.0, 4.0, 2.0)},
         {"phases": "c", "imbalance_pct": 50.0, "largest_current_a": 4.0}),
    ],
)
def test_per_phase_indicators_raise_with_evidence_and_clear(
        rig: Rig, kind: str, faulty: dict[str, Any], evidence: dict[str, Any]) -> None:
    for k in range(3):
        rig.committer.commit([poll("m-1", T0 + k * STEP, imported=honest(k), **faulty)])
    (state, raised), = events(rig, kind)
    assert state == "raised"
    for key, value in evidence.items():
        assert raised["details"][key] == value, key
    assert raised["details"]["start_ms"] == T0 and raised["details"]["end_ms"] == T0 + 2 * STEP
    rig.committer.commit([poll("m-1", T0 + 3 * STEP, imported=honest(3))])
    assert [s for s, _ in events(rig, kind)] == ["raised", "cleared"]
    # A loss of current is also 100 % imbalance, and a phase break also is; nothing else fired.
    kinds = {a["kind"] for a in rig.alarms()}
    assert kinds <= {kind, "theft.current_imbalance"}


def test_a_phase_current_flowing_back_is_a_current_not_a_loss_of_one(rig: Rig) -> None:
    """DL/T 645-2007 currents are signed: −0.789 A is 0.789 A flowing back on that phase (a
    rooftop inverter on phase c). Neither loss of current nor imbalance may read the sign as a
    smaller current (the issue's false alarm: "−0.789 A < 0.025 A while another phase carried
    5.123 A", and an imbalance of 115 % computed from the signed value)."""
    for k in range(3):
        rig.committer.commit([poll("m-1", T0 + k * STEP, imported=honest(k),
                                   i=(5.123, 5.0, -4.9), p=(1.07, 1.05, -1.02))])
    kinds = {a["kind"] for a in rig.alarms()}
    assert "theft.loss_of_current" not in kinds and "theft.current_imbalance" not in kinds


def test_imbalance_is_computed_on_current_magnitudes(rig: Rig) -> None:
    for k in range(3):
        rig.committer.commit([poll("m-1", T0 + k * STEP, imported=honest(k),
                                   i=(4.0, 4.0, -2.0), p=(0.84, 0.84, -0.42))])
    (state, raised), = events(rig, "theft.current_imbalance")
    assert state == "raised"
    assert raised["details"]["imbalance_pct"] == 50.0  # (4 - 2) / 4, not (4 - (-2)) / 4
    assert "theft.loss_of_current" not in {a["kind"] for a in rig.alarms()}


def test_reverse_energy_only_on_meters_not_generating(rig: Rig) -> None:
    for meter in ("m-1", "pv"):
        for k in range(3):
            rig.committer.commit([poll(meter, T0 + k * STEP, imported=honest(k),
                                       exported=f"{5 + 0.01 * k:.2f}")])
    (state, raised), = events(rig, "theft.reverse_energy")
    assert state == "raised"
    assert raised["details"]["export_kwh"] == pytest.approx(0.02)
    assert raised["details"]["thresholds"]["export_at_least_kwh"] == 0.02
    assert events(rig, "theft.reverse_energy", "pv") == []


def test_a_reversed_ct_on_one_phase_is_reverse_energy(rig: Rig) -> None:
    for k in range(3):
        rig.committer.commit([poll("m-1", T0 + k * STEP, p=(0.83, -0.84, 0.83),
                                   imported=honest(k))])
    (state, raised), = events(rig, "theft.reverse_energy")
    assert state == "raised"
    assert raised["details"]["phases"] == "b" and raised["details"]["reverse_kw"] == 0.84


def test_meter_stopped_and_running_fast(rig: Rig) -> None:
    # 12.5 kW for 30 s is 0.104 kWh: the frozen register is stopped on the second poll.
    big = {"i": (20.0, 20.0, 20.0)}
    rig.committer.commit([poll("m-1", T0, imported="1000.00", **big)])
    assert events(rig, "theft.meter_stopped") == []
    rig.committer.commit([poll("m-1", T0 + STEP, imported="1000.00", **big)])
    (state, raised), = events(rig, "theft.meter_stopped")
    assert state == "raised"
    d = raised["details"]
    assert d["frozen_register_kwh"] == 1000.0 and d["unregistered_kwh"] >= 0.1
    assert d["thresholds"] == {"unregistered_at_least_kwh": 0.1}
    rig.committer.commit([poll("m-1", T0 + 2 * STEP, imported="1000.10", **big)])
    assert [s for s, _ in events(rig, "theft.meter_stopped")] == ["raised", "cleared"]
    # m-2 registers 1 kWh per 30 s while drawing 2.5 kW (0.02 kWh): 48x too fast.
    for k in range(3):
        rig.committer.commit([poll("m-2", T0 + k * STEP, imported=f"{2000 + k}.00")])
    (state, raised), = events(rig, "theft.running_fast", "m-2")
    assert raised["details"]["registered_kwh"] == 1.0
    assert raised["details"]["expected_kwh"] < 0.1


def test_cover_counters_raise_on_an_opening_between_polls_and_clear_with_the_window(
        site: Path) -> None:
    rig = Rig(site, "\n[theft]\nwindow_samples = 4\n")

    def with_counters(k: int, cover: int, terminal: int) -> PollResult:
        base = poll("m-1", T0 + k * STEP, imported=honest(k))
        t = base.finished_ms
        return PollResult(base.meter_id, base.bus, base.started_ms, t, True, values=(
            *base.values, PolledValue("events.cover_open.count", cover, None, t),
            PolledValue("events.terminal_cover_open.count", terminal, None, t)))

    counts = [(3, 1), (3, 1), (5, 1), (5, 1), (5, 1), (5, 1), (5, 1)]
    for k, (cover, terminal) in enumerate(counts[:3]):
        rig.committer.commit([with_counters(k, cover, terminal)])
    (state, raised), = events(rig, "tamper.cover_open")
    d = raised["details"]
    assert (d["new_events"], d["count_before"], d["count_after"]) == (2.0, 3.0, 5.0)
    assert d["start_ms"] == T0 + 2 * STEP and "03300D00" in d["hint"]
    assert events(rig, "tamper.terminal_cover_open") == []
    for k in range(3, 6):  # the opening leaves the 4-poll window at the sixth poll
        rig.committer.commit([with_counters(k, *counts[k])])
        assert len(events(rig, "tamper.cover_open")) == (1 if k < 5 else 2), k
    assert events(rig, "tamper.cover_open")[1][0] == "cleared"
    for message in rig.alarms():
        Validator(parse_rules(CDDL.read_text(encoding="utf-8"))).check(
            f"theft-{message['state']}-details", message["details"], message["key"])
    rig.close()


def test_honest_meters_raise_nothing_over_many_polls(rig: Rig) -> None:
    for k in range(40):
        rig.committer.commit([poll(m, T0 + k * STEP, imported=honest(k)) for m in ("m-1", "m-2")])
    # 57.7 V meter with its own Un/Ib: normal for it, not a loss of voltage.
    for k in range(5):
        rig.committer.commit([poll("ht", T0 + k * STEP, v=(57.7, 57.5, 57.9), i=(1.0, 1.1, 1.0),
                                   imported=f"{50 + 0.15 * k * STEP / 3_600_000:.2f}")])
    assert rig.alarms() == []


@pytest.mark.parametrize("interval_s", [0.0, 0.3])
def test_batches_are_evaluated_after_the_commit_at_most_every_interval_and_wake_the_pump(
        site: Path, interval_s: float) -> None:
    (site / "gateway.toml").write_text(CONFIG + f"\n[theft]\nevaluate_interval_s = {interval_s}\n")
    config = load_config(site / "gateway.toml")
    store = Store.open(site / "var" / "gateway.sqlite")
    wakes: list[int] = []
    evaluated: list[list[int]] = []
    committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", "gw-t"),
                                                on_commit=lambda: wakes.append(1)), asyncio.Queue())
    monitor = TheftMonitor(config, committer.alarms)
    original = monitor.evaluate

    def counting(rows: Any = None) -> int:
        evaluated.append(sorted(monitor._dirty))
        return original(rows)

    monitor.evaluate = counting  # type: ignore[method-assign]
    committer.feed.subscribe("theft", monitor.on_poll)

    async def scenario() -> None:
        for k in range(3):
            committer.commit([poll(m, T0 + k * STEP, v=(96.0, 220.0, 220.0))
                              for m in ("m-1", "m-2")])
            assert len(evaluated) == (k if interval_s == 0 else min(k, 1))  # never inside
            await asyncio.sleep(0.01)
        await asyncio.sleep(interval_s + 0.1)

    asyncio.run(scenario())
    if interval_s == 0:  # one evaluation per batch, of the batch's meters
        assert evaluated == [[0, 1]] * 3
    else:  # the first batch at once, the next two together once the interval passed
        assert evaluated == [[0, 1], [0, 1]]
    assert {(a["meter"], a["kind"]) for a in alarm_messages(store)} == {
        ("m-1", "theft.loss_of_voltage"), ("m-2", "theft.loss_of_voltage")}
    assert wakes == [1] * (3 + 2)  # each commit of reads, and each alarm raised, wakes the pump
    store.close()


def test_alarms_raised_before_a_restart_are_cleared_when_the_condition_is_gone(site: Path) -> None:
    first = Rig(site)
    for k in range(3):
        first.committer.commit([poll("m-1", T0 + k * STEP, v=(96.0, 220.0, 220.0))])
    assert [s for s, _ in events(first, "theft.loss_of_voltage")] == ["raised"]
    first.close()
    second = Rig(site)
    assert second.monitor.active[0, KINDS.index("theft.loss_of_voltage")] == 1
    second.committer.commit([poll("m-1", T0 + 3 * STEP)])
    assert [s for s, _ in events(second, "theft.loss_of_voltage")] == ["raised", "cleared"]
    second.close()


def test_disabled_and_misconfigured_theft_tables(site: Path) -> None:
    off = Rig(site, "\n[theft]\nenabled = false\n")
    assert off.config.theft.enabled is False
    off.close()
    tuned = load_config(site / "gateway.toml")
    assert tuned.theft.sustain_s == 60.0 and tuned.theft.imbalance_pct == 30.0
    for extra, path in (("\n[theft]\nimbalance_limit = 40\n", "theft.imbalance_limit"),
                        ("\n[theft]\nphase_break_pct = 90\n", "theft.phase_break_pct"),
                        ("\n[theft]\nwindow_samples = 1\n", "theft.window_samples")):
        (site / "gateway.toml").write_text(CONFIG + extra)
        with pytest.raises(ConfigError) as err:
            load_config(site / "gateway.toml")
        assert path in str(err.value) or any(path in str(i) for i in err.value.issues), extra


def test_the_stage_runs_without_importing_numba(site: Path) -> None:
    script = f"""
import asyncio, sys
from decimal import Decimal
from pathlib import Path
from gateway.pipeline.committer import Committer, PipelineServices
from protocols.topics import GatewayTopics
from gateway.config import load_config
from gateway.store import Store
from gateway.analytics.theft import TheftMonitor
from tests.test_theft_monitor import poll, T0, STEP
config = load_config(Path({str(site / 'gateway.toml')!r}))
store = Store.open(Path({str(site / 'var' / 'x.sqlite')!r}))
committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", "gw-t")), asyncio.Queue())
monitor = TheftMonitor(config, committer.alarms)
committer.feed.subscribe("theft", monitor.on_poll)
for k in range(3):
    committer.commit([poll("m-1", T0 + k * STEP, v=(96.0, 220.0, 220.0))])
assert store.alarm("theft.loss_of_voltage/m-1") is not None
print("numba" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("seed", range(40))
def test_screening_never_changes_what_the_kernels_find(rig: Rig, seed: int) -> None:
    """Kernels whose necessary condition holds nowhere in a batch are skipped; on random
    batches (faults, NaN gaps, frozen and jumping registers, counters) the results with and
    without screening are the same."""
    rng = np.random.default_rng(seed)
    meters, n = 4, rig.config.theft.window_samples
    data = np.empty((meters, 14, n))
    data[:, 0:3] = rng.choice([220.0, 230.0, 150.0, 100.0, 0.0], size=(meters, 3, n),
                              p=[0.5, 0.3, 0.1, 0.05, 0.05] if seed % 2 else [1, 0, 0, 0, 0])
    data[:, 3:6] = rng.choice([40.0, 4.0, 3.5, 1.0, 0.01, 0.0], size=(meters, 3, n),
                              p=[0.1, 0.5, 0.2, 0.1, 0.05, 0.05] if seed % 3 else [0, 1, 0, 0, 0, 0])
    broken = rng.integers(0, n - 3)  # a conductor broken for a while on one meter and phase
    data[seed % meters, 0:6:3, broken:broken + 4] = 0.0 if seed % 5 else 220.0
    data[:, 6:9] = data[:, 0:3] * data[:, 3:6] / 1000 * rng.choice([1, -1], size=(meters, 3, n),
                                                                   p=[0.9, 0.1])
    data[:, 9] = data[:, 6:9].sum(axis=1)
    data[:, 10] = 1000 + np.cumsum(rng.choice([0.0, 0.01, 0.5], size=(meters, n),
                                              p=[0.5, 0.3, 0.2]), axis=1)
    data[:, 11] = 5 + np.cumsum(rng.choice([0.0, 0.01], size=(meters, n), p=[0.9, 0.1]), axis=1)
    data[:, 12:14] = np.cumsum(rng.choice([0, 1], size=(meters, 2, n), p=[0.95, 0.05]), axis=2)
    data[rng.random(data.shape) < (0.05 if seed % 4 else 0.0)] = np.nan
    times = np.broadcast_to(T0 + np.arange(n) * STEP, (meters, n)).copy()
    index = np.arange(meters, dtype=np.intp)
    screened = rig.monitor._indicators(index, data, times, screen=True)
    full = rig.monitor._indicators(index, data, times, screen=False)
    for spec, a, b in zip(INDICATORS, screened, full, strict=True):
        np.testing.assert_array_equal(a.fired, b.fired, err_msg=spec.kind)
        for field in a._fields:
            np.testing.assert_array_equal(getattr(a, field)[b.fired != 0],
                                          getattr(b, field)[b.fired != 0], err_msg=spec.kind)



@pytest.mark.parametrize("seed", range(300))
def test_the_meter_stopped_screen_holds_wherever_the_kernel_fires(seed: int) -> None:
    """``_may_be_stopped`` is a necessary condition of ``meter_stopped_np`` firing, right at
    the threshold (``min_kwh`` = the largest stretch the kernel summed), on random batches with
    frozen registers, negative, NaN and infinite powers, and times that repeat or go back."""
    rng = np.random.default_rng(seed)
    meters, n = int(rng.integers(1, 6)), int(rng.integers(2, 20))
    register = 1000 + np.cumsum(rng.choice([0.0, 0.01, 0.5], size=(meters, n),
                                           p=[0.6, 0.3, 0.1]), axis=1)
    register[rng.random(register.shape) < 0.05 * (seed % 3)] = np.nan
    power = rng.choice([rng.uniform(0, 40), rng.uniform(-5, 0), 1e-3, 0.0], size=(meters, n))
    power[rng.random(power.shape) < 0.05 * (seed % 4)] = np.nan
    if seed % 7 == 0:
        power[rng.integers(meters), rng.integers(n)] = np.inf
    steps = rng.choice([1000, 60_000, 0, -30_000] if seed % 5 == 0 else [1000, 60_000],
                       size=(meters, n))
    times = T0 + np.cumsum(steps, axis=1).astype(np.int64)
    value = theft.meter_stopped_np(register, power, times, 1e300)[4]
    finite = value[np.isfinite(value) & (value > 0)]
    for min_kwh in ({float(finite.max()), float(finite.min())} if finite.size else {1e-9}):
        fired = theft.meter_stopped_np(register, power, times, min_kwh)[0]
        if fired.any():
            assert _may_be_stopped(register, power, times, min_kwh), (seed, min_kwh)
    if not np.isinf(power).any():  # and it does screen: no finite batch reaches 1e300 kWh
        assert not _may_be_stopped(register, power, times, 1e300)


#: Each indicator and the load-model knob that provokes it (hil_tests/load_model.py).
KNOBS = [
    ("theft.loss_of_voltage", lambda m: m.set_loss_of_voltage("a", True)),
    ("theft.phase_break", lambda m: m.set_phase_break("b", True)),
    ("theft.loss_of_current", lambda m: m.set_phase_current_factor("c", 0)),
    ("theft.current_imbalance", lambda m: m.set_phase_current_factor("b", 0.4)),
    ("theft.reverse_energy", lambda m: m.set_reversed_ct("a", True)),
    ("theft.meter_stopped", lambda m: m.set_register_stopped(True)),
    ("theft.running_fast", lambda m: m.set_register_speed(40)),
    ("tamper.cover_open", lambda m: (m.open_cover(), m.close_cover())),
]


@pytest.mark.parametrize(("kind", "knob"), KNOBS, ids=[k for k, _ in KNOBS])
def test_every_indicator_is_provoked_by_its_simulator_knob(rig: Rig, kind: str, knob: Any) -> None:
    """The simulated meter's reported values (what the DL/T 645 simulator answers, 03300D00
    included) through the monitor, every 30 s: honest polls raise nothing, and the knob raises
    its own alarm — plus the imbalance a dead phase current implies, nothing else."""
    from hil_tests.load_model import LoadModel, ManualClock

    clock = ManualClock(0.0)
    model = LoadModel(seed=7, clock=clock)
    sim = model.meter("m-1", phases=3, base_kw=30.0)

    def sample() -> None:
        snap = sim.sample()
        t = int(snap.t * 1000)
        values = {**snap.values(), "events.cover_open.count": Decimal(snap.cover_openings.count)}
        rig.committer.commit([PollResult("m-1", "rs485-1", t - 300, t, True, values=tuple(
            PolledValue(q, v, None, t) for q, v in values.items()))])
        clock.advance(30)

    for _ in range(6):
        sample()
    assert rig.alarms() == []
    knob(sim)
    for _ in range(6):
        sample()
    raised = {a["kind"] for a in rig.alarms() if a["state"] == "raised"}
    assert kind in raised
    assert raised <= {kind, "theft.current_imbalance"}, raised
