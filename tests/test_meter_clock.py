"""The meter-clock pieces that need no line: the DL/T 645 clock composition and offset, the
profile's [clock] table, the read cadence, and the time-sync rule walked verdict by verdict."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.acquisition.meter_clock import ClockCadence
from gateway.control.commands.journal import Journal, JournalEntry
from gateway.control.meter_clock.policy import (
    DAY_MS,
    SyncRule,
    SyncVerdict,
    clear_after_s,
    decide,
)
from gateway.control.meter_clock.runner import synced_days
from protocols.dlt645.clock import CLOCK_DIS, clock_offset_s, meter_clock
from protocols.dlt645.frame import Version
from protocols.modbus.clock import ModbusClock, decode_clock, encode_clock
from protocols.profiles import ProfileError, load_named_profile, parse_profile

UTC8 = 480
# 2026-03-04 10:00:00 in UTC+8, as gateway UTC ms
TEN_AM = int(dt.datetime(2026, 3, 4, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
             .timestamp() * 1000)


def local_ms(hh: int, mm: int, ss: int = 0) -> int:
    return TEN_AM + ((hh - 10) * 3600 + mm * 60 + ss) * 1000


# -- protocols/dlt645/clock.py ---------------------------------------------------------------

def test_the_second_date_read_decides_which_side_of_midnight_the_time_is() -> None:
    d1, d2 = dt.date(2026, 3, 4), dt.date(2026, 3, 5)
    assert meter_clock(d1, dt.time(12, 0), d1) == dt.datetime(2026, 3, 4, 12, 0)
    assert meter_clock(d1, dt.time(0, 0, 1), d2) == dt.datetime(2026, 3, 5, 0, 0, 1)
    assert meter_clock(d1, dt.time(23, 59, 59), d2) == dt.datetime(2026, 3, 4, 23, 59, 59)


def test_offset_is_meter_minus_gateway_with_the_truncated_half_second() -> None:
    meter = dt.datetime(2026, 3, 4, 10, 10, 0)  # local, 10 minutes ahead of TEN_AM
    assert clock_offset_s(meter, TEN_AM, UTC8) == pytest.approx(600.5)
    assert clock_offset_s(dt.datetime(2026, 3, 4, 2, 0, 0), TEN_AM, 0) == pytest.approx(0.5)
    assert CLOCK_DIS[Version.V2007] == (0x04000101, 0x04000102)
    assert CLOCK_DIS[Version.V1997] == (0xC010, 0xC011)


# -- profiles ----------------------------------------------------------------------------------

def test_shipped_profiles_read_the_clock_with_the_standard_items() -> None:
    assert load_named_profile("dlt645-2007").clock == ("04000101", "04000102")  # type: ignore[union-attr]
    assert load_named_profile("dlt645-1997").clock == ("C010", "C011")  # type: ignore[union-attr]
    plain = parse_profile('kind = "dlt645"\n[[reads]]\ndi = "00010000"\n', name="plain")
    assert plain.clock is None  # type: ignore[union-attr]


def test_a_clock_item_of_the_other_edition_is_located_and_explained() -> None:
    with pytest.raises(ProfileError) as raised:
        parse_profile('kind = "dlt645"\nversion = "2007"\n[clock]\ntime = "C011"\n'
                      '[[reads]]\ndi = "00010000"\n', name="bad")
    assert str(raised.value) == ("<memory>: clock.time: 'C011' is not a DL/T 645-2007 data "
                                 "identifier (8 hex digits, e.g. '04000102')")


# -- the cadence -------------------------------------------------------------------------------

def test_first_reads_are_spread_then_every_interval() -> None:
    firsts = [ClockCadence.staggered((1, 2), 86400, 3600, k, 4, 100.0).due for k in range(4)]
    assert firsts == [100.0, 1000.0, 1900.0, 2800.0]
    cadence = ClockCadence((1, 2), 86400, 0.0)
    assert cadence.is_due(0.0)
    cadence.read(10.0)
    assert cadence.due == 86410.0 and not cadence.is_due(86409.0)
    cadence.failed(20.0)
    assert cadence.due == 320.0  # a failed read is retried within minutes, not every poll


# -- the rule ----------------------------------------------------------------------------------

def rule(mode: str = "broadcast", freeze: tuple[str, ...] = ()) -> SyncRule:
    return SyncRule.create(mode, 900, 5, freeze, UTC8)


def verdict(r: SyncRule | None = None, **kw: object) -> SyncVerdict:
    args: dict[str, object] = {"resync": True, "offset_s": 600.0, "routable": True,
                               "trusted": True, "gateway_ms": TEN_AM, "last_sync_day": None}
    args.update(kw)
    return decide(r or rule(), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, SyncVerdict.SEND),
    ({"resync": False}, SyncVerdict.NOT_NEEDED),
    ({"routable": False}, SyncVerdict.NO_ROUTE),
    ({"trusted": False}, SyncVerdict.UNTRUSTED),
    ({"offset_s": -901.0}, SyncVerdict.TOO_FAR),
    ({"last_sync_day": TEN_AM // DAY_MS}, SyncVerdict.SYNCED_TODAY),
    ({"last_sync_day": TEN_AM // DAY_MS - 1}, SyncVerdict.SEND),
    ({"gateway_ms": local_ms(23, 52)}, SyncVerdict.NEAR_FREEZE),  # meter at 00:02
    ({"gateway_ms": local_ms(23, 44)}, SyncVerdict.SEND),  # meter at 23:54: clear of the guard
    ({"gateway_ms": local_ms(23, 46)}, SyncVerdict.NEAR_FREEZE),  # 23:56 is within 5 min
    ({"gateway_ms": local_ms(10, 0) + 14 * 3600_000 + 4 * 60_000, "offset_s": -600.0},
     SyncVerdict.NEAR_FREEZE),  # gateway 00:04, the meter 23:54 the day before
])
def test_each_verdict(kw: dict[str, object], expected: SyncVerdict) -> None:
    assert verdict(**kw) is expected


def test_alarm_only_and_off_never_send_and_freeze_times_are_guarded() -> None:
    assert verdict(rule("alarm-only")) is SyncVerdict.MODE
    assert verdict(rule("off")) is SyncVerdict.MODE
    assert verdict(rule("addressed")) is SyncVerdict.SEND
    assert verdict(rule(freeze=("10:12",))) is SyncVerdict.NEAR_FREEZE  # 10:00 → 10:10, +5 min
    assert verdict(rule(freeze=("10:16",))) is SyncVerdict.SEND


def test_a_broadcast_steps_every_meter_on_the_bus() -> None:
    # the meter asking is clear of midnight, another one on its bus is not
    late = local_ms(23, 40)
    assert verdict(gateway_ms=late, offset_s=300.0) is SyncVerdict.SEND
    assert verdict(gateway_ms=late, offset_s=300.0, bus_offsets_s=[900.0]) is \
        SyncVerdict.NEAR_FREEZE
    assert verdict(rule("addressed"), gateway_ms=late, offset_s=300.0,
                   bus_offsets_s=[900.0]) is SyncVerdict.SEND


@given(st.integers(0, DAY_MS - 1), st.floats(-900, 900), st.integers(0, 30),
       st.lists(st.integers(0, 1439), max_size=3))
def test_send_never_lets_the_span_touch_a_freeze(t: int, offset: float, guard: int,
                                                 freezes: list[int]) -> None:
    """Oracle: walk the span minute by minute in local time and look for a freeze minute."""
    times = tuple(f"{m // 60:02d}:{m % 60:02d}" for m in freezes)
    r = SyncRule.create("addressed", 900, guard, times, UTC8)
    g = TEN_AM - TEN_AM % DAY_MS + t
    result = verdict(r, gateway_ms=g, offset_s=offset)
    local = g + UTC8 * 60_000
    low = local + min(0, int(offset * 1000)) - guard * 60_000
    high = local + max(0, int(offset * 1000)) + guard * 60_000
    marks = {0, *freezes}
    touched = any((m // 60_000) % 1440 in marks and m % 60_000 == 0
                  for m in range(low - low % 60_000, high + 1, 60_000) if m >= low)
    assert (result is SyncVerdict.NEAR_FREEZE) == touched


# -- the journal remembers today's syncs across a restart --------------------------------------

def test_synced_days_come_from_the_gateways_accepted_time_syncs(tmp_path: Path) -> None:
    r = rule()
    with Journal.open(tmp_path / "audit.db") as journal:
        journal.append([JournalEntry("accepted", cmd=b"\x01" * 16, kid="gateway", details={
            "action": "time_sync", "meters": ["m-1", "m-2"]})], now_ms=TEN_AM)
        journal.record_outcome(b"\x01" * 16, "executed", "sent", now_ms=TEN_AM + 1)
        journal.append([JournalEntry("accepted", cmd=b"\x02" * 16, kid="op-1", details={
            "action": "time_sync", "meters": ["m-3"]})], now_ms=TEN_AM)  # an operator's command
        journal.append([JournalEntry("accepted", cmd=b"\x03" * 16, kid="gateway", details={
            "action": "time_sync", "meters": ["m-1"]})], now_ms=TEN_AM - DAY_MS)
        days = synced_days(journal.records(), r)
    assert days == {"m-1": r.local_day(TEN_AM), "m-2": r.local_day(TEN_AM)}
    assert verdict(r, last_sync_day=days["m-1"]) is SyncVerdict.SYNCED_TODAY


# -- a Modbus profile's clock -----------------------------------------------------------------

MODBUS = '''kind = "modbus"
{clock}
[[groups]]
[[groups.registers]]
quantity = "voltage.a"
address = 0x0010
type = "float32"
function = "input"
'''


def test_a_modbus_clock_is_six_registers_of_local_time() -> None:
    profile = parse_profile(MODBUS.format(clock="clock = { holding = 0x0100 }"), name="m")
    assert profile.clock == ModbusClock("holding", 0x0100)  # type: ignore[union-attr]
    moment = dt.datetime(2026, 3, 4, 23, 59, 58)
    assert decode_clock(encode_clock(moment)) == moment
    with pytest.raises(ValueError, match=r"clock registers \[2026, 13, 1, 0, 0, 0\]"):
        decode_clock([2026, 13, 1, 0, 0, 0])


@pytest.mark.parametrize(("clock", "message"), [
    ("clock = { coil = 1 }", "clock.coil: unknown key (allowed here: holding, input)"),
    ("clock = { input = 0xFFFF }", "clock.input: expected a register address 0..0xFFFA"),
    ("clock = { input = 0x000C }", "the clock's registers 0x000c..0x0011 overlap voltage.a"),
])
def test_a_bad_modbus_clock_is_located(clock: str, message: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(message)):
        parse_profile(MODBUS.format(clock=clock), name="m")


def test_after_near_freeze_the_clock_is_asked_again_once_the_span_has_passed() -> None:
    r = rule()
    late = local_ms(23, 58)
    assert verdict(gateway_ms=late) is SyncVerdict.NEAR_FREEZE
    wait = clear_after_s(r, [600.0])
    assert wait == 600 + 600 + 60
    assert verdict(gateway_ms=late + int(wait * 1000)) is SyncVerdict.SEND
    cadence = ClockCadence(None, 86400, 5000.0)
    cadence.soon(100.0, wait)
    assert cadence.due == 100.0 + wait
    cadence.soon(100.0, 1e9)  # never later than it already was
    assert cadence.due == 100.0 + wait
