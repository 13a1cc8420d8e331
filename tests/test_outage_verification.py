"""Restore verification (docs/outages.md, "Restore verification"): after an outage clears, the
meters' own power-down records (DL/T 645-2007 03110000 / 03110001) confirm the gateway's times
or not — in process, with fake meter reads and no waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

from gateway.acquisition.base import BusTimeout
from gateway.analytics.outages import (
    OUTAGE_AREA,
    OUTAGE_VERIFIED,
    POWER_DOWN_COUNT_DI,
    POWER_DOWN_LAST_DI,
    MeterRecord,
    PowerWatch,
    RestoreCheck,
    ServedArea,
    record_agreement,
    verification_details,
)
from protocols.dlt645.items import Reading
from tests.test_outages import T0_MS, FakeAlarms, drive

UTC8 = dt.timezone(dt.timedelta(hours=8))


def local(ms: int) -> dt.datetime:
    """A wall-clock instant as a UTC+8 meter writes it (naive, to the second)."""
    return dt.datetime.fromtimestamp(ms / 1000, UTC8).replace(tzinfo=None, microsecond=0)


def test_agreement_is_valid_only_when_start_and_end_are_within_tolerance() -> None:
    start, end = T0_MS, T0_MS + 600_000
    assert record_agreement(MeterRecord("m", 3, start + 59_000, end - 59_000), start, end) == "valid"
    assert record_agreement(MeterRecord("m", 3, start + 61_000, end), start, end) == "invalid"
    assert record_agreement(MeterRecord("m", 3, start, end + 61_000), start, end) == "invalid"
    assert record_agreement(MeterRecord("m", 3, start, None), start, end) == "invalid"  # open
    assert record_agreement(MeterRecord("m", error="timeout"), start, end) is None


def test_confirmed_needs_a_majority_of_the_meters_that_answered() -> None:
    start, end = T0_MS, T0_MS + 600_000
    good = MeterRecord("a", 1, start + 1000, end - 1000)
    old = MeterRecord("b", 1, start - 86_400_000, end - 86_400_000)  # yesterday's record
    silent = MeterRecord("c", error="no answer")
    verdict = verification_details("tq-1", [good, silent], start, end)
    assert verdict["confirmed"] is True and verdict["answered"] == 1
    assert verification_details("tq-1", [good, old], start, end)["confirmed"] is False
    assert verification_details("tq-1", [silent], start, end)["confirmed"] is False
    rows = verdict["records"]
    assert isinstance(rows, list)
    assert rows[0] == {"meter": "a", "count": 1, "start_ms": start + 1000, "end_ms": end - 1000,
                       "agreement": "valid"}
    assert rows[1] == {"meter": "c", "error": "no answer"}


class FakeMeters:
    """Meters answering 03110000/03110001 from a table; ``silent_rounds`` times silent first."""

    def __init__(self, records: dict[str, tuple[int, int]], silent_rounds: dict[str, int]) -> None:
        self.records = records
        self.silent_rounds = dict(silent_rounds)
        self.asked: list[tuple[str, int]] = []

    async def read(self, meter: str, di: int) -> Sequence[Reading]:
        self.asked.append((meter, di))
        if self.silent_rounds.get(meter, 0) > 0:
            self.silent_rounds[meter] -= 1
            raise BusTimeout(f"meter {meter}: no answer")
        start, end = self.records[meter]
        if di == POWER_DOWN_COUNT_DI:
            return (Reading("events.power_down.count", Decimal(4), "count"),)
        assert di == POWER_DOWN_LAST_DI
        return (Reading("events.power_down.last1.start", local(start), None),
                Reading("events.power_down.last1.end", local(end), None))


def test_an_outage_clear_goes_out_at_once_and_the_meters_confirm_it_later() -> None:
    area = ServedArea("tq-1", ("m-0", "m-1", "m-2", "m-x"), ())
    alarms = FakeAlarms()
    meters = FakeMeters({"m-0": (T0_MS + 1000, T0_MS + 10_000),
                         "m-1": (T0_MS + 1000, T0_MS + 10_000),
                         "m-2": (T0_MS, T0_MS + 10_000)}, silent_rounds={"m-1": 1})

    async def scenario() -> RestoreCheck:
        check = RestoreCheck(alarms, meters.read, lambda m: m != "m-x", sample=2,
                             utc_offset_min=480, rounds_s=(0.0, 0.01, 0.02))
        task = asyncio.create_task(check.run())
        watch = PowerWatch([area], check, min_duration_s=2, hold_up_s=30)
        drive(watch, 0.0, 10.0, 10.5)
        # The clear went out before any meter was asked.
        assert [e[:2] for e in alarms.events] == [("raised", OUTAGE_AREA), ("cleared", OUTAGE_AREA)]
        assert meters.asked == []
        for _ in range(100):
            if check.verdicts:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        return check

    check = asyncio.run(scenario())
    (verdict,) = check.verdicts
    assert verdict["confirmed"] is True and verdict["valid"] == 2
    # sample=2 of the readable meters (m-x is not DL/T 645-2007): m-0 and m-1, never m-2.
    assert {m for m, _ in meters.asked} == {"m-0", "m-1"}
    # m-1 was silent once: asked again in the next round only; m-0 only once.
    assert meters.asked.count(("m-0", POWER_DOWN_COUNT_DI)) == 1
    assert meters.asked.count(("m-1", POWER_DOWN_COUNT_DI)) == 2
    kinds = [(e[0], e[1]) for e in alarms.events]
    assert kinds[2:] == [("raised", OUTAGE_VERIFIED), ("cleared", OUTAGE_VERIFIED)]
    details = alarms.events[2][3]
    assert alarms.events[2][2] == "outage.verified/tq-1"
    records = details["records"]
    assert isinstance(records, list)
    assert [r["start_ms"] for r in records] == [T0_MS + 1000, T0_MS + 1000]
    assert details["start_ms"] == T0_MS and details["end_ms"] == T0_MS + 10_000


def test_a_momentary_clear_is_not_verified_and_silent_meters_are_not_retried_forever() -> None:
    area = ServedArea("tq-1", ("m-0",), ())
    alarms = FakeAlarms()
    meters = FakeMeters({}, silent_rounds={"m-0": 99})

    async def scenario() -> RestoreCheck:
        check = RestoreCheck(alarms, meters.read, lambda m: True, sample=5, utc_offset_min=480,
                             rounds_s=(0.0, 0.01, 0.02))
        task = asyncio.create_task(check.run())
        watch = PowerWatch([area], check, min_duration_s=60, hold_up_s=30)
        drive(watch, 0.0, 10.0, 10.5)  # reported, then withdrawn as momentary
        await asyncio.sleep(0.1)
        assert not check.verdicts and meters.asked == []
        watch.min_duration_s = 5
        drive(watch, 0.0, 10.0, 10.5)
        for _ in range(100):
            if check.verdicts:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        return check

    check = asyncio.run(scenario())
    (verdict,) = check.verdicts
    assert verdict["confirmed"] is False and verdict["answered"] == 0
    assert len(meters.asked) == 3  # one count read per round, three rounds, then the verdict

