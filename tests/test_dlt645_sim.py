"""Simulated DL/T 645 meters on a real pty, talked to with pyserial and the project's codec.

The load model runs on a :class:`ManualClock`, so simulated time stands still between the test's
own steps and every register can be compared with the model for exact Decimal equality.
Most tests run the line at 9600 baud to stay fast; the timing itself is tested at 2400 in
``test_wire_timing.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from hil_tests.dlt645_sim import Dlt645Meter, MeterSpec, build_meter
from hil_tests.load_model import LoadModel, ManualClock
from hil_tests.serial_line import Faults, address_matches, collide, mangle_reply
from hil_tests.sim import Dlt645Rig, consecutive_addresses, run_dlt645_line
from protocols.dlt645 import (
    CATALOGUE_2007,
    AckReply,
    ChangeBaudReply,
    ChangeBaudRequest,
    ChecksumError,
    ControlAction,
    ControlRequest,
    ErrorReply,
    FrameSplitter,
    ReadAddressReply,
    ReadAddressRequest,
    ReadFollowupRequest,
    ReadReply,
    ReadRequest,
    TimeSyncRequest,
    TruncatedFrame,
    Version,
    WriteRequest,
    build_read_reply,
    decode,
    encode,
    parse_frame,
)
from protocols.dlt645.formats import Timestamp
from tests.dlt645_client import Dlt645Client

ROOT = Path(__file__).resolve().parent.parent
A1, A2, A3 = "000000000001", "000000000002", "000000000003"
BAUD = 9600
SEED = 11
START_LOCAL = dt.datetime(2025, 1, 1, 0, 0, 0)  # DEFAULT_START_EPOCH in the meters' UTC+8


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rig(clock: ManualClock) -> Iterator[Dlt645Rig]:
    with run_dlt645_line([A1, A2, A3], baudrate=BAUD, response_delay_ms=20, seed=SEED,
                         clock=clock) as running:
        yield running


@pytest.fixture
def client(rig: Dlt645Rig) -> Iterator[Dlt645Client]:
    with Dlt645Client(rig.device, BAUD) as c:
        yield c


def read(client: Dlt645Client, address: str, di: int, version: Version = Version.V2007) -> ReadReply:
    reply = client.request(ReadRequest(address, di, version))
    assert isinstance(reply, ReadReply), f"expected a read reply for {di:X}, got {reply!r}"
    assert reply.address == address and reply.di == di
    return reply


def values(reply: ReadReply) -> list[object]:
    return [r.value for r in reply.readings]


def energy(client: Dlt645Client, address: str) -> Decimal:
    """Import active energy total (00010000)."""
    (value,) = values(read(client, address, 0x00010000))
    assert isinstance(value, Decimal)
    return value


def control(address: str, action: ControlAction, *, valid_until: dt.datetime | None = None,
            password: str = "000000", level: int = 0x02) -> ControlRequest:
    return ControlRequest(address, action, valid_until or START_LOCAL + dt.timedelta(hours=1),
                          password_level=level, password=password)


# ---------------------------------------------------------------------------------------------------
# Registers against the model


def test_energy_register_is_the_model_register_exactly(rig: Dlt645Rig, client: Dlt645Client,
                                                        clock: ManualClock) -> None:
    clock.advance(5 * 3600)
    (reading,) = read(client, A1, 0x00010000).readings
    snapshot = rig.meters[A1].sim.snapshot()
    assert reading.name == "energy.active.import.total" and reading.unit == "kWh"
    assert reading.value == snapshot.energy_import.total
    assert str(reading.value) == str(snapshot.energy_import.total)  # same 0.01 kWh exponent

    # An independent model with the same seed, advanced the same way, says the same.
    twin_clock = ManualClock()
    twin = LoadModel(seed=SEED, clock=twin_clock).meter(A1)
    twin_clock.advance(5 * 3600)
    assert reading.value == twin.sample().energy_import.total


def test_a_spike_knob_glitches_one_read_of_the_import_total(rig: Dlt645Rig,
                                                           client: Dlt645Client,
                                                           clock: ManualClock) -> None:
    """``spike_next_read``: the next read of 00010000 (here inside its block 0001FF00) reports
    the register plus the spike, once; the next reads (and the model) are the true register."""
    clock.advance(5 * 3600)
    rig.meters[A1].spike_next_read(Decimal("25"))
    total, *tariffs = values(read(client, A1, 0x0001FF00))
    true = rig.meters[A1].sim.snapshot().energy_import.total
    assert total == true + 25 and sum(tariffs) == true  # type: ignore[arg-type]
    assert energy(client, A1) == true == rig.meters[A1].sim.snapshot().energy_import.total
    assert energy(client, A2) == rig.meters[A2].sim.snapshot().energy_import.total


def test_block_reads_match_the_snapshot(rig: Dlt645Rig, client: Dlt645Client,
                                        clock: ManualClock) -> None:
    clock.advance(19 * 3600)  # evening peak: every register and phase carries load
    s = rig.meters[A2].sim.sample()
    phases = s.phase_values
    expected = {
        0x0001FF00: [s.energy_import.total, *s.energy_import.tariffs],
        0x0000FF00: [s.energy_combined.total, *s.energy_combined.tariffs],
        0x0201FF00: [p.voltage_v for p in phases],
        0x0202FF00: [p.current_a for p in phases],
        0x0203FF00: [s.active_kw, *(p.active_kw for p in phases)],
        0x0206FF00: [s.power_factor, *(p.power_factor for p in phases)],
        0x02800002: [s.frequency_hz],
        0x0101FF00: [s.max_demand.kw, None, *[x for d in s.max_demand_by_tariff
                                               for x in (d.kw, None)]],
    }
    for di, want in expected.items():
        got = values(read(client, A2, di))
        if di == 0x0101FF00:  # demand: compare values, check times separately below
            got = [v if not isinstance(v, dt.datetime) else None for v in got]
        assert got == want, f"DI {di:08X}"
    assert sum(s.energy_import.tariffs) == s.energy_import.total
    assert sum(p.active_kw for p in phases) == s.active_kw


def test_unknown_di_and_settlement_days_are_no_data(client: Dlt645Client) -> None:
    for di in (0x12345678, 0x00010001, 0x00090000, 0x00010500, 0x0207FF00):
        reply = client.request(ReadRequest(A1, di))
        assert isinstance(reply, ErrorReply), f"DI {di:08X}"
        assert reply.errors == ("no_data",) and reply.error_word == 0x02


def test_identity_and_clock_items(rig: Dlt645Rig, client: Dlt645Client, clock: ManualClock) -> None:
    clock.advance(3723)  # 01:02:03 local
    assert values(read(client, A3, 0x04000401)) == [A3]
    assert values(read(client, A3, 0x04000402)) == [A3]
    assert values(read(client, A3, 0x04000101)) == [dt.date(2025, 1, 1)]
    assert values(read(client, A3, 0x04000102)) == [dt.time(1, 2, 3)]


# ---------------------------------------------------------------------------------------------------
# Functions


def test_broadcast_time_sync_sets_the_clock_without_reply(rig: Dlt645Rig,
                                                          client: Dlt645Client) -> None:
    before = rig.stats
    moment = dt.datetime(2026, 3, 4, 5, 6, 7)
    received = client.exchange(encode(TimeSyncRequest(moment)), timeout=0.3)
    assert received.data == b""
    after = rig.stats
    for address in (A1, A2, A3):
        assert after[address].requests_seen == before[address].requests_seen + 1
        assert after[address].replies_sent == before[address].replies_sent
        assert values(read(client, address, 0x04000101)) == [moment.date()]
        assert values(read(client, address, 0x04000102)) == [moment.time()]


def test_write_clock_needs_the_password(rig: Dlt645Rig, client: Dlt645Client,
                                        clock: ManualClock) -> None:
    clock.advance(1)  # the codec reads an all-zero time (exactly midnight) as "no time"
    new_time = Timestamp("hhmmss").encode(dt.time(12, 34, 56))
    refused = client.request(WriteRequest(A1, 0x04000102, new_time, password="123456"))
    assert isinstance(refused, ErrorReply) and refused.errors == ("password_error",)
    assert values(read(client, A1, 0x04000102)) == [dt.time(0, 0, 1)]
    ack = client.request(WriteRequest(A1, 0x04000102, new_time))
    assert ack == AckReply(A1, "write_data")
    assert values(read(client, A1, 0x04000102)) == [dt.time(12, 34, 56)]
    assert values(read(client, A1, 0x04000101)) == [dt.date(2025, 1, 1)]


def test_a_drifting_clock_gains_its_rate_and_a_sync_restarts_the_drift(clock: ManualClock) -> None:
    model = LoadModel(seed=SEED, clock=clock)
    meter = build_meter(model, MeterSpec(A1, clock_offset_s=600.0, clock_drift_s_per_day=8.0))
    with run_dlt645_line([meter], baudrate=BAUD, model=model) as line, \
            Dlt645Client(line.device, BAUD) as client:
        clock.advance(3 * 3600)  # 03:00 true; the meter gained 1 s on top of its 10 minutes
        assert values(read(client, A1, 0x04000102)) == [dt.time(3, 10, 1)]
        moment = dt.datetime(2025, 1, 1, 3, 0, 0)
        client.exchange(encode(TimeSyncRequest(moment)), timeout=0.3)
        assert meter.clock_syncs == 1
        assert values(read(client, A1, 0x04000102)) == [dt.time(3, 0, 0)]
        clock.advance(86400)  # a day later it is 8 s fast again
        assert values(read(client, A1, 0x04000101)) == [dt.date(2025, 1, 2)]
        assert values(read(client, A1, 0x04000102)) == [dt.time(3, 0, 8)]


def test_trip_opens_the_relay_and_stops_the_energy(rig: Dlt645Rig, client: Dlt645Client,
                                                   clock: ManualClock) -> None:
    clock.advance(8 * 3600)
    first = energy(client, A1)
    clock.advance(1800)
    running = energy(client, A1)
    assert running > first
    neighbour = energy(client, A2)

    assert client.request(control(A1, ControlAction.TRIP,
                                  valid_until=START_LOCAL + dt.timedelta(hours=9))) \
        == AckReply(A1, "control")
    word3 = values(read(client, A1, 0x04000503))[0]
    assert isinstance(word3, dict)
    assert word3["relay_open"] and word3["relay_command_trip"]
    tripped = energy(client, A1)
    clock.advance(3 * 3600)
    assert energy(client, A1) == tripped  # no load, no energy
    assert values(read(client, A1, 0x0203FF00))[0] == Decimal("0.0000")
    assert energy(client, A2) > neighbour  # the neighbour still consumes

    assert client.request(control(A1, ControlAction.DIRECT_CLOSE,
                                  valid_until=START_LOCAL + dt.timedelta(hours=12))) \
        == AckReply(A1, "control")
    word3 = values(read(client, A1, 0x04000503))[0]
    assert isinstance(word3, dict) and not word3["relay_open"]
    clock.advance(1800)
    assert energy(client, A1) > tripped


def test_control_checks_password_deadline_and_protect(rig: Dlt645Rig,
                                                      client: Dlt645Client) -> None:
    wrong = client.request(control(A1, ControlAction.TRIP, password="999999"))
    assert isinstance(wrong, ErrorReply) and wrong.errors == ("password_error",)
    assert wrong.error_word == 0x04
    weak_level = client.request(control(A1, ControlAction.TRIP, level=0x04))
    assert isinstance(weak_level, ErrorReply) and weak_level.errors == ("password_error",)
    expired = client.request(control(A1, ControlAction.TRIP,
                                     valid_until=START_LOCAL - dt.timedelta(seconds=1)))
    assert isinstance(expired, ErrorReply) and expired.errors == ("other_error",)
    assert client.request(control(A1, ControlAction.PROTECT)) == AckReply(A1, "control")
    protected = client.request(control(A1, ControlAction.TRIP))
    assert isinstance(protected, ErrorReply)
    assert client.request(control(A1, ControlAction.ALARM)) == AckReply(A1, "control")
    word3 = values(read(client, A1, 0x04000503))[0]
    assert isinstance(word3, dict)
    assert word3["protect"] and word3["pre_trip_alarm"] and not word3["relay_open"]


def test_allow_close_keeps_the_relay_open_until_the_customer_closes(
        rig: Dlt645Rig, client: Dlt645Client) -> None:
    assert client.request(control(A2, ControlAction.TRIP)) == AckReply(A2, "control")
    assert client.request(control(A2, ControlAction.ALLOW_CLOSE)) == AckReply(A2, "control")
    word3 = values(read(client, A2, 0x04000503))[0]
    assert isinstance(word3, dict) and word3["relay_open"] and not word3["relay_command_trip"]
    rig.meters[A2].sim.customer_close()
    word3 = values(read(client, A2, 0x04000503))[0]
    assert isinstance(word3, dict) and not word3["relay_open"]


def test_change_baud_replies_then_switches(rig: Dlt645Rig, client: Dlt645Client) -> None:
    assert client.request(ChangeBaudRequest(A3, 2400)) == ChangeBaudReply(A3, 2400)
    assert rig.line.baudrate_of(A3) == 2400
    assert client.request(ReadRequest(A3, 0x04000401), timeout=0.3) is None  # still at 9600
    assert rig.stats[A3].wrong_baud == 1
    client.set_baudrate(2400)
    assert values(read(client, A3, 0x04000401)) == [A3]


def test_followup_frames_carry_a_long_block(rig: Dlt645Rig, client: Dlt645Client) -> None:
    meter = rig.meters[A1]
    meter.open_cover()
    meter.close_cover()
    whole = meter.read(0x03300DFF)
    assert whole is not None and len(whole) == 3 + 10 * 60
    first = read(client, A1, 0x03300DFF)
    assert first.more_follows and len(first.data) <= 196
    assert first.readings == ()  # a first frame with follow-ups is decoded only once joined
    data, seq = first.data, 1
    more = True
    while more:
        # parse_frame: this test checks the wire layout of each follow-up frame itself.
        (frame,) = client.exchange(encode(ReadFollowupRequest(A1, 0x03300DFF, seq)),
                                   until_frame=True).frames
        raw = parse_frame(frame)
        assert raw.control.function == 0x12 and raw.control.reply and raw.address == A1
        assert raw.data[:4] == (0x03300DFF).to_bytes(4, "little") and raw.data[-1] == seq
        data += raw.data[4:-1]
        more, seq = raw.control.more_follows, seq + 1
    assert data == whole and seq == 4  # 603 bytes: 183 + 180 + 180 + 60, never a split item
    joined = CATALOGUE_2007.decode(0x03300DFF, data)
    assert joined[0].value == Decimal(1)  # one cover opening


def test_events_power_down_cover_and_voltage_loss(rig: Dlt645Rig, client: Dlt645Client,
                                                  clock: ManualClock) -> None:
    meter = rig.meters[A2]
    clock.advance(600)
    meter.power_off()
    assert client.request(ReadRequest(A2, 0x04000401), timeout=0.3) is None  # no supply, silent
    clock.advance(120)
    meter.power_on()
    assert values(read(client, A2, 0x03110000)) == [Decimal(1)]
    assert values(read(client, A2, 0x03110001)) == [START_LOCAL + dt.timedelta(seconds=600),
                                                    START_LOCAL + dt.timedelta(seconds=720)]
    assert values(read(client, A2, 0x03110002)) == [None, None]  # never happened
    word7 = values(read(client, A2, 0x04000507))[0]
    assert isinstance(word7, dict) and not word7["power_down"]  # a state bit: power is back

    clock.advance(60)
    before = meter.sim.sample()
    meter.open_cover()
    word7 = values(read(client, A2, 0x04000507))[0]
    assert isinstance(word7, dict) and word7["cover_open"]
    clock.advance(3600)
    meter.close_cover()
    after = meter.sim.sample()
    record = values(read(client, A2, 0x03300D01))
    assert record[:2] == [START_LOCAL + dt.timedelta(seconds=780),
                          START_LOCAL + dt.timedelta(seconds=4380)]
    assert record[2] == before.energy_import.total and record[8] == after.energy_import.total
    assert after.energy_import.total > before.energy_import.total

    meter.set_loss_of_voltage("b", True)
    word5 = values(read(client, A2, 0x04000505))[0]
    assert isinstance(word5, dict) and word5["b.voltage_loss"]
    clock.advance(330)
    meter.set_loss_of_voltage("b", False)
    loss = values(read(client, A2, 0x03010000))
    assert loss == [Decimal(0), Decimal(0), Decimal(1), Decimal(5), Decimal(0), Decimal(0)]


def test_phase_break_reported_in_the_phase_status_word(rig: Dlt645Rig,
                                                       client: Dlt645Client) -> None:
    """A three-phase meter whose supply loses phase b answers on (fed from a and c) and reports
    断相 (bit 7 of status word 5), not 失压 (bit 0: voltage gone while current flows), with no
    voltage and no current on b; status words 4 and 6 stay clear."""
    rig.cut_phase("b", three_phase=[A2])
    word4, word5, word6, word7 = (values(read(client, A2, 0x04000500 | n))[0] for n in (4, 5, 6, 7))
    assert isinstance(word5, dict) and word5["b.phase_break"] and not word5["b.voltage_loss"]
    assert isinstance(word4, dict) and not any(word4.values())
    assert isinstance(word6, dict) and not any(word6.values())
    assert isinstance(word7, dict) and not word7["power_down"]
    assert values(read(client, A2, 0x02010200)) == [Decimal(0)]
    assert values(read(client, A2, 0x02020200)) == [Decimal(0)]
    block = values(read(client, A2, 0x040005FF))  # status words 1..7 in one transaction
    assert len(block) == 7 and block[4] == word5
    rig.cut_phase("b", three_phase=[A2], cut=False)
    word5 = values(read(client, A2, 0x04000505))[0]
    assert isinstance(word5, dict) and not word5["b.phase_break"]


def test_daily_freeze(rig: Dlt645Rig, client: Dlt645Client, clock: ManualClock) -> None:
    no_freeze_yet = client.request(ReadRequest(A1, 0x05060001))
    assert isinstance(no_freeze_yet, ErrorReply) and no_freeze_yet.errors == ("no_data",)
    clock.advance(26 * 3600)  # past the first local midnight
    freeze = rig.meters[A1].sim.sample().daily_freezes[0]
    assert values(read(client, A1, 0x05060001)) == [dt.datetime(2025, 1, 2, 0, 0)]
    assert values(read(client, A1, 0x05060101)) == [freeze.import_.total, *freeze.import_.tariffs]
    assert values(read(client, A1, 0x05060201)) == [freeze.export.total, *freeze.export.tariffs]


# ---------------------------------------------------------------------------------------------------
# Addressing on a shared line


def test_only_the_addressed_meter_answers(rig: Dlt645Rig, client: Dlt645Client) -> None:
    reply = read(client, A2, 0x04000401)
    assert values(reply) == [A2]
    stats = rig.stats
    assert (stats[A1].requests_seen, stats[A2].requests_seen, stats[A3].requests_seen) == (0, 1, 0)
    assert (stats[A1].replies_sent, stats[A2].replies_sent, stats[A3].replies_sent) == (0, 1, 0)
    assert client.request(ReadRequest("000000000099", 0x04000401), timeout=0.3) is None
    assert rig.line_stats.unaddressed == 1


def test_wildcard_read_address_collides_with_several_meters(rig: Dlt645Rig,
                                                            client: Dlt645Client) -> None:
    received = client.exchange(encode(ReadAddressRequest()))
    assert received.data, "colliding meters still put bytes on the line"
    assert received.frames == []  # ... but never a valid frame
    assert rig.line_stats.collisions == 1
    assert all(s.replies_sent == 1 for s in rig.stats.values())


def test_wildcard_read_address_with_one_meter(clock: ManualClock) -> None:
    with run_dlt645_line(["123456789012"], baudrate=BAUD, clock=clock) as alone, \
            Dlt645Client(alone.device, BAUD) as client:
        assert client.request(ReadAddressRequest()) == ReadAddressReply("123456789012")


# ---------------------------------------------------------------------------------------------------
# -1997 meters on the same line


def test_1997_and_2007_meters_share_a_line(clock: ManualClock) -> None:
    old, new = "000000000097", "000000000007"
    specs = [MeterSpec(old, version=1997), MeterSpec(new)]
    with run_dlt645_line(specs, baudrate=BAUD, clock=clock, seed=SEED) as rig, \
            Dlt645Client(rig.device, BAUD) as client:
        clock.advance(20 * 3600 + 5)
        s = rig.meters[old].sim.sample()
        v97 = Version.V1997
        assert values(read(client, old, 0x9010, v97)) == [s.energy_import.total]
        assert values(read(client, old, 0x901F, v97)) == [s.energy_import.total,
                                                          *s.energy_import.tariffs]
        volts = values(read(client, old, 0xB611, v97))[0]
        assert volts == s.phase_values[0].voltage_v.quantize(Decimal(1))  # -1997: whole volts
        amps = values(read(client, old, 0xB621, v97))[0]
        assert isinstance(amps, Decimal) and abs(amps - s.phase_values[0].current_a) <= Decimal("0.005")
        assert values(read(client, old, 0xB630, v97)) == [s.active_kw]
        assert values(read(client, old, 0xB650, v97)) == [abs(s.power_factor)]
        assert values(read(client, old, 0xC010, v97)) == [dt.date(2025, 1, 1)]
        assert values(read(client, old, 0xC011, v97)) == [dt.time(20, 0, 5)]
        assert values(read(client, old, 0xC032, v97)) == [old]
        # Each edition ignores the other's read; 08H time sync reaches both.
        assert client.request(ReadRequest(old, 0x00010000), timeout=0.3) is None
        assert client.request(ReadRequest(new, 0x9010, v97), timeout=0.3) is None
        client.send(encode(TimeSyncRequest(dt.datetime(2030, 1, 2, 3, 4, 5))))
        assert values(read(client, old, 0xC010, v97)) == [dt.date(2030, 1, 2)]
        assert values(read(client, new, 0x04000101)) == [dt.date(2030, 1, 2)]
        unknown = client.request(ReadRequest(old, 0x1234, v97))
        assert isinstance(unknown, ErrorReply) and unknown.errors == ("bad_data_identifier",)


# ---------------------------------------------------------------------------------------------------
# Faults, on the wire


def _healthy_reply(client: Dlt645Client, address: str) -> bytes:
    (frame,) = client.exchange(encode(ReadRequest(address, 0x00010000)), until_frame=True).frames
    return frame


def test_fault_no_reply(rig: Dlt645Rig, client: Dlt645Client) -> None:
    rig.set_faults(A1, no_reply=True)
    assert client.exchange(encode(ReadRequest(A1, 0x00010000)), timeout=0.3).data == b""
    assert rig.stats[A1].requests_seen == 1 and rig.stats[A1].replies_sent == 0
    # The meter still acts on what it hears: a trip with no answer still trips.
    client.exchange(encode(control(A1, ControlAction.TRIP)), timeout=0.3)
    assert rig.meters[A1].sim.sample().status.relay_open
    rig.set_faults(A1)
    assert client.request(ReadRequest(A1, 0x00010000)) is not None


def test_fault_late_reply(rig: Dlt645Rig, client: Dlt645Client) -> None:
    healthy = _healthy_reply(client, A1)
    rig.set_faults(A1, late_s=0.4)
    early = client.exchange(encode(ReadRequest(A1, 0x00010000)), timeout=0.3)
    assert early.data == b""  # a client with a 300 ms timeout gives up ...
    late = client.listen(0.4)
    assert late == healthy  # ... and the reply comes anyway, intact


def test_fault_corrupt_checksum(rig: Dlt645Rig, client: Dlt645Client) -> None:
    healthy = _healthy_reply(client, A1)
    rig.set_faults(A1, corrupt_checksum=True)
    data = client.exchange(encode(ReadRequest(A1, 0x00010000))).data
    assert len(data) == len(healthy) and data[:-2] == healthy[:-2]
    with pytest.raises(ChecksumError):
        parse_frame(data)


def test_fault_noise_before_and_preamble(rig: Dlt645Rig, client: Dlt645Client) -> None:
    healthy = _healthy_reply(client, A1)
    rig.set_faults(A1, noise_before=7, preamble=4)
    received = client.exchange(encode(ReadRequest(A1, 0x00010000)))
    assert len(received.data) == 7 + 4 + len(healthy)
    assert received.data.endswith(b"\xfe" * 4 + healthy)
    assert healthy in received.frames  # a splitter still resynchronises


def test_fault_noise_inside_breaks_the_frame(rig: Dlt645Rig, client: Dlt645Client) -> None:
    healthy = _healthy_reply(client, A1)
    rig.set_faults(A1, noise_inside=3)
    received = client.exchange(encode(ReadRequest(A1, 0x00010000)))
    assert len(received.data) == len(healthy) + 3
    assert received.data[:10] == healthy[:10] and received.data[-4:] == healthy[-4:]
    assert healthy not in received.frames


def test_fault_truncated(rig: Dlt645Rig, client: Dlt645Client) -> None:
    healthy = _healthy_reply(client, A1)
    rig.set_faults(A1, truncate=3)
    data = client.exchange(encode(ReadRequest(A1, 0x00010000))).data
    assert data == healthy[:-3]
    with pytest.raises(TruncatedFrame):
        parse_frame(data)


def test_fault_wrong_address(rig: Dlt645Rig, client: Dlt645Client) -> None:
    rig.set_faults(A1, wrong_address=A3)
    reply = client.request(ReadRequest(A1, 0x00010000))
    assert isinstance(reply, ReadReply) and reply.address == A3  # a valid frame, wrong meter
    assert rig.stats[A3].replies_sent == 0


@pytest.mark.parametrize(("error", "word"), [("no_data", 0x02), ("password_error", 0x04)])
def test_fault_error_reply(rig: Dlt645Rig, client: Dlt645Client, error: str, word: int) -> None:
    rig.set_faults(A2, error=error)
    reply = client.request(ReadRequest(A2, 0x00010000))
    assert reply == ErrorReply(A2, "read_data", word, (error,))


def test_fault_count_expires(rig: Dlt645Rig, client: Dlt645Client) -> None:
    rig.set_faults(A1, no_reply=True, count=2)
    assert client.request(ReadRequest(A1, 0x00010000), timeout=0.25) is None
    assert client.request(ReadRequest(A1, 0x00010000), timeout=0.25) is None
    assert isinstance(client.request(ReadRequest(A1, 0x00010000)), ReadReply)
    assert rig.line.faults(A1) == Faults()
    assert rig.stats[A1].faults_applied == 2


def test_request_during_a_reply_is_a_collision(rig: Dlt645Rig, client: Dlt645Client) -> None:
    client.send(encode(ReadRequest(A1, 0x03300DFF)))
    head = client.listen(0.06)  # A1's 199-byte reply is now on the line (~230 ms at 9600)
    assert head
    client.send(encode(ReadRequest(A2, 0x04000401)))
    frames = FrameSplitter().feed(head + client.listen(0.5))
    assert [decode(f).address for f in frames] == [A1]
    assert rig.line_stats.collisions == 1
    assert rig.stats[A2].requests_seen == 0


# ---------------------------------------------------------------------------------------------------
# Sans-IO pieces


def test_address_matching() -> None:
    assert address_matches("000102030425", "000102030425")
    assert not address_matches("000102030425", "000102030426")
    assert address_matches("000102030425", "AAAAAAAAAAAA")
    assert address_matches("000102030425", "AAAAAAAAAA25")
    assert not address_matches("000102030425", "AAAAAAAAAA26")
    assert address_matches("000102030425", "999999999999")


def test_collide_never_yields_a_valid_frame() -> None:
    rng = random.Random(5)
    for _ in range(300):
        a, b = (f"{rng.randrange(10**12):012d}" for _ in range(2))
        frames = [encode(ReadAddressReply(a)), encode(ReadAddressReply(b))]
        merged = collide(frames)
        assert len(merged) == len(frames[0])
        if a != b:
            assert FrameSplitter().feed(merged) == []
    same = encode(ReadAddressReply("000000000001"))
    assert FrameSplitter().feed(collide([same, same])) == []


def test_mangle_reply_is_identity_when_healthy() -> None:
    frame = encode(build_read_reply(A1, 0x00010000, [Decimal("12.34")]))
    assert mangle_reply(frame, Faults(), random.Random(0)) == frame
    wrong = mangle_reply(frame, Faults(wrong_address=A2), random.Random(0))
    assert decode(wrong) == decode(encode(build_read_reply(A2, 0x00010000, [Decimal("12.34")])))


@pytest.mark.parametrize("knobs", [
    {"late_s": -1}, {"noise_before": -1}, {"preamble": 17}, {"error": "bogus"},
    {"wrong_address": "12"}, {"count": 0},
])
def test_faults_reject_nonsense(knobs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Faults(**knobs)  # type: ignore[arg-type]


def test_meter_rejects_bad_settings() -> None:
    model = LoadModel(seed=1, clock=ManualClock())
    with pytest.raises(ValueError, match="12 digits"):
        build_meter(model, "12345")
    with pytest.raises(ValueError, match="broadcast"):
        Dlt645Meter(model.meter("x"), "999999999999")
    with pytest.raises(ValueError, match="version"):
        build_meter(model, MeterSpec("000000000001", version=2001))


def test_consecutive_addresses() -> None:
    assert consecutive_addresses("000000000009", 3) == ["000000000009", "000000000010",
                                                       "000000000011"]
    with pytest.raises(ValueError, match="broadcast"):
        consecutive_addresses("999999999998", 2)


# ---------------------------------------------------------------------------------------------------
# Command line


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil_tests.sim", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("args", "message"), [
    ((), "nothing to simulate"),
    (("--dlt645-meters", "2", "--response-delay-ms", "5"), "20..500"),
    (("--dlt645-meters", "2", "--first-address", "12ab"), "12 decimal digits"),
    (("--dlt645-meters", "2", "--baud", "1234"), "invalid choice"),
    (("--dlt645-meters", "-1"), "cannot be negative"),
    (("--dlt645-meters", "1", "--dlt645-1997-meters", "2"), "exceeds"),
    (("--dlt645-meters", "1", "--accel", "0"), "greater than 0"),
    (("--modbus-tcp-meters", "1", "--modbus-profile", "dlt645-2007"), "not a Modbus"),
])
def test_cli_rejects_bad_arguments(args: tuple[str, ...], message: str) -> None:
    result = _sim(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_cli_help() -> None:
    result = _sim("--help")
    assert result.returncode == 0 and "--dlt645-meters" in result.stdout


def test_cli_serves_meters_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil_tests.sim", "--dlt645-meters", "4", "--baud", "9600",
         "--first-address", "000000000101", "--seed", "3", "--accel", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "dlt645" and line[2:] == ["addresses", "000000000101..000000000104"]
        with Dlt645Client(line[1], 9600) as client:
            assert values(read(client, "000000000103", 0x04000401)) == ["000000000103"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "000000000103: 1 requests seen, 1 replies sent" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
