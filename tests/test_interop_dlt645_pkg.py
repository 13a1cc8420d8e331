"""Interoperability: our DL/T 645 codec against an independent implementation, PyPI ``dlt645`` 3.2.0.

Our encoder and decoder agreeing with each other proves little: both could share one misreading of the
standard. Here the other side is somebody else's code, run as it would run in the field:

* **their meter** (``MeterServerService`` on their ``RtuServer``) sits on one end of a null-modem cable
  made of two real pseudo-terminals; we talk to it with pyserial, ``encode`` and ``FrameSplitter`` —
  what the gateway does with a meter on /dev/ttyUSB0;
* **their master** (``MeterClientService`` on their ``RtuClient``) talks over the same kind of cable to a
  meter built from our codec (``decode`` the request, ``encode`` the reply);
* **their value codec** (``float_to_bcd`` / ``bcd_to_float``) is compared with ours byte for byte,
  including the sign bit of signed quantities.

Every disagreement is listed, with the frames of both sides and the verdict, in docs/interop.md (D1…).
Where they deviate from DL/T 645-2007, the test asserts *their specific deviation* next to our correct
behaviour: if a new release fixes it, the test fails and the note must be revisited. Where we are
wrong, we fix it (O1 in docs/interop.md) and the test then asserts the agreement.
"""

from __future__ import annotations

import datetime as dt
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import serial
from dlt645 import MeterClientService, MeterServerService
from dlt645.common.transform import bcd_to_float, float_to_bcd
from dlt645.model.types.dlt645_type import Demand
from dlt645.protocol.protocol import DLT645Protocol
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlt645 import (
    BROADCAST_ADDRESS,
    CATALOGUE_2007,
    WILDCARD_ADDRESS,
    AckReply,
    Bcd,
    ChangeBaudReply,
    ChangeBaudRequest,
    ChangePasswordReply,
    ChangePasswordRequest,
    ClearDemandRequest,
    ClearEventsRequest,
    ClearMeterRequest,
    ControlAction,
    ControlRequest,
    DataError,
    ErrorReply,
    FrameSplitter,
    FreezeRequest,
    Message,
    MultiFunctionOutputReply,
    MultiFunctionOutputRequest,
    OutputSignal,
    ProtocolError,
    ReadAddressReply,
    ReadAddressRequest,
    ReadFollowupRequest,
    ReadReply,
    ReadRequest,
    TimeSyncRequest,
    Value,
    WriteAddressRequest,
    WriteRequest,
    build_read_reply,
    decode,
    decode_raw,
    encode,
    encode_values,
    parse_frame,
    value_text,
)
from protocols.dlt645.frame import FUNCTION_TABLE, encode_address

METER = "000102030425"  # nameplate order; on the wire 25 04 03 02 01 00 (low byte first)
METER_WIRE_ORDER_TEXT = "250403020100"  # what *their* string APIs need for the same meter (D1)
PASSWORD_LEVEL = 2
PASSWORD = "563412"  # ours: most significant digit first; on the wire 12 34 56
THEIR_PASSWORD = "02123456"  # theirs: level + password bytes in wire order
# Meters run 2400 8E1, but a pty has no UART: this kernel even refuses PARENB on one (EINVAL), and
# framing bits are not what is under test here. Both sides use the same settings.
LINE = {"baudrate": 2400, "bytesize": 8, "parity": serial.PARITY_NONE, "stopbits": 1}


def h(text: str) -> bytes:
    """Frame hex as printed in docs/interop.md (spaces allowed)."""
    return bytes.fromhex(text)


# ---------------------------------------------------------------------------------------------------
# The cable


class NullModem:
    """Two pseudo-terminals whose masters a relay thread cross-connects (what ``socat pty pty`` does).

    Each end is a real tty *path*: their server and client only open serial ports by name
    (``serial.serial_for_url``), and so does our gateway. The slave fds stay open for the cable's life
    so that a side closing its port never turns the master into an EIO loop.
    """

    def __init__(self) -> None:
        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.paths: list[str] = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo or CR/LF mangling before an application configures the port
            self._masters.append(master)
            self._slaves.append(slave)
            self.paths.append(os.ttyname(slave))
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="null-modem", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        a, b = self._masters
        peer = {a: b, b: a}
        while True:
            ready, _, _ = select.select([a, b, self._wake_read], [], [])
            if self._wake_read in ready:
                return
            for fd in ready:
                os.write(peer[fd], os.read(fd, 4096))

    def close(self) -> None:
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=5)
        for fd in (*self._masters, *self._slaves, self._wake_read, self._wake_write):
            os.close(fd)


