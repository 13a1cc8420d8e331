"""The daemon's daily reconciliation in process: a real config, a real SQLite store, poll results as
the buses produce them, and the clocks driven by the test (tests/test_e2e_areas.py runs the same
code in the daemon against simulated meters)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.analytics.areas import AreaReconciler
from gateway.config import load_config
from gateway.pipeline.outbox import OutboxWriter
from gateway.store import Store
from protocols.payload import decode_message
from protocols.topics import GatewayTopics

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

[[buses]]
name = "tcp-1"
protocol = "modbus-tcp"
host = "127.0.0.1"

[[meters]]
id = "master"
bus = "rs485-1"
address = "000000000001"
profile = "dlt645-2007"
ct_ratio = 40

[[meters]]
id = "c-1"
bus = "rs485-1"
address = "000000000002"
profile = "dlt645-2007"

[[meters]]
id = "c-2"
bus = "tcp-1"
address = 1
profile = "sdm630"

[[groups]]
id = "subs"
members = [{ meter = "c-1" }, { meter = "c-2" }]

[[groups]]
id = "c-1-only"
members = [{ meter = "c-1" }]

[[areas]]
id = "tq"
master = "master"
subs = "subs"

[reconcile]
utc_offset_min = 480
freeze_wait_s = 600
max_gap_min = 30
"""

OFFSET_MS = 480 * 60_000
START = dt.date(2025, 3, 1)


