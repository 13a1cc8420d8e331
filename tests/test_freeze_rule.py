"""The midnight freeze of a meter without a freeze register: one rule
(edge_rules.reconcile_freeze), and the daemon (AreaReconciler, read by read) and
``gwtool reconcile`` (a CSV) give the same frozen registers and the same days on the same reads."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edge_rules.reconcile_freeze import FREEZE_SLACK_MS, midnight_freeze
from firmware_tools.reconcile_command import IMPORT_Q, freeze_at, read_series, run_reconcile
from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.analytics.areas import AreaReconciler
from gateway.config import load_config
from gateway.pipeline.outbox import OutboxWriter
from gateway.store import Store
from protocols.payload import decode_message
from protocols.topics import GatewayTopics

MIN = 60_000
GAP = 30 * MIN
MIDNIGHT = 1_740_758_400_000  # any instant; only differences matter to the rule


# ---- the rule ---------------------------------------------------------------------------------


def test_a_read_within_the_slack_is_the_frozen_value() -> None:
    freeze = midnight_freeze(MIDNIGHT, (MIDNIGHT - MIN, Decimal("9.00")),
                             (MIDNIGHT + FREEZE_SLACK_MS - 1, Decimal("10.25")), GAP)
    assert freeze is not None and (freeze.value, freeze.interpolated) == (Decimal("10.25"), False)


def test_interpolation_is_exact_decimal_with_three_guard_digits() -> None:
    # 10 min before and 20 min after: one third of the rise; 0.01 + 0.1 is not 0.11 in floats.
    freeze = midnight_freeze(MIDNIGHT, (MIDNIGHT - 10 * MIN, Decimal("0.01")),
                             (MIDNIGHT + 20 * MIN, Decimal("0.31")), GAP)
    assert freeze is not None and freeze.interpolated
    assert str(freeze.value) == "0.11000"
    freeze = midnight_freeze(MIDNIGHT, (MIDNIGHT - 10 * MIN, Decimal("100.00")),
                             (MIDNIGHT + 20 * MIN, Decimal("100.01")), GAP)
    assert freeze is not None and str(freeze.value) == "100.00333"


@pytest.mark.parametrize(("before", "after"), [
    ((MIDNIGHT - 10 * MIN, Decimal("12.00")), (MIDNIGHT + 20 * MIN, Decimal("0.40"))),  # backwards
    ((MIDNIGHT - 31 * MIN, Decimal("1.00")), (MIDNIGHT + 20 * MIN, Decimal("2.00"))),  # gap before
    ((MIDNIGHT - 10 * MIN, Decimal("1.00")), (MIDNIGHT + 31 * MIN, Decimal("2.00"))),  # gap after
    ((MIDNIGHT, Decimal("1.00")), (MIDNIGHT + 20 * MIN, Decimal("2.00"))),  # not before midnight
    ((MIDNIGHT - 10 * MIN, Decimal("NaN")), (MIDNIGHT + 20 * MIN, Decimal("2.00"))),
    (None, (MIDNIGHT + 20 * MIN, Decimal("2.00"))),
    ((MIDNIGHT - 10 * MIN, Decimal("1.00")), None),
])
def test_no_value_when_the_rule_gives_none(before: Any, after: Any) -> None:
    assert midnight_freeze(MIDNIGHT, before, after, GAP) is None


# ---- daemon and gwtool on the same reads ------------------------------------------------------

CONFIG = """\
[gateway]
id = "gw-t"
data_dir = "var"

[mqtt]
host = "127.0.0.1"

[[buses]]
name = "tcp-1"
protocol = "modbus-tcp"
host = "127.0.0.1"

[[meters]]
id = "master"
bus = "tcp-1"
address = 1
profile = "sdm630"
ct_ratio = 40

[[meters]]
id = "c-1"
bus = "tcp-1"
address = 2
profile = "sdm630"

[[meters]]
id = "c-2"
bus = "tcp-1"
address = 3
profile = "sdm630"

[[groups]]
id = "subs"
members = [{ meter = "c-1" }, { meter = "c-2" }]

[[areas]]
id = "tq"
master = "master"
subs = "subs"