def exchange(port: serial.Serial, request: Message, *, wait: float = 2.0) -> bytes | None:
    """Send ``request`` (with 4 FE wake-up bytes, as masters do) and return the first whole reply frame."""
    port.reset_input_buffer()
    port.write(encode(request, preamble=4))
    splitter = FrameSplitter()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        frames = splitter.feed(port.read(max(1, port.in_waiting)))  # port timeout: 0.1 s
        if frames:
            return frames[0]
    return None


def reply_to(port: serial.Serial, request: Message) -> Message:
    frame = exchange(port, request)
    assert frame is not None, f"their meter did not answer {request}"
    return decode(frame)


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# ---------------------------------------------------------------------------------------------------
# 1. Their meter, our master


# (DI, value written into their meter, readings our decoder must produce: name, exact value, unit)
THEIR_REGISTERS: list[tuple[int, Any, list[tuple[str, Value, str | None]]]] = [
    (0x00010000, Decimal("123456.78"), [("energy.active.import.total", Decimal("123456.78"), "kWh")]),
    (0x00020000, Decimal("0.01"), [("energy.active.export.total", Decimal("0.01"), "kWh")]),
    (0x00000000, Decimal("-1234.56"), [("energy.active.combined.total", Decimal("-1234.56"), "kWh")]),
    (0x01010000, (Decimal("12.3456"), dt.datetime(2024, 5, 6, 7, 8)), [
        ("demand.active.import.total", Decimal("12.3456"), "kW"),
        ("demand.active.import.total.time", dt.datetime(2024, 5, 6, 7, 8), None),
    ]),
    (0x01020000, (Decimal("1.5"), dt.datetime(2024, 11, 28, 13, 59)), [
        ("demand.active.export.total", Decimal("1.5000"), "kW"),
        ("demand.active.export.total.time", dt.datetime(2024, 11, 28, 13, 59), None),
    ]),
    (0x01030000, (Decimal("-0.5"), dt.datetime(2024, 2, 29, 23, 45)), [
        ("demand.reactive.combined1.total", Decimal("-0.5000"), "kvar"),
        ("demand.reactive.combined1.total.time", dt.datetime(2024, 2, 29, 23, 45), None),
    ]),
    (0x02010100, Decimal("230.1"), [("voltage.a", Decimal("230.1"), "V")]),
    (0x02020100, Decimal("-12.345"), [("current.a", Decimal("-12.345"), "A")]),
    (0x02020300, Decimal("-799.999"), [("current.c", Decimal("-799.999"), "A")]),
    (0x02030000, Decimal("-1.2345"), [("power.active.total", Decimal("-1.2345"), "kW")]),
    (0x02030100, Decimal("79.9999"), [("power.active.a", Decimal("79.9999"), "kW")]),
    (0x02060000, Decimal("-0.875"), [("power.factor.total", Decimal("-0.875"), None)]),
    (0x02800002, Decimal("49.98"), [("frequency", Decimal("49.98"), "Hz")]),
    (0x04000101, "24050601", [("clock.date", dt.date(2024, 5, 6), None)]),  # YYMMDDWW, 1 = Monday
    (0x04000102, "070809", [("clock.time", dt.time(7, 8, 9), None)]),
    (0x04000401, METER, [("meter.address", METER, None)]),
]


def load_their_register(meter: MeterServerService, di: int, value: Any) -> bool:
    """Their setters take floats (energy, variables), ``Demand`` objects or digit strings (parameters)."""
    category = di >> 24
    if category == 0x00:
        return bool(meter.set_00(di, float(value)))
    if category == 0x01:
        amount, moment = value
        return bool(meter.set_01(di, Demand(float(amount), moment)))
    if category == 0x02:
        return bool(meter.set_02(di, float(value)))
    return bool(meter.set_04(di, value))


@pytest.fixture(scope="module")
def meter_cable() -> Iterator[NullModem]:
    cable = NullModem()
    yield cable
    cable.close()


@pytest.fixture(scope="module")
def their_meter(meter_cable: NullModem) -> Iterator[MeterServerService]:
    meter = MeterServerService.new_rtu_server(
        meter_cable.paths[0], LINE["bytesize"], LINE["stopbits"], LINE["baudrate"], LINE["parity"], 1.0
    )
    # Their string API takes the address in wire order (D1); bytes go in as they travel.
    meter.set_address(encode_address(METER))
    assert meter.set_password(THEIR_PASSWORD)
    for di, value, _ in THEIR_REGISTERS:
        assert load_their_register(meter, di, value), f"their meter refused DI {di:08X} = {value}"
    assert meter.start(), "their RtuServer could not open the pty"
    yield meter
    meter.stop()


@pytest.fixture(scope="module")
def our_port(meter_cable: NullModem, their_meter: MeterServerService) -> Iterator[serial.Serial]:
    port = serial.Serial(meter_cable.paths[1], timeout=0.1, **LINE)
    yield port
    port.close()


