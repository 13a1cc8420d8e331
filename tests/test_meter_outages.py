"""The meter and phase outage rules (gateway/pipeline/meter_outages.py) and the re-probe of the
poll schedule, without a daemon (docs/outages.md, "Meter and phase outages")."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.acquisition.schedule import PollSchedule, probe_set
from gateway.pipeline.bus_faults import AlarmChange
from gateway.pipeline.meter_outages import (
    FLAG_WITHDRAWN_REASON,
    OUTAGE_METER,
    OUTAGE_PHASE,
    WITHDRAWN_REASON,
    MeterOutages,
    MeterSite,
)

SITES = [MeterSite("a1", "bus", "a", "C-1", "tq"), MeterSite("a2", "bus", "a", "C-2", "tq"),
         MeterSite("a3", "bus", "a", None, "tq"), MeterSite("b1", "bus", "b", "C-4", "tq"),
         MeterSite("t1", "bus", "abc", "C-5", "tq")]


def mains_present() -> bool:
    return False


def poll(rules: MeterOutages, meter: str, ok: bool, t_ms: int,
         flags: dict[str, bool] | None = None, mains_lost: bool = False) -> list[AlarmChange]:
    return rules.on_poll(meter, ok, t_ms, flags or {}, lambda: mains_lost)


def all_answer(rules: MeterOutages, t_ms: int) -> None:
    for site in SITES:
        assert poll(rules, site.meter, True, t_ms) == []


def test_one_meter_silent_while_its_neighbours_answer_is_a_suspected_outage() -> None:
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    assert poll(rules, "a1", False, 60_000) == []        # one miss: the re-probe decides
    assert poll(rules, "a2", True, 61_000) == []         # a neighbour answers after the miss
    [change] = poll(rules, "a1", False, 61_500)          # the re-probe misses too
    assert (change.kind, change.key, change.state) == (OUTAGE_METER, "outage.meter/a1", "raised")
    assert change.details["confirmed"] is False
    assert change.details["customers"] == ["C-1"] and change.details["phase"] == "a"
    assert change.details["start_ms"] == 60_000 and change.details["area"] == "tq"
    assert change.details["planned"] is False
    assert poll(rules, "a1", False, 120_000) == []       # raised once


def test_outages_starting_in_a_planned_window_say_planned() -> None:
    """The same question outage.area asks (PlannedOutages.covers): area, meters, start."""
    asked: list[tuple[str, list[str], int]] = []

    def covers(area: str, meters: Sequence[str], start_ms: int) -> bool:
        asked.append((area, list(meters), start_ms))
        return start_ms >= 60_000

    rules = MeterOutages(SITES, planned=covers)
    all_answer(rules, 0)
    poll(rules, "a1", False, 60_000)
    poll(rules, "a2", True, 61_000)
    [meter] = poll(rules, "a1", False, 61_500)
    assert meter.details["planned"] is True and asked[-1] == ("tq", ["a1"], 60_000)
    [phase] = poll(rules, "t1", True, 62_000, {"b.phase_break": True})
    assert phase.details["planned"] is True and asked[-1] == ("tq", ["b1", "t1"], 62_000)


def test_a_neighbour_answer_from_before_the_miss_is_no_evidence() -> None:
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    assert poll(rules, "a1", False, 60_000) == []
    assert poll(rules, "a1", False, 61_000) == []  # neighbours not heard since: wait


def test_power_down_record_confirms_and_its_absence_withdraws() -> None:
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    poll(rules, "a1", False, 60_000)
    poll(rules, "a2", True, 61_000)
    poll(rules, "a1", False, 61_500)
    comm_loss = AlarmChange("comm_loss", "comm_loss/a1", "raised", "a1", {}, 62_000)
    assert rules.filter(comm_loss) == []                 # held while suspected
    assert poll(rules, "a1", True, 200_000) == []
    [check] = rules.checks
    assert (check.meter, check.silent_from_ms, check.back_ms) == ("a1", 0, 200_000)
    [clear] = rules.on_record(check, 30_000, 190_000, None, 201_000)
    assert clear.state == "cleared" and clear.details["confirmed"] is True
    assert clear.details["duration_s"] == 160.0 and clear.details["end_ms"] == 190_000
    # again, this time no record of the silence (an old one): withdrawn, comm_loss published
    rules.checks.clear()
    poll(rules, "a1", False, 300_000)
    poll(rules, "a2", True, 301_000)
    poll(rules, "a1", False, 301_500)
    assert rules.filter(comm_loss) == []
    poll(rules, "a1", True, 400_000)
    [check] = rules.checks
    clear, released = rules.on_record(check, 30_000, 190_000, None, 401_000)
    assert clear.details["withdrawn"] is True and clear.details["reason"] == WITHDRAWN_REASON
    assert clear.details["confirmed"] is False
    assert released is comm_loss
    assert rules.filter(comm_loss) == [comm_loss]        # no longer suspected: passes


def test_whole_phase_silent_with_another_phase_answering_is_a_phase_outage() -> None:
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    for meter in ("a1", "a2", "a3"):
        assert poll(rules, meter, False, 60_000) == []
    assert poll(rules, "a1", False, 61_000) == []
    assert poll(rules, "a2", False, 61_100) == []
    assert poll(rules, "b1", True, 61_200) == []  # the witness answers; a3 not missed twice yet
    [change] = poll(rules, "a3", False, 61_300)
    assert (change.kind, change.key, change.state) == (OUTAGE_PHASE, "outage.phase/bus/a",
                                                        "raised")
    assert change.details["meters"] == ["a1", "a2", "a3"]
    assert change.details["customers"] == ["C-1", "C-2"] and change.details["phase"] == "a"
    assert change.details["evidence"] == ["silent"]
    [clear] = poll(rules, "a2", True, 120_000)
    assert clear.state == "cleared" and clear.details["duration_s"] == 60.0


def test_a_whole_silent_bus_or_lost_mains_is_never_an_outage() -> None:
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    for t in (60_000, 61_000):
        for site in SITES:
            assert poll(rules, site.meter, False, t) == []
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    poll(rules, "a1", False, 60_000)
    poll(rules, "a2", True, 61_000)
    assert poll(rules, "a1", False, 61_500, mains_lost=True) == []


def test_three_phase_meter_reporting_a_phase_lost_raises_outage_phase() -> None:
    rules = MeterOutages(SITES)
    [change] = poll(rules, "t1", True, 1_000, {"b.phase_break": True, "a.phase_break": False})
    assert change.key == "outage.phase/bus/b" and change.state == "raised"
    assert change.details["meters"] == ["b1", "t1"]
    assert change.details["customers"] == ["C-4", "C-5"]
    assert change.details["evidence"] == ["t1:b.phase_break"]
    assert poll(rules, "t1", True, 2_000, {"b.phase_break": True}) == []
    assert poll(rules, "b1", False, 2_500) == []          # b1 dark too: the flag stands
    [clear] = poll(rules, "t1", True, 3_000, {"b.phase_break": False})
    assert clear.state == "cleared" and "withdrawn" not in clear.details
    assert clear.details["meters"] == ["b1", "t1"]  # as raised, though t1 reports no loss now


def test_no_outage_meter_for_a_meter_of_a_phase_already_out() -> None:
    """Phase b raised on t1's flag: b1 silent while its neighbour b2 answers (phase back for b2
    first) is the phase outage's silence, not a premise outage of its own."""
    sites = [*SITES, MeterSite("b2", "bus", "b", "C-6", "tq")]
    rules = MeterOutages(sites)
    for site in sites:
        rules.on_poll(site.meter, True, 0, {}, lambda: False)
    [raised] = rules.on_poll("t1", True, 60_000, {"b.phase_break": True}, lambda: False)
    assert raised.key == "outage.phase/bus/b"
    assert rules.on_poll("b1", False, 60_100, {}, lambda: False) == []
    assert rules.on_poll("b1", False, 61_100, {}, lambda: False) == []
    assert rules.on_poll("b2", True, 61_200, {}, lambda: False) == []   # flag still believed
    assert rules.on_poll("b1", False, 62_100, {}, lambda: False) == []  # no outage.meter