[reconcile]
utc_offset_min = 480
freeze_wait_s = 600
max_gap_min = 30
"""

OFFSET_MS = 480 * MIN
START = dt.date(2025, 3, 1)
DAYS = 5


def local_midnight(day: int) -> int:
    return (START - dt.date(1970, 1, 1) + dt.timedelta(days=day)).days * 86_400_000 - OFFSET_MS


def reads() -> list[tuple[str, int, Decimal]]:
    """Register reads of the three meters over DAYS + 1 midnights, time-ordered: the master read
    a few seconds after every midnight (actual), c-1 every 17 minutes (always interpolated, at
    shares that are not round decimals), c-2 every 20 minutes but with a 50-minute hole around
    one midnight (no value) and a meter exchange across another (register drops: no value)."""
    out: list[tuple[str, int, Decimal]] = []
    first, last = local_midnight(0) - 60 * MIN, local_midnight(DAYS) + 60 * MIN
    t = first
    master = Decimal("1000.00")
    while t <= last:
        into = (t + OFFSET_MS) % 86_400_000
        if into < 10 * MIN:
            out.append(("master", t - into + 5_000, master))
        master += Decimal("0.07")
        t += 10 * MIN
    c1 = Decimal("500.00")
    for k, t in enumerate(range(first + 3 * MIN, last, 17 * MIN)):
        out.append(("c-1", t, c1))
        c1 += Decimal("0.97") + Decimal(k % 7) / 100
    c2 = Decimal("800.00")
    hole = (local_midnight(2) - 25 * MIN, local_midnight(2) + 25 * MIN)
    exchange = local_midnight(3)
    for t in range(first + 7 * MIN, last, 20 * MIN):
        if exchange <= t < exchange + 20 * MIN:
            c2 = Decimal("0.50")  # new meter, register from zero
        if not hole[0] <= t <= hole[1]:
            out.append(("c-2", t, c2))
        c2 += Decimal("0.85")
    out.sort(key=lambda r: r[1])
    return out


def write_csv(path: Path, rows: list[tuple[str, int, Decimal]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["meter", "time", "quantity", "value"])
        for meter, t, value in rows:
            stamp = dt.datetime.fromtimestamp(t / 1000, dt.UTC).isoformat()
            writer.writerow([meter, stamp, IMPORT_Q, str(value)])


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "sdm630.toml").write_text("# test profile\n")
    (tmp_path / "gateway.toml").write_text(CONFIG)
    return tmp_path


def test_the_daemon_and_gwtool_reconcile_give_identical_days(site: Path) -> None:
    rows = reads()
    write_csv(site / "reads.csv", rows)

    # The daemon: every read as a Modbus poll, in time order, then every due day published.
    config = load_config(site / "gateway.toml")
    store = Store.open(site / "var" / "gateway.sqlite")
    mono = [0.0]
    reconciler = AreaReconciler(config, OutboxWriter(store), GatewayTopics(config.mqtt.topic_prefix, config.gateway.id), clock=lambda: 1e9, monotonic=lambda: mono[0])
    for meter, t, value in rows:
        reconciler.on_poll(PollResult(meter, "tcp-1", t, t, True, values=(
            PolledValue(IMPORT_Q, value, "kWh", t),)))
    mono[0] += 3600  # past freeze_wait_s: days with a missing meter are closed too
    asyncio.run(reconciler.process())
    days = [START + dt.timedelta(days=j) for j in range(DAYS + 1)]
    daemon_freezes = {
        (meter, stored.day): (float(stored.value), stored.quality)
        for meter in ("master", "c-1", "c-2")
        for stored in store.get_daily(meter, IMPORT_Q, days[0], days[-1])
        if stored.value is not None
    }
    losses = {}
    for row in store.pending(1000):
        message = decode_message(row.payload)
        if "loss" in message:
            losses[message["loss"]["day"]] = message["loss"]
    store.close()

    # gwtool: the same reads from the CSV.
    series = read_series(site / "reads.csv", lambda _meter: True, io.StringIO())
    gwtool_freezes = {}
    for meter in ("master", "c-1", "c-2"):
        for j, day in enumerate(days):
            value, quality = freeze_at(series[(meter, IMPORT_Q)], local_midnight(j), GAP)
            if quality != 4:
                gwtool_freezes[(meter, day)] = (value, "A" if quality == 0 else "E")
    records = run_reconcile(site / "gateway.toml", site / "reads.csv", io.StringIO(),
                            output_format="json")

    assert daemon_freezes == gwtool_freezes
    # The cases the rule must decide are all there: interpolated, the hole, the exchange.
    assert gwtool_freezes[("c-1", days[1])][1] == "E"
    assert ("c-2", days[2]) not in gwtool_freezes and ("c-2", days[3]) not in gwtool_freezes
    assert gwtool_freezes[("master", days[1])][1] == "A"

    assert [r.day for r in records] == sorted(losses) == [d.isoformat() for d in days[:-1]]
    for record in records:
        loss = losses[record.day]
        assert (loss["status"], loss["coverage"]) == (record.status, pytest.approx(record.coverage))
        if record.loss_pct is None:
            assert "loss_pct" not in loss
        else:
            assert loss["loss_pct"] == pytest.approx(record.loss_pct, abs=1e-9)
            assert float(loss["input"]) == pytest.approx(record.input_kwh, abs=1e-9)
            assert float(loss["output"]) == pytest.approx(record.output_kwh, abs=1e-9)
    assert any(r.loss_pct is not None for r in records)