@pytest.mark.parametrize(
    ("di", "value", "expected"), THEIR_REGISTERS, ids=[f"{di:08X}" for di, _, _ in THEIR_REGISTERS]
)
def test_our_master_reads_their_meter_exactly(
    our_port: serial.Serial, di: int, value: Any, expected: list[tuple[str, Value, str | None]]
) -> None:
    reply = reply_to(our_port, ReadRequest(METER, di))
    assert isinstance(reply, ReadReply)
    assert (reply.address, reply.di, reply.more_follows) == (METER, di, False)
    assert [(r.name, r.value, r.unit) for r in reply.readings] == expected
    # Exact decimals, digit for digit (Decimal("0.010") == Decimal("0.01") would hide a wrong scale).
    assert [value_text(r.value) for r in reply.readings] == [value_text(v) for _, v, _ in expected]


def test_their_signed_registers_travel_as_sign_magnitude(our_port: serial.Serial) -> None:
    """DL/T 645-2007 appendix A: bit 7 of the most significant byte is the sign, the rest the BCD
    magnitude. Their meter does this (not two's complement): -12.345 A is 45 23 81, not BB DC FE."""
    current = reply_to(our_port, ReadRequest(METER, 0x02020100))
    power = reply_to(our_port, ReadRequest(METER, 0x02030000))
    factor = reply_to(our_port, ReadRequest(METER, 0x02060000))
    assert isinstance(current, ReadReply) and current.data == h("45 23 81")
    assert isinstance(power, ReadReply) and power.data == h("45 23 81")
    assert isinstance(factor, ReadReply) and factor.data == h("75 88")


def test_read_address_13h(our_port: serial.Serial) -> None:
    frame = exchange(our_port, ReadAddressRequest())
    assert frame == h("68 25 04 03 02 01 00 68 93 06 58 37 36 35 34 33 F9 16")
    assert decode(frame) == ReadAddressReply(METER)


def test_unknown_di_is_refused_with_no_data(our_port: serial.Serial) -> None:
    assert reply_to(our_port, ReadRequest(METER, 0x02800055)) == ErrorReply(
        METER, "read_data", 0x02, ("no_data",)
    )


def test_broadcast_time_sync_08h(our_port: serial.Serial, their_meter: MeterServerService) -> None:
    """D2: we send ss mm hh DD MM YY (the standard's order); their meter reads the field as YYMMDDhhmmss
    and sets its clock to 2009-08-07 06:05:24. Like the standard says, it does not answer."""
    their_meter.time = None
    request = TimeSyncRequest(dt.datetime(2024, 5, 6, 7, 8, 9))
    assert encode(request) == h("68 99 99 99 99 99 99 68 08 06 3C 3B 3A 39 38 57 ED 16")
    assert exchange(our_port, request, wait=0.3) is None
    assert wait_for(lambda: their_meter.time is not None)
    assert their_meter.time == dt.datetime(2009, 8, 7, 6, 5, 24)  # their deviation, see D2


def test_their_meter_answers_frames_for_another_meter(our_port: serial.Serial) -> None:
    """D9: on a multi-drop bus only the addressed meter may speak. Theirs answers a read for meter
    000102030499 with an abnormal reply carrying that other meter's address."""
    other = "000102030499"
    frame = exchange(our_port, ReadRequest(other, 0x00010000))
    assert frame == h("68 99 04 03 02 01 00 68 D1 01 34 79 16")  # should have been silence
    assert decode(frame) == ErrorReply(other, "read_data", 0x01, ("other_error",))


def test_their_meter_answers_a_read_sent_to_the_broadcast_address(our_port: serial.Serial) -> None:
    """D14: 999999999999 is only for broadcast commands (time sync, freeze) and is never answered; every
    meter on the bus would reply at once. Their meter answers a broadcast read."""
    frame = exchange(our_port, ReadRequest(BROADCAST_ADDRESS, 0x00010000))
    assert frame == h("68 99 99 99 99 99 99 68 91 08 33 33 34 33 AB 89 67 45 AC 16")  # should be silence
    reply = decode(frame)
    assert isinstance(reply, ReadReply) and reply.address == BROADCAST_ADDRESS


def test_wildcard_read_reply_carries_the_wildcard(our_port: serial.Serial) -> None:
    """D10: a read addressed with AA wildcards must be answered from the meter's real address."""
    frame = exchange(our_port, ReadRequest(WILDCARD_ADDRESS, 0x00010000))
    assert frame == h("68 AA AA AA AA AA AA 68 91 08 33 33 34 33 AB 89 67 45 12 16")
    reply = decode(frame)
    assert isinstance(reply, ReadReply)
    assert reply.readings[0].value == Decimal("123456.78")
    assert reply.address == WILDCARD_ADDRESS  # their deviation: should be METER


