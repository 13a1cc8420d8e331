"""Daily line loss end to end: simulated DL/T 645 meters of one transformer area, the daemon as a
real subprocess, a real mosquitto (issue 5).

Acceleration, and why it is honest: the simulators' clock is a :class:`ManualClock` the test
steps one simulated day at a time. Each meter integrates its energy over that day and freezes
its registers at its own local 00:00 exactly as its firmware would (hil_tests/load_model.py);
the daemon reads the daily freeze (05060001 time, 05060101 import; 05060002/05060102 for the
day before) with ordinary polls and reconciles each day when every meter of the area has
reported the freeze that closes it. Nothing in the daemon knows it is a test: no period knob,
no test hook — the same code path runs in production, where the days are just longer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.store import Store
from hil_tests.dlt645_sim import Dlt645Meter, MeterSpec, build_meter
from hil_tests.load_model import LoadModel, ManualClock, SimMeter
from hil_tests.sim import Dlt645Rig, run_dlt645_line
from tests.broker import MosquittoBroker, Observer
from tests.gateway_rig import GatewayRig, decoded, wait_until, write_config

DAY_S = 86_400
#: The daily freezes and nothing else: the poll stays short, the daemon reads what it needs.
FREEZE_PROFILE = """\
kind = "dlt645"
version = "2007"
description = "test profile: the last two daily freezes"

[[reads]]
di = "05060001"      # time of the last daily freeze
optional = true      # a meter younger than a day has none yet

[[reads]]
di = "05060101"      # import registers frozen then
optional = true

[[reads]]
di = "05060002"      # the freeze before: a day missed while the gateway was down
optional = true

[[reads]]
di = "05060102"
optional = true
"""

# Small windows so a handful of simulated days teach the band and the customers' shares; the
# rules are the production ones, only their windows are shorter (every key is documented).
RECONCILE = """
[reconcile]
window_days = 10
min_history_days = 4
sustained_days = 3
suspect_baseline_days = 7
suspect_min_baseline_days = 4
suspect_recent_days = 2
"""

CUSTOMERS = (  # (address, phases, base kW): the thief is the biggest customer
    ("000000000301", 3, 4.0),
    ("000000000302", 1, 1.2),
    ("000000000303", 1, 1.6),
    ("000000000304", 1, 0.9),
)
MASTER_ADDRESS = "000000000300"
THIEF = "c-0301"
LOSS_FRACTION = 0.04


@contextlib.contextmanager
def area_rig(tmp_path: Path) -> Iterator[tuple[GatewayRig, dict[str, SimMeter]]]:
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    clock = ManualClock(0.0)
    rig = GatewayRig(tmp_path, broker, clock)
    model = LoadModel(seed=5, clock=clock)
    try:
        firmware: list[Dlt645Meter] = []
        sims: dict[str, SimMeter] = {}
        for address, phases, base_kw in CUSTOMERS:
            meter = build_meter(model, MeterSpec(address, phases=phases, base_kw=base_kw,
                                                 meter_id=f"c-{address[-4:]}"))
            firmware.append(meter)
            sims[f"c-{address[-4:]}"] = meter.sim
        master = model.master_meter("master", list(sims.values()), loss_fraction=LOSS_FRACTION)
        firmware.insert(0, Dlt645Meter(master, MASTER_ADDRESS))
        sims["master"] = master
        with run_dlt645_line(firmware, baudrate=19200, model=model, seed=5,
                             response_delay_ms=20) as line:
            yield _configure(rig, line), sims
    finally:
        if rig.process is not None:
            with contextlib.suppress(Exception):
                rig.kill_daemon()
        if broker.running:
            broker.kill()


def _configure(rig: GatewayRig, line: Dlt645Rig) -> GatewayRig:
    bus = {"name": "rs485-1", "protocol": "dlt645", "port": line.device, "baudrate": 19200, "turnaround_ms": 5,
           "parity": "N", "timeout_ms": 200, "retries": 1, "comm_loss_after": 3}
    meters = [{"id": "master", "bus": "rs485-1", "address": MASTER_ADDRESS,
               "profile": "freezes", "poll_interval_s": 0.5}]
    meters += [{"id": f"c-{address[-4:]}", "bus": "rs485-1", "address": address,
                "profile": "freezes", "poll_interval_s": 0.5} for address, _p, _kw in CUSTOMERS]
    members = ", ".join(f'{{ meter = "c-{address[-4:]}" }}' for address, _p, _kw in CUSTOMERS)
    write_config(rig, [bus], meters, extra=f"""
[[groups]]
id = "tq-1-subs"
members = [{members}]

[[areas]]
id = "tq-1"
master = "master"
subs = "tq-1-subs"
{RECONCILE}""")
    (rig.workdir / "profiles" / "freezes.toml").write_text(FREEZE_PROFILE)
    return rig


def loss_results(observer: Observer, rig: GatewayRig) -> dict[str, list[dict[str, Any]]]:
    """Every published area result by day (a list, so a day published twice shows)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for _topic, message in decoded(observer, rig.topic("groups/tq-1-subs")):
        if "loss" in message:
            out.setdefault(message["loss"]["day"], []).append(message)
    return out


