"""Prepaid and monthly-energy inputs of load control, below the daemon (issue 17): the prepayment
DIs against the simulated meter's account, the profile's read cadence, the month-to-date energy
at a local month boundary, and the balance a poll reports. (The PyPI ``dlt645`` package used as
an oracle elsewhere has no prepayment items, so the DI layout is checked against hand-made BCD.)
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest

from edge_rules.groups import build_layout
from gateway.acquisition.dlt645_bus import Dlt645Meter as BusMeter
from gateway.acquisition.dlt645_bus import PlannedRead
from gateway.acquisition.factory import plan_dlt645, reports_balance
from gateway.acquisition.schedule import PollSchedule
from gateway.control.load_control.month_energy import MonthToDate
from gateway.control.load_control.runner import prepaid_balance
from hil_tests.dlt645_sim import Dlt645Meter
from hil_tests.load_model import LoadModel, ManualClock
from protocols.dlt645 import CATALOGUE_2007, ReadRequest
from protocols.profiles import ProfileError, load_named_profile, parse_profile

PLUS8 = dt.timezone(dt.timedelta(hours=8))


def test_prepayment_dis_decode_what_the_simulated_meter_holds_and_fall_with_consumption() -> None:
    clock = ManualClock(0.0)
    sim = LoadModel(seed=4, clock=clock).meter("p", base_kw=5.0)
    meter = Dlt645Meter(sim, "000000000001")
    assert meter.read(0x00900200) is None  # not prepaid: no_data, like a plain meter
    sim.set_prepaid(Decimal("20"), price=Decimal("2"))
    first = {r.name: r.value for r in CATALOGUE_2007.decode(0x009002FF, meter.read(0x009002FF))}
    assert first == {"prepaid.balance.money": Decimal("20.00"),
                     "prepaid.overdraft.money": Decimal("0.00")}
    clock.advance(7200)
    used = sim.sample().energy_import.total - Decimal(str(_opened(sim)))
    data = {r.name: r.value for r in CATALOGUE_2007.decode(0x009002FF, meter.read(0x009002FF))}
    left = Decimal(20) - 2 * used
    assert data["prepaid.balance.money"] - data["prepaid.overdraft.money"] == left
    assert (data["prepaid.balance.money"] == 0) or (data["prepaid.overdraft.money"] == 0)
    sim.recharge(Decimal("50"))
    count = CATALOGUE_2007.decode(0x03330201, meter.read(0x03330201))
    assert [(r.name, r.value) for r in count] == [("prepaid.purchase.money.count", Decimal(1))]
    assert meter.read(0x00900100) is None  # a money account has no energy balance
    status = CATALOGUE_2007.decode(0x04000503, meter.read(0x04000503))[0].value
    assert status["prepay_money"] and not status["prepay_energy"]  # type: ignore[index]


def _opened(sim: object) -> Decimal:
    return sim._prepaid.opened_kwh  # type: ignore[attr-defined, no-any-return]


def test_prepaid_parameters_are_in_the_catalogue() -> None:
    names = {di: CATALOGUE_2007.lookup(di).name for di in  # type: ignore[union-attr]
             (0x00900100, 0x00900101, 0x00900200, 0x00900201, 0x04001001, 0x04001005,
              0x04000F04, 0x03320201, 0x03330601)}
    assert names[0x00900200] == "prepaid.balance.money"
    assert names[0x00900201] == "prepaid.overdraft.money"
    assert names[0x00900100] == "prepaid.balance.energy"
    assert names[0x04001001] == "prepaid.limit.money.alarm1"
    assert names[0x04000F04] == "prepaid.limit.energy.overdraft"
    # XXXXXX.XX, low byte first: 00 12 34 56 on the wire is 1234.56 (after the -33H offset).
    assert CATALOGUE_2007.decode(0x00900200, bytes.fromhex("56341200"))[0].value == \
        Decimal("1234.56")
    assert CATALOGUE_2007.decode(0x03330201, bytes.fromhex("1200"))[0].value == Decimal(12)


def _profile(extra: str) -> str:
    return f'kind = "dlt645"\nversion = "2007"\n[[reads]]\ndi = "03330201"\n{extra}'


def test_profile_cadence_keys_are_checked() -> None:
    ok = parse_profile(_profile('[[reads]]\ndi = "009002FF"\nevery_s = 30\n'
                                'refresh_on = ["prepaid.purchase.money.count"]\n'), source="p", name="p")
    assert ok.reads[1].every_s == 30.0  # type: ignore[union-attr]
    with pytest.raises(ProfileError) as bad:
        parse_profile(_profile('[[reads]]\ndi = "009002FF"\nevery_s = 0\n'
                               'refresh_on = ["Not A Name"]\n'), source="p", name="p")
    text = str(bad.value)
    assert "reads[1].every_s: must be a positive number" in text
    assert "reads[1].refresh_on[0]" in text


def test_a_read_with_a_cadence_is_due_on_its_period_or_when_its_trigger_changed() -> None:
    profile = load_named_profile("dlt645-2007-prepaid")
    reads = plan_dlt645(profile, "000000000001")  # type: ignore[arg-type]
    meter = BusMeter(meter_id="m", address="000000000001",
                     schedule=PollSchedule.aligned(60, 0.0, 0.0), reads=reads)
    balance = reads[-1]
    assert reports_balance(meter)
    assert meter.read_due(balance, 100.0, set())  # never read: due
    meter.read_at[balance.request.di] = 100.0
    assert not meter.read_due(balance, 150.0, set())
    assert meter.read_due(balance, 150.0, {"prepaid.purchase.money.count"})
    assert meter.read_due(balance, 400.0, set())  # every_s = 300
    plain = PlannedRead(ReadRequest("000000000001", 0x00010000))
    assert meter.read_due(plain, 150.0, set())
    assert not reports_balance(BusMeter(meter_id="x", address="1",
                                        schedule=meter.schedule, reads=[plain]))


def test_balance_is_the_money_less_the_overdraft() -> None:
    assert prepaid_balance({"prepaid.balance.money": (0.0, 5.0),
                            "prepaid.overdraft.money": (3.5, 5.0)}) == (-3.5, 5.0)
    assert prepaid_balance({"prepaid.balance.energy": (12.0, 1.0)}) == (12.0, 1.0)
    assert prepaid_balance({"energy.active.import.total": (1.0, 1.0)}) is None


class _Member:
    def __init__(self, meter: str, sign: str = "+", direction: str = "import") -> None:
        self.meter, self.sign, self.direction = meter, sign, direction


class _Group:
    def __init__(self, gid: str, members: list[_Member]) -> None:
        self.id, self.members = gid, members


def _t(*args: int) -> float:
    return dt.datetime(*args, tzinfo=PLUS8).timestamp()


def test_month_to_date_interpolates_the_boundary_in_local_time_and_survives_a_restart() -> None:
    layout = build_layout([_Group("g", [_Member("a"), _Member("b", "-")])], {"a": 2.0, "b": 1.0})
    mtd = MonthToDate(layout, 480)
    # 23:50 and 00:10 local on either side of 1 March (+08:00): 100 → 120 kWh, boundary at 110.
    assert mtd.observe("a", "import", _t(2026, 2, 28, 23, 50), 100.0)
    assert mtd.observe("b", "import", _t(2026, 2, 28, 23, 55), 50.0)
    assert mtd.group_kwh(["g"], _t(2026, 2, 28, 23, 56)) == {"g": pytest.approx(0.0)}
    assert mtd.observe("a", "import", _t(2026, 3, 1, 0, 10), 120.0)  # a new baseline
    assert mtd.member_kwh("a", "import", _t(2026, 3, 1, 0, 10)) == pytest.approx(10.0)
    assert mtd.group_kwh(["g"], _t(2026, 3, 1, 0, 10)) == {}  # b not read this month yet
    # The same instant in UTC (16:10 on 28 Feb) is already March locally.
    assert dt.datetime.fromtimestamp(_t(2026, 3, 1, 0, 10), dt.UTC).month == 2
    restarted = MonthToDate(layout, 480, mtd.to_dict())
    assert restarted.observe("b", "import", _t(2026, 3, 1, 0, 5), 51.0)
    # a: 2 × 10 kWh; b subtracted: 1 × (51 - 50.5 interpolated at 00:00)
    assert restarted.group_kwh(["g"], _t(2026, 3, 1, 0, 10)) == {"g": pytest.approx(19.5)}
    # The wall clock stepping back into February changes nothing.
    assert not restarted.observe("a", "import", _t(2026, 2, 28, 23, 0), 90.0)
    assert restarted.member_kwh("a", "import", _t(2026, 3, 1, 0, 10)) == pytest.approx(10.0)
    # A month without reads: the first read is the baseline (never counts early).
    assert restarted.observe("a", "import", _t(2026, 5, 3, 12, 0), 500.0)
    assert restarted.member_kwh("a", "import", _t(2026, 5, 3, 12, 0)) == 0.0
    assert math.isnan(restarted.member_kwh("a", "import", _t(2026, 6, 1, 0, 1)))