def test_voltage_loss_with_current_flowing_is_no_outage() -> None:
    """失压 (voltage_loss): the load is supplied, the meter's voltage input is at fault."""
    rules = MeterOutages(SITES)
    assert poll(rules, "t1", True, 1_000, {"b.voltage_loss": True}) == []


def test_a_phase_flag_contradicted_by_an_answering_neighbour_is_withdrawn() -> None:
    """t1 reports phase b broken while b1 (on phase b, same bus) answers after the flag: the
    feeder's phase b is live, the loss is in t1's own service (its fuse)."""
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    [raised] = poll(rules, "t1", True, 60_000, {"b.phase_break": True})
    assert raised.state == "raised"
    [withdrawn] = poll(rules, "b1", True, 60_500)
    assert withdrawn.state == "cleared" and withdrawn.details["withdrawn"] is True
    assert withdrawn.details["reason"] == FLAG_WITHDRAWN_REASON
    assert withdrawn.details["meters"] == ["b1", "t1"]
    assert poll(rules, "t1", True, 120_000, {"b.phase_break": True}) == []  # not raised again


def test_reprobe_pulls_one_poll_forward_without_moving_the_grid() -> None:
    schedule = PollSchedule(60.0, 0.0)
    schedule.start_poll(0.0)
    schedule.finish_poll(0.5, ok=False)
    assert schedule.next_due == 60.0
    assert schedule.reprobe(1.5) is True
    assert schedule.reprobe(2.0) is False               # one probe pending at most
    assert schedule.next_due == 1.5
    schedule.start_poll(1.5)
    schedule.finish_poll(1.8, ok=False)
    assert schedule.consecutive_failures == 2 and schedule.next_due == 60.0
    assert schedule.overruns == 0
    assert schedule.reprobe(61.0) is False              # the grid comes first anyway