def test_write_data_14h_with_password_then_read_back(
    our_port: serial.Serial, their_meter: MeterServerService
) -> None:
    new_date = dt.date(2025, 1, 2)  # a Thursday: WW = 04
    data = encode_values(CATALOGUE_2007, 0x04000101, [new_date])
    wrong = WriteRequest(METER, 0x04000101, data, password_level=PASSWORD_LEVEL, password="000000")
    right = WriteRequest(METER, 0x04000101, data, password_level=PASSWORD_LEVEL, password=PASSWORD)
    try:
        assert reply_to(our_port, wrong) == ErrorReply(METER, "write_data", 0x04, ("password_error",))
        assert reply_to(our_port, right) == AckReply(METER, "write_data")
        back = reply_to(our_port, ReadRequest(METER, 0x04000101))
        assert isinstance(back, ReadReply) and back.readings[0].value == new_date
    finally:
        assert their_meter.set_04(0x04000101, "24050601")


def test_write_address_15h(our_port: serial.Serial, their_meter: MeterServerService) -> None:
    new = "000102030426"
    try:
        assert reply_to(our_port, WriteAddressRequest(new)) == AckReply(new, "write_address")
        assert reply_to(our_port, ReadAddressRequest()) == ReadAddressReply(new)
    finally:
        their_meter.set_address(encode_address(METER))


def test_change_baud_17h(our_port: serial.Serial) -> None:
    """D5: Z is a bit field (bit 5 = 9600 bit/s = 20H). 1200 (04H) and 2400 (08H) happen to agree with
    their "BCD of rate/300" table; 9600 does not, and their meter refuses our correct 20H."""
    assert reply_to(our_port, ChangeBaudRequest(METER, 1200)) == ChangeBaudReply(METER, 1200)
    frame = exchange(our_port, ChangeBaudRequest(METER, 9600))
    assert encode(ChangeBaudRequest(METER, 9600)) == h("68 25 04 03 02 01 00 68 17 01 53 6A 16")
    assert frame is not None
    assert decode(frame) == ErrorReply(METER, "change_baud", 0x08, ("baud_unchangeable",))


def test_freeze_16h(our_port: serial.Serial, their_meter: MeterServerService) -> None:
    """Their meter acknowledges and keeps the field as it came (mm hh DD MM on the wire); how their
    side *reads* it (MMDDhhmm) shows in test_their_master_requests_that_deviate (D3)."""
    assert reply_to(our_port, FreezeRequest(METER, "05060708")) == AckReply(METER, "freeze")
    assert bytes(their_meter.last_freeze_time or b"") == h("08 07 06 05")


def test_clear_demand_19h_and_clear_meter_1ah_are_refused(our_port: serial.Serial) -> None:
    """D7/D8: the standard's data field is PA P0P1P2 C0..C3. Their meter expects DI + password, reads our
    password as DI 56341202 and refuses with other_error."""
    demand = ClearDemandRequest(METER, password_level=PASSWORD_LEVEL, password=PASSWORD)
    meter = ClearMeterRequest(METER, password_level=PASSWORD_LEVEL, password=PASSWORD)
    assert encode(demand) == h("68 25 04 03 02 01 00 68 19 08 35 45 67 89 33 33 33 33 56 16")
    assert reply_to(our_port, demand) == ErrorReply(METER, "clear_demand", 0x01, ("other_error",))
    assert reply_to(our_port, meter) == ErrorReply(METER, "clear_meter", 0x01, ("other_error",))


def test_clear_events_1bh(our_port: serial.Serial) -> None:
    request = ClearEventsRequest(METER, password_level=PASSWORD_LEVEL, password=PASSWORD)
    assert reply_to(our_port, request) == AckReply(METER, "clear_events")


def test_change_password_18h(our_port: serial.Serial) -> None:
    request = ChangePasswordRequest(METER, PASSWORD_LEVEL, PASSWORD, 4, "214365", di=0x04000C05)
    assert reply_to(our_port, request) == ChangePasswordReply(METER, 4, "214365")


@pytest.mark.parametrize(
    ("request_", "function"),
    [
        (ControlRequest(METER, ControlAction.TRIP, dt.datetime(2024, 5, 6, 7, 8, 9)), "control"),
        (MultiFunctionOutputRequest(METER, OutputSignal.DEMAND_PERIOD), "multi_function_output"),
        (ReadFollowupRequest(METER, 0x00010000), "read_followup"),
    ],
    ids=["1CH", "1DH", "12H"],
)
def test_functions_they_do_not_implement_get_an_abnormal_reply(
    our_port: serial.Serial, request_: Message, function: str
) -> None:
    assert reply_to(our_port, request_) == ErrorReply(METER, function, 0x01, ("other_error",))