def frozen(sim: SimMeter, day: dt.date) -> Decimal:
    """The import register the simulated meter froze at 00:00 of ``day`` (its own record)."""
    (freeze,) = [f for f in sim.sample().daily_freezes if f.day == day]
    return freeze.import_.total


def test_daily_line_loss_is_published_and_a_shunted_customer_is_the_top_suspect(
        tmp_path: Path) -> None:
    started = time.monotonic()
    with area_rig(tmp_path) as (rig, sims):
        with Observer(rig.broker, "mtr/v1/#", client_id="areas-observer") as observer:
            rig.start_daemon()
            start = dt.date(2025, 1, 1)  # the model starts at 2025-01-01 00:00 local

            def step(days: int = 1) -> dt.date:
                """Move the meters' time on; returns the last day their newest freeze closes."""
                rig.clock.advance(days * DAY_S)
                return start + dt.timedelta(days=round(rig.clock() / DAY_S) - 1)

            def wait_for(day: dt.date, timeout: float = 30) -> dict[str, Any]:
                ok = wait_until(lambda: day.isoformat() in loss_results(observer, rig), timeout)
                assert ok, f"no result for {day}\n{rig.log_text()[-3000:]}"
                return loss_results(observer, rig)[day.isoformat()][0]

            step()  # 2025-01-02 00:00: the first freeze opens 01-02; nothing to publish yet
            first_day = start + dt.timedelta(days=1)
            for _ in range(4):
                wait_for(step())
            # A gateway outage across two midnights: the meters keep their freezes, the daemon
            # reads lastN after the restart, and no day is lost or published twice.
            assert rig.stop_daemon() == 0
            last = step(2)
            rig.start_daemon()
            wait_for(last)
            honest_days = (last - first_day).days + 1
            sims[THIEF].set_theft_factor(Decimal("0.3"))  # from this midnight on
            theft_days = []
            for _ in range(3):
                theft_days.append(step())
                wait_for(theft_days[-1])
            assert rig.stop_daemon() == 0
        elapsed = time.monotonic() - started

    results = loss_results(observer, rig)
    days = sorted(results)
    expected_days = [(first_day + dt.timedelta(days=i)).isoformat()
                     for i in range(honest_days + len(theft_days))]
    assert days == expected_days, days
    assert all(len(results[d]) == 1 for d in days), "a day was published twice"

    for day_text in days:
        message = results[day_text][0]
        loss = message["loss"]
        day = dt.date.fromisoformat(day_text)
        following = day + dt.timedelta(days=1)
        master = frozen(sims["master"], following) - frozen(sims["master"], day)
        subs = sum(frozen(sims[c], following) - frozen(sims[c], day)
                   for c in sims if c != "master")
        # Exact energies from the meters' own frozen registers, the loss computed from them.
        assert loss["input"] == master and loss["output"] == subs, (day_text, loss)
        assert abs(loss["loss_pct"] - float((master - subs) / master * 100)) < 1e-3
        assert loss["coverage"] == 1.0
        (total,) = message["totals"]
        assert (total["day"], total["quality"], total["val"]) == (day_text, "A", subs)

    # The stored history (what later days and the band are computed from) is the meters' own
    # freezes, although the clock moved while polls were under way.
    with Store.open(rig.store_path) as store:
        for meter, sim in sims.items():
            stored = store.get_daily(meter, "energy.active.import.total", first_day,
                                     dt.date.fromisoformat(expected_days[-1]))
            assert [(v.day, v.value, v.quality) for v in stored] == [
                (v.day, frozen(sim, v.day), "A") for v in stored]
            assert len(stored) == len(expected_days), meter

    honest = [results[d][0]["loss"] for d in expected_days[:honest_days]]
    thefts = [results[d][0]["loss"] for d in expected_days[honest_days:]]
    assert all(r["status"] == "qualified" and not r["suspects"] for r in honest), honest
    # 4 % technical loss on the true load: (1.04 - 1) / 1.04.
    assert all(abs(r["loss_pct"] - 3.846) < 0.05 for r in honest), [r["loss_pct"] for r in honest]
    assert "band" in honest[-1], "the band is learned after min_history_days qualified days"

    for r in thefts:
        assert r["status"] == "high" and r["loss_pct"] > max(h["loss_pct"] for h in honest) + 5
    named = [r for r in thefts if r["suspects"]]
    assert named, thefts
    assert all(r["suspects"][0]["meter"] == THIEF for r in named), named
    top = named[-1]["suspects"][0]
    details = top["details"]
    assert details["recent_kwh_per_day"] < 0.5 * details["expected_kwh_per_day"]
    assert details["window_days"] == 2 and details["min_drop_pct"] == 20.0
    assert any("sustained drop" in line for line in top["evidence"])
    print(f"\nline loss: honest {[r['loss_pct'] for r in honest]}, theft "
          f"{[r['loss_pct'] for r in thefts]}; suspects {[r['suspects'][:1] for r in thefts]}; "
          f"{elapsed:.1f} s")
    log = rig.log_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