def test_probe_set_is_the_phase_and_one_witness_of_each_other_phase() -> None:
    phases = {"a1": "a", "b1": "b", "a2": "a", "b2": "b", "t1": "abc"}
    assert probe_set("a1", phases) == ["a1", "a2", "b1", "t1"]
    assert probe_set("x", phases) == ["x"]


def test_meters_of_a_restored_phase_are_not_suspected_for_the_phase_outage() -> None:
    rules = MeterOutages(SITES)
    all_answer(rules, 0)
    for meter in ("a1", "a2", "a3", "a1", "a2"):
        poll(rules, meter, False, 60_000)
    poll(rules, "b1", True, 61_000)
    assert [c.kind for c in poll(rules, "a3", False, 61_300)] == [OUTAGE_PHASE]
    [clear] = poll(rules, "a2", True, 120_000)
    assert clear.state == "cleared"
    assert poll(rules, "a1", False, 120_500) == []   # a first new miss: not yet suspected


def test_a_missed_poll_is_reprobed_at_once_with_its_phase_neighbours() -> None:
    """The bus task (gateway/acquisition/base.py): a meter polled every 2 s, cut after its first
    poll, misses its next poll and is polled again ~1 s later, with its phase neighbour and a
    witness of the other phase, both polled every 30 s — long before their next slot."""
    import asyncio
    import time

    from gateway.acquisition.base import REPROBE_DELAY_S, BusSettings
    from gateway.acquisition.dlt645_bus import Dlt645Bus, Dlt645Meter, PlannedRead
    from gateway.acquisition.poll_result import PollResult
    from gateway.acquisition.serial_port import AsyncSerialPort
    from hil_tests.load_model import ManualClock
    from hil_tests.sim import run_dlt645_line
    from protocols import dlt645 as d

    addresses = ["000000000301", "000000000302", "000000000303"]
    with run_dlt645_line(addresses, baudrate=9600, clock=ManualClock(0.0)) as line:
        async def scenario() -> list[PollResult]:
            queue: asyncio.Queue = asyncio.Queue(maxsize=100)  # type: ignore[type-arg]
            now = time.monotonic()
            meters = [Dlt645Meter(meter_id=f"m{i}", address=a, schedule=PollSchedule(2.0 if i == 0 else 30.0, now),
                                  reads=[PlannedRead(d.ReadRequest(a, 0x0001FF00))])
                      for i, a in enumerate(addresses)]
            bus = Dlt645Bus("t", AsyncSerialPort(line.device, 9600, "N"), meters, queue,
                            BusSettings(timeout_s=0.2, retries=0))
            bus.phases = {"m0": "a", "m1": "a", "m2": "b"}
            task = asyncio.create_task(bus.run())
            await asyncio.sleep(0.5)
            line.cut_power(addresses[0])
            await asyncio.sleep(3.6 - (time.monotonic() - now))   # the grid's slot 2 is at 4 s
            bus.stop()
            await task
            results = []
            while not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, PollResult):
                    results.append(item)
            return results

        results = asyncio.run(scenario())
    polls = [(r.meter_id, r.ok) for r in results]
    assert polls[:3] == [("m0", True), ("m1", True), ("m2", True)]    # slot 0, before the cut
    assert polls[3] == ("m0", False)                                   # 2 s: the miss
    # ~REPROBE_DELAY_S later, before m0's slot at 4 s: its probe, its neighbour m1 and the
    # witness m2 (their own next slot is at 30 s)
    assert sorted(polls[4:]) == [("m0", False), ("m1", True), ("m2", True)], polls
    probe = [r for r in results if r.meter_id == "m0"][-1]
    assert probe.started_ms - results[3].finished_ms >= REPROBE_DELAY_S * 1000 - 50


def test_alarms_raised_before_a_restart_are_taken_up() -> None:
    rules = MeterOutages(SITES)
    rules.seed([("outage.meter/a1", 50_000), ("outage.phase/bus/b", 40_000),
                ("comm.bus/bus", 1), ("outage.meter/unknown", 1)])
    assert poll(rules, "a1", True, 90_000) == []
    [check] = rules.checks
    assert (check.silent_from_ms, check.back_ms) == (50_000, 90_000)
    [clear] = rules.on_record(check, 45_000, 85_000, None, 91_000)
    assert clear.details["confirmed"] is True and clear.details["duration_s"] == 40.0
    [phase] = poll(rules, "b1", True, 95_000)
    assert (phase.key, phase.state) == ("outage.phase/bus/b", "cleared")
    assert phase.details["duration_s"] == 55.0