def test_their_meter_sends_negative_unsigned_quantities(
    our_port: serial.Serial, their_meter: MeterServerService
) -> None:
    """D11: import/export energy, active demand and voltage are unsigned. Their setters accept negative
    values and set bit 7, which every standard master reads as a large positive value."""
    assert their_meter.set_00(0x00010100, -1234.56)
    assert their_meter.set_02(0x02010200, -30.0)
    assert their_meter.set_01(0x01020100, Demand(-0.5, dt.datetime(2024, 5, 6, 7, 8)))
    energy_frame = exchange(our_port, ReadRequest(METER, 0x00010100))
    assert energy_frame == h("68 25 04 03 02 01 00 68 91 08 33 34 34 33 89 67 45 B3 4E 16")
    energy = decode(energy_frame)
    volts = reply_to(our_port, ReadRequest(METER, 0x02010200))
    assert isinstance(energy, ReadReply) and energy.data == h("56 34 12 80")
    assert energy.readings[0].value == Decimal("801234.56")
    assert isinstance(volts, ReadReply) and volts.data == h("00 83")
    assert volts.readings[0].value == Decimal("830.0")
    demand = reply_to(our_port, ReadRequest(METER, 0x01020100))
    assert isinstance(demand, ReadReply) and demand.data[:3] == h("00 50 80")
    assert demand.readings[0].value == Decimal("80.5000")


def test_their_value_ranges_are_narrower_than_the_formats(their_meter: MeterServerService) -> None:
    """D12: power factor 1.000 (a resistive load) fits X.XXX but their meter refuses it; unsigned energy
    XXXXXX.XX reaches 999999.99 but they cap it at 799999.99 (the signed range)."""
    assert not their_meter.set_02(0x02060100, 1.0)
    assert not their_meter.set_00(0x00010200, 850000.0)


# ---------------------------------------------------------------------------------------------------
# 2. Their master, our meter