class Clocks:
    """Wall and monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_740_787_200.0  # any instant; only differences matter here
        self.mono = 0.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "profiles").mkdir()
    for name in ("dlt645-2007", "sdm630"):
        (tmp_path / "profiles" / f"{name}.toml").write_text("# test profile\n")
    (tmp_path / "gateway.toml").write_text(CONFIG)
    return tmp_path


def open_reconciler(site: Path, clocks: Clocks) -> tuple[AreaReconciler, Store]:
    config = load_config(site / "gateway.toml")
    store = Store.open(site / "var" / "gateway.sqlite")
    return AreaReconciler(config, OutboxWriter(store), GatewayTopics(config.mqtt.topic_prefix, config.gateway.id), clock=clocks.time, monotonic=clocks.monotonic), store


def midnight_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * 86_400_000 - OFFSET_MS


def freeze_poll(meter: str, day: dt.date, register: str, n: int = 1) -> PollResult:
    """A DL/T 645 poll carrying the n-th last daily freeze, as the bus reports it."""
    t = midnight_ms(day) + 5 * 60_000
    return PollResult(meter, "rs485-1", t, t, True, values=(
        PolledValue(f"freeze.daily.last{n}.time", f"{day.isoformat()}T00:00:00", None, t),
        PolledValue(f"freeze.daily.last{n}.energy.active.import.total", Decimal(register),
                    "kWh", t),
    ))


def freeze_polls(reconciler: AreaReconciler, meter: str, day: dt.date, register: str) -> None:
    """Two polls of the same freeze: a freeze is taken once two polls agree on it."""
    for _ in range(2):
        reconciler.on_poll(freeze_poll(meter, day, register))


def register_poll(meter: str, t_ms: int, register: str) -> PollResult:
    """A Modbus poll: the import register, no freeze."""
    return PollResult(meter, "tcp-1", t_ms, t_ms, True, values=(
        PolledValue("energy.active.import.total", Decimal(register), "kWh", t_ms),
    ))


def published(store: Store) -> list[tuple[str, dict[str, Any]]]:
    return [(row.topic, decode_message(row.payload)) for row in store.pending(1000)]


def run(reconciler: AreaReconciler) -> int:
    return asyncio.run(reconciler.process())


def test_a_day_is_published_once_every_meter_froze_its_closing_midnight(site: Path) -> None:
    clocks = Clocks()
    reconciler, store = open_reconciler(site, clocks)
    day, next_day = START, START + dt.timedelta(days=1)
    freeze_polls(reconciler, "master", day, "100.00")
    freeze_polls(reconciler, "c-1", day, "5000.00")
    reconciler.on_poll(register_poll("c-2", midnight_ms(day) + 20_000, "200.00"))  # 00:00:20
    freeze_polls(reconciler, "master", next_day, "102.50")  # × CT 40 = 100 kWh
    freeze_polls(reconciler, "c-1", next_day, "5060.00")
    due = [unit.id for unit, _day in reconciler.due()]
    assert due == ["c-1-only"], "the area waits: c-2 has not reported the closing midnight yet"
    # c-2 (no freeze register) is read 10 min before and 20 min after midnight: interpolated.
    reconciler.on_poll(register_poll("c-2", midnight_ms(next_day) - 600_000, "234.00"))
    reconciler.on_poll(register_poll("c-2", midnight_ms(next_day) + 1_200_000, "237.00"))
    (c2,) = store.get_daily("c-2", "energy.active.import.total", next_day, next_day)
    assert (c2.value, c2.quality) == (Decimal("235.00"), "E")
    assert run(reconciler) == 2  # the area, and the group that is no area's subs
    by_topic = dict(published(store))
    area = by_topic["mtr/v1/gw-t/groups/subs"]
    loss = area["loss"]
    assert (loss["day"], loss["input"], loss["output"]) == ("2025-03-01", Decimal("100.0000"),
                                                           Decimal("95.00"))
    assert loss["loss_pct"] == pytest.approx(5.0)
    # c-2's closing value is an estimate: the coverage gate (98 %) makes the day uncalculable.
    assert (loss["status"], loss["coverage"]) == ("uncalculable", 0.5)
    (total,) = area["totals"]
    assert (total["day"], total["quality"], total["val"]) == ("2025-03-01", "E", Decimal("95.00"))
    assert total["t"] == midnight_ms(day)
    only = by_topic["mtr/v1/gw-t/groups/c-1-only"]["totals"][0]
    assert (only["quality"], only["val"], only["coverage"]) == ("A", Decimal("60.00"), 1.0)
    assert run(reconciler) == 0, "a day is published once"
    store.close()


def test_a_meter_that_never_reports_waits_freeze_wait_s_then_counts_as_missing(
        site: Path) -> None:
    clocks = Clocks()
    reconciler, store = open_reconciler(site, clocks)
    day, next_day = START, START + dt.timedelta(days=1)
    for meter, (opening, closing) in {"master": ("100.00", "102.50"),
                                      "c-1": ("5000.00", "5060.00")}.items():
        freeze_polls(reconciler, meter, day, opening)
        freeze_polls(reconciler, meter, next_day, closing)
    reconciler.on_poll(register_poll("c-2", midnight_ms(day) + 1000, "200.00"))
    pending = {unit.id for unit, _day in reconciler.due()}
    assert pending == {"c-1-only"}, "the area still waits for c-2"
    clocks.mono += 599
    assert "tq" not in {unit.id for unit, _day in reconciler.due()}
    clocks.mono += 2
    assert run(reconciler) == 2
    area = dict(published(store))["mtr/v1/gw-t/groups/subs"]
    assert area["loss"]["status"] == "uncalculable" and "loss_pct" not in area["loss"]
    total = area["totals"][0]
    assert (total["quality"], total["val"], total["missing"]) == ("N", None, ["c-2"])
    store.close()


def test_a_restart_neither_repeats_nor_loses_a_day(site: Path) -> None:
    clocks = Clocks()
    reconciler, store = open_reconciler(site, clocks)
    registers = {"master": Decimal("100.00"), "c-1": Decimal("5000.00"), "c-2": Decimal("200.00")}
    use = {"master": Decimal("2.60"), "c-1": Decimal("60.00"), "c-2": Decimal("40.00")}

    def freeze_day(r: AreaReconciler, day: dt.date) -> None:
        for meter in ("master", "c-1"):
            freeze_polls(r, meter, day, str(registers[meter]))
        r.on_poll(register_poll("c-2", midnight_ms(day) + 30_000, str(registers["c-2"])))
        for meter in registers:
            registers[meter] += use[meter]

    days = [START + dt.timedelta(days=i) for i in range(4)]
    for day in days[:3]:
        freeze_day(reconciler, day)
    assert run(reconciler) == 4  # two days × (area, group)
    freeze_day(reconciler, days[3])  # frozen, then the gateway stops before reconciling it
    store.close()

    reconciler, store = open_reconciler(site, clocks)
    assert [(u.id, d) for u, d in reconciler.due()] == [("tq", days[2]), ("c-1-only", days[2])]
    assert run(reconciler) == 2
    losses = [m["loss"] for _t, m in published(store) if "loss" in m]
    assert [loss["day"] for loss in losses] == [d.isoformat() for d in days[:3]]
    # 104 kWh in, 100 kWh out every day, all actual: the same loss each day.
    assert all(loss["status"] == "qualified" and loss["loss_pct"] == pytest.approx(100 * 4 / 104, abs=1e-4)
               for loss in losses)
    stored = store.get_daily("tq", "line_loss.status", days[0], days[3])
    assert [(v.day, v.value) for v in stored] == [(d, Decimal(0)) for d in days[:3]]
    store.close()


def test_a_freeze_not_taken_at_midnight_is_not_used_and_the_log_says_why(
        site: Path, caplog: pytest.LogCaptureFixture) -> None:
    clocks = Clocks()
    reconciler, store = open_reconciler(site, clocks)
    t = midnight_ms(START) + 3_600_000
    poll = PollResult("c-1", "rs485-1", t, t, True, values=(
        PolledValue("freeze.daily.last1.time", f"{START.isoformat()}T01:00:00", None, t),
        PolledValue("freeze.daily.last1.energy.active.import.total", Decimal("5000.00"), "kWh", t),
    ))
    with caplog.at_level(logging.WARNING):
        reconciler.on_poll(poll)
        reconciler.on_poll(poll)
    assert store.get_daily("c-1", "energy.active.import.total", START, START) == []
    assert "set the meter's daily freeze time to 00:00" in caplog.text
    # A freeze meter's plain register reads are not taken for its 00:00 value either.
    reconciler.on_poll(register_poll("c-1", midnight_ms(START) + 10_000, "5000.00"))
    assert store.get_daily("c-1", "energy.active.import.total", START, START) == []
    store.close()


def test_a_gateway_without_groups_never_loads_numba() -> None:
    """The daemon, its config (with the [reconcile] table) and the settings bridge import no
    numba: only a config with groups loads the area reconciler (tens of MB of JIT runtime)."""
    import subprocess
    import sys

    code = (
        "import sys, gateway.app.daemon, gateway.config, gateway.config.reconcile\n"
        "print('numba' in sys.modules, 'gateway.analytics.areas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_a_poll_straddling_the_meters_midnight_does_not_corrupt_a_freeze(site: Path) -> None:
    """Time and registers are separate transactions: the meter froze between them, so the poll
    pairs the 03-01 stamp with the 03-02 registers. That pair is never confirmed."""
    clocks = Clocks()
    reconciler, store = open_reconciler(site, clocks)
    day, next_day = START, START + dt.timedelta(days=1)
    freeze_polls(reconciler, "c-1", day, "5000.00")
    reconciler.on_poll(freeze_poll("c-1", day, "5060.00"))  # straddling: old stamp, new registers
    freeze_polls(reconciler, "c-1", next_day, "5060.00")
    stored = store.get_daily("c-1", "energy.active.import.total", day, next_day)
    assert [(v.day, v.value) for v in stored] == [(day, Decimal("5000.00")),
                                                  (next_day, Decimal("5060.00"))]
    store.close()


def test_a_tamper_alarm_during_a_high_day_names_the_meter_with_its_evidence(site: Path) -> None:
    clocks = Clocks()
    reconciler, store = open_reconciler(site, clocks)
    days = [START + dt.timedelta(days=i) for i in range(3)]
    master, c1, c2 = Decimal("100.00"), Decimal("5000.00"), Decimal("200.00")
    # Day 0: 4 % loss (qualified); day 1: 30 % (high by the 10 % guard).
    for day, master_use, c1_use, c2_use in ((days[0], "2.60", "60.00", "40.00"),
                                            (days[1], "2.50", "40.00", "30.00"),
                                            (days[2], "0", "0", "0")):
        freeze_polls(reconciler, "master", day, str(master))
        freeze_polls(reconciler, "c-1", day, str(c1))
        reconciler.on_poll(register_poll("c-2", midnight_ms(day) + 30_000, str(c2)))
        master += Decimal(master_use)
        c1 += Decimal(c1_use)
        c2 += Decimal(c2_use)
    cover = "meter.terminal_cover_open"
    for day, meter in ((days[0], "c-1"), (days[1], "c-2")):
        store.raise_alarm(f"{cover}/{meter}/terminal_cover_open", cover,
                          {"flag": "terminal_cover_open"}, midnight_ms(day) + 3_600_000)
        if meter == "c-1":  # closed again before the high day
            store.clear_alarm(f"{cover}/c-1/terminal_cover_open", midnight_ms(days[1]) - 60_000)
    assert run(reconciler) == 4
    losses = {m["loss"]["day"]: m["loss"] for _t, m in published(store) if "loss" in m}
    quiet, high = losses[days[0].isoformat()], losses[days[1].isoformat()]
    assert quiet["status"] == "qualified" and quiet["suspects"] == [], "alarms alone name no one"
    assert high["status"] == "high" and high["loss_pct"] == pytest.approx(30.0)
    (suspect,) = high["suspects"]
    assert suspect["meter"] == "c-2" and suspect["score"] == 0.75
    assert suspect["evidence"] == [
        f"{cover} (terminal_cover_open) raised 2025-03-01T17:00Z, still active"]
    store.close()


def test_a_theft_alarm_of_the_daemon_during_a_high_day_names_the_meter(site: Path) -> None:
    """The theft monitor's alarms (gateway/analytics/theft.py) are evidence like the meters' own
    flags: a stopped register on the high day names its meter, its evidence line quoted."""
    clocks = Clocks()
    reconciler, store = open_reconciler(site, clocks)
    days = [START + dt.timedelta(days=i) for i in range(3)]
    master, c1, c2 = Decimal("100.00"), Decimal("5000.00"), Decimal("200.00")
    for day, master_use, c1_use, c2_use in ((days[0], "2.60", "60.00", "40.00"),
                                            (days[1], "2.50", "40.00", "30.00"),
                                            (days[2], "0", "0", "0")):
        freeze_polls(reconciler, "master", day, str(master))
        freeze_polls(reconciler, "c-1", day, str(c1))
        reconciler.on_poll(register_poll("c-2", midnight_ms(day) + 30_000, str(c2)))
        master += Decimal(master_use)
        c1 += Decimal(c1_use)
        c2 += Decimal(c2_use)
    hint = "meter stopped: register frozen at 230.0 kWh while the power says 0.4 kWh passed"
    store.raise_alarm("theft.meter_stopped/c-1", "theft.meter_stopped", {"hint": hint},
                      midnight_ms(days[1]) + 7_200_000)
    store.raise_alarm("theft.current_imbalance/c-2", "theft.current_imbalance",
                      {"hint": "imbalance"}, midnight_ms(days[0]) + 60_000)
    store.clear_alarm("theft.current_imbalance/c-2", midnight_ms(days[0]) + 120_000)
    assert run(reconciler) == 4
    losses = {m["loss"]["day"]: m["loss"] for _t, m in published(store) if "loss" in m}
    high = losses[days[1].isoformat()]
    assert high["status"] == "high"
    (suspect,) = high["suspects"]  # c-2's imbalance was cleared the day before: not evidence
    assert suspect["meter"] == "c-1" and suspect["score"] == 1.0
    assert suspect["evidence"] == [
        f"theft.meter_stopped raised 2025-03-01T18:00Z, still active: {hint}"]
    store.close()