class OurMeter:
    """A meter made of our codec, serving its end of the cable in a thread.

    Every request frame is recorded with what our decoder made of it (a message or the ProtocolError).
    Requests our decoder refuses are answered with an abnormal reply, as a meter would.
    """

    def __init__(self, port: serial.Serial, registers: dict[int, list[Value]]) -> None:
        self.port = port
        self.registers = registers
        self.requests: list[tuple[bytes, Message | ProtocolError]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="our-meter", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        splitter = FrameSplitter()
        while not self._stop.is_set():
            for frame in splitter.feed(self.port.read(max(1, self.port.in_waiting))):
                reply = self._answer(frame)
                if reply is not None:
                    self.port.write(encode(reply, preamble=2))

    def _answer(self, frame: bytes) -> Message | None:
        raw = parse_frame(frame)
        try:
            request = decode_raw(raw)
        except ProtocolError as exc:
            self.requests.append((frame, exc))
            return ErrorReply(METER, FUNCTION_TABLE[raw.control.function][1], 0x01)
        self.requests.append((frame, request))
        match request:
            case ReadRequest(di=di) if di in self.registers:
                return build_read_reply(METER, di, self.registers[di])
            case ReadRequest():
                return ErrorReply(METER, "read_data", 0x02)
            case ReadAddressRequest():
                return ReadAddressReply(METER)
            case TimeSyncRequest():
                return None
            case ChangePasswordRequest(new_level=level, new_password=password):
                return ChangePasswordReply(METER, level, password)
            case ChangeBaudRequest(baudrate=baudrate):
                return ChangeBaudReply(METER, baudrate)
            case MultiFunctionOutputRequest(signal=signal):
                return MultiFunctionOutputReply(METER, signal)
            case _:
                return AckReply(METER, FUNCTION_TABLE[raw.control.function][1])

    def last(self) -> tuple[bytes, Message | ProtocolError]:
        assert self.requests, "our meter received nothing"
        return self.requests[-1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


OUR_REGISTERS: dict[int, list[Value]] = {
    0x00010000: [Decimal("123456.78")],
    0x00000000: [Decimal("-1234.56")],
    0x01010000: [Decimal("12.3456"), dt.datetime(2024, 5, 6, 7, 8)],
    0x01020000: [Decimal("1.5"), dt.datetime(2024, 11, 28, 13, 59)],
    0x02010100: [Decimal("230.1")],
    0x02020100: [Decimal("-12.345")],
    0x02030000: [Decimal("-1.2345")],
    0x02060000: [Decimal("-0.875")],
    0x04000101: [dt.date(2024, 5, 6)],
    0x04000102: [dt.time(7, 8, 9)],
    0x04000401: [METER],
}


@pytest.fixture(scope="module")
def client_cable() -> Iterator[NullModem]:
    cable = NullModem()
    yield cable
    cable.close()


@pytest.fixture(scope="module")
def our_meter(client_cable: NullModem) -> Iterator[OurMeter]:
    port = serial.Serial(client_cable.paths[1], timeout=0.05, **LINE)
    meter = OurMeter(port, OUR_REGISTERS)
    yield meter
    meter.close()
    port.close()


@pytest.fixture(scope="module")
def their_client(client_cable: NullModem, our_meter: OurMeter) -> Iterator[MeterClientService]:
    client = MeterClientService.new_rtu_client(
        client_cable.paths[0], LINE["baudrate"], LINE["bytesize"], LINE["stopbits"], LINE["parity"], 2.0
    )
    client.set_address(METER_WIRE_ORDER_TEXT)  # D1: their strings are in wire order
    assert client.set_password(THEIR_PASSWORD)
    yield client
    client.disconnect()


CLIENT_READS = [
    ("read_00", 0x00010000, 123456.78),
    ("read_00", 0x00000000, -1234.56),
    ("read_02", 0x02010100, 230.1),
    ("read_02", 0x02020100, -12.345),
    ("read_02", 0x02030000, -1.2345),
    ("read_02", 0x02060000, -0.875),
    ("read_04", 0x04000101, "24050601"),
    ("read_04", 0x04000102, "070809"),
    ("read_04", 0x04000401, METER),
]


@pytest.mark.parametrize(("method", "di", "expected"), CLIENT_READS, ids=[f"{di:08X}" for _, di, _ in CLIENT_READS])
def test_their_master_reads_our_meter(
    their_client: MeterClientService, our_meter: OurMeter, method: str, di: int, expected: object
) -> None:
    item = getattr(their_client, method)(di)
    frame, request = our_meter.last()
    assert request == ReadRequest(METER, di)
    assert frame == encode(ReadRequest(METER, di))  # byte for byte what we would have sent
    assert item is not None and item.value == expected


def test_their_master_misreads_demand_time(their_client: MeterClientService, our_meter: OurMeter) -> None:
    """D4: their client parses the demand time (mm hh DD MM YY on the wire, as their own meter sends it)
    as YY MM DD hh mm: 2024-05-06 07:08 becomes 2008-07-06 05:24, and 13:59 on 28 November cannot be
    read at all (month 13)."""
    item = their_client.read_01(0x01010000)
    assert our_meter.last()[1] == ReadRequest(METER, 0x01010000)
    assert item is not None and item.value.value == 12.3456
    assert item.value.time == dt.datetime(2008, 7, 6, 5, 24)
    assert their_client.read_01(0x01020000) is None


def test_their_master_error_reply_is_understood(their_client: MeterClientService, our_meter: OurMeter) -> None:
    assert their_client.read_02(0x02800002) is None  # our meter answers D1 01 35 (no_data)
    assert our_meter.last()[1] == ReadRequest(METER, 0x02800002)


def test_their_master_read_address(their_client: MeterClientService, our_meter: OurMeter) -> None:
    """Frames agree; their API hands back the address in wire order (D1)."""
    item = their_client.read_address()
    frame, request = our_meter.last()
    assert frame == h("68 AA AA AA AA AA AA 68 13 00 DF 16") == encode(ReadAddressRequest())
    assert request == ReadAddressRequest()
    assert item is not None and item.value == METER_WIRE_ORDER_TEXT


def test_their_master_requests_that_agree(their_client: MeterClientService, our_meter: OurMeter) -> None:
    their_client.write_04(0x04000101, "24050601", password=THEIR_PASSWORD)
    assert our_meter.last()[1] == WriteRequest(
        METER, 0x04000101, h("01 06 05 24"), password_level=PASSWORD_LEVEL, password=PASSWORD
    )
    their_client.clear_event(THEIR_PASSWORD, "12345678")
    assert our_meter.last()[1] == ClearEventsRequest(
        METER, 0xFFFFFFFF, password_level=PASSWORD_LEVEL, password=PASSWORD, operator="78563412"
    )
    their_client.change_baud_rate(2400)  # 08H in both readings of Z
    assert our_meter.last()[1] == ChangeBaudRequest(METER, 2400)


def test_their_master_requests_that_deviate(their_client: MeterClientService, our_meter: OurMeter) -> None:
    """What our decoder makes of their frames; each line is one entry of docs/interop.md."""
    # D2 broadcast time: they send YY first; a standard meter reads 2009-08-07 06:05:24.
    assert their_client.broadcast_time_sync(dt.datetime(2024, 5, 6, 7, 8, 9))
    assert wait_for(lambda: bool(our_meter.requests) and isinstance(our_meter.requests[-1][1], TimeSyncRequest))
    frame, request = our_meter.last()
    assert frame == h("68 99 99 99 99 99 99 68 08 06 57 38 39 3A 3B 3C ED 16")
    assert request == TimeSyncRequest(dt.datetime(2009, 8, 7, 6, 5, 24), BROADCAST_ADDRESS)

    # D3 freeze: they send MM DD hh mm; a standard meter reads month 08, day 07, 06:05.
    their_client.freeze(5, 6, 7, 8)
    frame, request = our_meter.last()
    assert frame == h("68 25 04 03 02 01 00 68 16 04 38 39 3A 3B FF 16")
    assert request == FreezeRequest(METER, "08070605")

    # D5 baud: 9600 bit/s as 32H, which names no single rate (bits 1, 4 and 5).
    assert their_client.change_baud_rate(9600) is None
    frame, outcome = our_meter.last()
    assert frame == h("68 25 04 03 02 01 00 68 17 01 65 7C 16")
    assert isinstance(outcome, DataError)

    # D6 change password: DI 40000C04 instead of 04000C05 (level 4's password).
    their_client.change_password(THEIR_PASSWORD, "04654321")
    frame, request = our_meter.last()
    assert frame == h("68 25 04 03 02 01 00 68 18 0C 37 3F 33 73 35 45 67 89 37 98 76 54 42 16")
    assert request == ChangePasswordRequest(METER, 2, PASSWORD, 4, "214365", di=0x40000C04)

    # D7 clear demand: DI + password; a standard meter reads level 00, password 010100.
    their_client.clear_demand(0x01010000, THEIR_PASSWORD)
    frame, request = our_meter.last()
    assert frame == h("68 25 04 03 02 01 00 68 19 08 33 33 34 34 35 45 67 89 58 16")
    assert request == ClearDemandRequest(METER, 0, "010100", "56341202")

    # D8 clear meter: DI 00000000 + password; a standard meter reads level 00, password 000000.
    their_client.clear_meter(THEIR_PASSWORD)
    frame, request = our_meter.last()
    assert frame == h("68 25 04 03 02 01 00 68 1A 08 33 33 33 33 35 45 67 89 57 16")
    assert request == ClearMeterRequest(METER, 0, "000000", "56341202")


def test_their_master_write_address(their_client: MeterClientService, our_meter: OurMeter) -> None:
    """D1 + D13: the new address goes out in wire order of their string, and to the meter's current
    address instead of the AA wildcard the standard's 15H frame uses."""
    try:
        their_client.write_address("000102030426")
        frame, request = our_meter.last()
        assert frame == h("68 25 04 03 02 01 00 68 15 06 33 34 35 36 37 59 7C 16")
        assert request == WriteAddressRequest("260403020100", METER)
    finally:
        their_client.address = bytearray(encode_address(METER))


# ---------------------------------------------------------------------------------------------------
# Frame level: everything we encode, their parser takes apart the same way.

OUR_FRAMES: list[Message] = [
    ReadRequest(METER, 0x00010000),
    ReadRequest(WILDCARD_ADDRESS, 0x0201FF00),
    ReadAddressRequest(),
    WriteRequest(METER, 0x04000101, h("01 06 05 24"), password_level=2, password=PASSWORD),
    WriteAddressRequest("000102030426"),
    TimeSyncRequest(dt.datetime(2024, 5, 6, 7, 8, 9)),
    FreezeRequest(METER, "05060708"),
    ChangeBaudRequest(METER, 9600),
    ChangePasswordRequest(METER, 2, PASSWORD, 4, "214365", di=0x04000C05),
    ClearDemandRequest(METER),
    ClearMeterRequest(METER),
    ClearEventsRequest(METER),
    ControlRequest(METER, ControlAction.TRIP, dt.datetime(2024, 5, 6, 7, 8, 9)),
    MultiFunctionOutputRequest(METER, OutputSignal.DEMAND_PERIOD),
    ReadFollowupRequest(METER, 0x00010000, 1),
    build_read_reply(METER, 0x02020100, [Decimal("-12.345")]),
    ReadAddressReply(METER),
    AckReply(METER, "write_data"),
    ErrorReply(METER, "read_data", 0x02),
    ChangeBaudReply(METER, 1200),
]


@pytest.mark.parametrize("message", OUR_FRAMES, ids=[type(m).__name__ for m in OUR_FRAMES])
@pytest.mark.parametrize("preamble", [0, 4, 8])
def test_their_parser_takes_our_frames_apart_identically(message: Message, preamble: int) -> None:
    wire = encode(message, preamble=preamble)
    ours = parse_frame(wire)
    theirs = DLT645Protocol.deserialize(wire)
    assert theirs is not None
    assert bytes(theirs.addr) == ours.raw[1:7] == encode_address(message.address)
    assert theirs.ctrl_code == ours.control.byte
    assert bytes(theirs.data) == ours.data
    assert theirs.check_sum == ours.raw[-2]
    assert bytes(theirs.preamble) == b"\xfe" * min(preamble, DLT645Protocol.MAX_PREAMBLE_LENGTH)


def test_their_address_strings_are_in_wire_order(
    our_port: serial.Serial, their_meter: MeterServerService
) -> None:
    """D1: their ``set_address("000102030425")`` puts 00 01 02 03 04 25 on the wire: by the standard
    (low byte first) that is meter 250403020100. Their own DI 04000401 gets the order right."""
    try:
        their_meter.set_address(METER)
        frame = exchange(our_port, ReadAddressRequest())
        assert frame == h("68 00 01 02 03 04 25 68 93 06 33 34 35 36 37 58 F9 16")
        assert decode(frame) == ReadAddressReply(METER_WIRE_ORDER_TEXT)
    finally:
        their_meter.set_address(encode_address(METER))


# ---------------------------------------------------------------------------------------------------
# 3. Value codecs, byte for byte (sign-magnitude BCD)

# Their format strings and ours for the same quantities (DL/T 645-2007 appendix A).
SIGNED_FORMATS = [
    ("XXXXXX.XX", Bcd(4, 2, "kWh", signed=True)),  # combined energy
    ("XX.XXXX", Bcd(3, 4, "kW", signed=True)),  # power, demand
    ("XXX.XXX", Bcd(3, 3, "A", signed=True)),  # current
    ("X.XXX", Bcd(2, 3, None, signed=True)),  # power factor
    ("XXX.X", Bcd(2, 1, "degC", signed=True)),  # meter temperature
]


def test_negative_current_is_sign_magnitude_on_both_sides() -> None:
    ours = Bcd(3, 3, "A", signed=True)
    theirs = bytes(float_to_bcd(-12.345, "XXX.XXX", "little"))
    assert theirs == ours.encode(Decimal("-12.345")) == h("45 23 81")
    # Sign-magnitude: the magnitude's BCD with bit 7 of the top byte set; two's complement would
    # have been BB DC FE.
    assert theirs[:2] + bytes([theirs[2] & 0x7F]) == ours.encode(Decimal("12.345"))
    assert bcd_to_float(theirs, "XXX.XXX", "little") == -12.345
    assert ours.decode(theirs) == Decimal("-12.345")


@pytest.mark.parametrize(("pattern", "fmt"), SIGNED_FORMATS, ids=[p for p, _ in SIGNED_FORMATS])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_value_codecs_agree_byte_for_byte(pattern: str, fmt: Bcd, data: st.DataObject) -> None:
    # Decoding: any sign-magnitude field of the format (top digit 0..7, sign bit either way).
    top = data.draw(st.integers(0, 7), label="top digit")
    rest = data.draw(st.integers(0, 10 ** (2 * fmt.size - 1) - 1), label="other digits")
    wire = bytearray(bytes.fromhex(f"{top}{rest:0{2 * fmt.size - 1}d}")[::-1])
    if data.draw(st.booleans(), label="negative"):
        wire[-1] |= 0x80
    ours = fmt.decode(bytes(wire))
    assert isinstance(ours, Decimal)
    assert bcd_to_float(bytes(wire), pattern, "little") == float(ours)
    # Encoding: the whole sign-magnitude range (top digit 0..7), fixed after O1.
    limit = 8 * 10 ** (2 * fmt.size - 1) - 1
    value = Decimal(data.draw(st.integers(-limit, limit), label="scaled value")).scaleb(-fmt.decimals)
    assert bytes(float_to_bcd(float(value), pattern, "little")) == fmt.encode(value)


@pytest.mark.parametrize(
    ("di", "value", "pattern"),
    [
        (0x02060000, Decimal("1.000"), "X.XXX"),
        (0x02030000, Decimal("12.3456"), "XX.XXXX"),
        (0x02020100, Decimal("-123.456"), "XXX.XXX"),
        (0x00000000, Decimal("123456.78"), "XXXXXX.XX"),
    ],
    ids=["pf-1.000", "power-12.3456kW", "current-123.456A", "combined-123456.78kWh"],
)
def test_our_encoder_covers_the_whole_signed_range(di: int, value: Decimal, pattern: str) -> None:
    assert encode_values(CATALOGUE_2007, di, [value]) == bytes(float_to_bcd(float(value), pattern, "little"))
