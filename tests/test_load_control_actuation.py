"""Actuation: 1CH frames against the simulated DL/T 645 meter firmware, verified from status word
3, with bounded retries; refusals end at once with a reason that says what to check; ESAM
ciphertext relayed unchanged; Modbus relay profiles."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping

import pytest

from gateway.acquisition.base import BusSettings, BusTimeout
from gateway.config import MeterConfig
from gateway.control.actuation import (
    EXPECTED_FLAGS,
    ActuationPolicy,
    Dlt645Credentials,
    Done,
    ReadStatus,
    RelayActuation,
    RelayOutcome,
    SendFrame,
    Wait,
    actuate_dlt645_relay,
    describe_refusal,
    dlt645_control_request,
    esam_control_frame,
    expected_modbus_flags,
    modbus_relay_flags,
    modbus_relay_write,
    status_read_request,
    status_word3_flags,
)
from gateway.control.load_control import SendControl
from hil_tests.dlt645_sim import Dlt645Meter
from hil_tests.load_model import LoadModel, ManualClock
from protocols.dlt645 import (
    AckReply,
    ErrorReply,
    ExceptionReply,
    ReadReply,
    decode,
    encode,
    parse_frame,
)
from protocols.dlt645.messages import ControlAction
from protocols.modbus.relay import ModbusRelay, ModbusRelayError, ModbusWrite, parse_modbus_relay
from tests.load_control_rig import EVENING

ADDRESS = "000000000042"
POLICY = ActuationPolicy(verify_delay_s=0.5, read_interval_s=1.0, verify_timeout_s=3.0,
                         max_attempts=3, retry_backoff_s=1.0)


class Line:
    """One simulated meter, and a transcript of what was sent to it."""

    def __init__(self, password: str = "000000") -> None:
        self.clock = ManualClock()
        self.model = LoadModel(seed=3, clock=self.clock, start_epoch=EVENING)
        self.sim = self.model.meter("m", base_kw=5.0)
        self.meter = Dlt645Meter(self.sim, ADDRESS, passwords={2: password})
        self.sent: list[str] = []

    def exchange(self, frame: bytes) -> object:
        message = decode(frame)
        self.sent.append(type(message).__name__)
        response = self.meter.handle(parse_frame(frame))
        return None if response.frame is None else decode(response.frame)


def drive(line: Line, action: ControlAction, *, valid_for: float = 300.0,
          credentials: Dlt645Credentials | None = None,
          status: list[Mapping[str, bool] | None] | None = None) -> Done:
    """Run one action to completion; ``status`` scripts the flags read back (else the meter's)."""
    now = line.model.now()
    send = SendControl(1, "m", action, now + valid_for, "test")
    act = RelayActuation("m", action, EXPECTED_FLAGS[action], POLICY)
    t = now
    for _ in range(100):
        step = act.next_step(t)
        if isinstance(step, Done):
            return step
        if isinstance(step, Wait):
            assert step.until >= t
            t = step.until
        elif isinstance(step, SendFrame):
            request = dlt645_control_request(ADDRESS, send.action, send.valid_until,
                                             credentials or Dlt645Credentials(), 480)
            reply = line.exchange(encode(request))
            if isinstance(reply, AckReply):
                act.on_sent(t, True)
            elif isinstance(reply, ErrorReply):
                act.on_sent(t, False, describe_refusal("m", action, reply), retryable=False)
            else:
                act.on_sent(t, False, "no reply within 500 ms", retryable=True)
        elif isinstance(step, ReadStatus):
            if status is not None:
                flags = status.pop(0) if status else None
                act.on_status(t, flags, "" if flags is not None else "no reply")
                continue
            reply = line.exchange(encode(status_read_request(ADDRESS)))
            flags = status_word3_flags(reply) if isinstance(reply, ReadReply) else None
            act.on_status(t, flags, "" if flags is not None else "no reply")
    raise AssertionError("actuation did not finish")


def test_trip_is_verified_from_status_word_3() -> None:
    line = Line()
    done = drive(line, ControlAction.TRIP)
    assert done == Done(True, "", 1)
    assert line.sent == ["ControlRequest", "ReadRequest"]
    assert line.sim.sample().status.relay_open


def test_allow_close_leaves_the_relay_open_for_the_customer() -> None:
    line = Line()
    drive(line, ControlAction.TRIP)
    done = drive(line, ControlAction.ALLOW_CLOSE)
    assert done.ok
    assert line.sim.sample().status.relay_open  # only the customer closes it
    assert drive(line, ControlAction.DIRECT_CLOSE).ok
    assert not line.sim.sample().status.relay_open


@pytest.mark.parametrize("action", [ControlAction.ALARM, ControlAction.PROTECT])
def test_alarm_and_protect_are_verified_and_released(action: ControlAction) -> None:
    line = Line()
    assert drive(line, action).ok
    release = {ControlAction.ALARM: ControlAction.ALARM_RELEASE,
               ControlAction.PROTECT: ControlAction.PROTECT_RELEASE}[action]
    assert drive(line, release).ok


def test_wrong_password_fails_at_once_and_says_what_to_check() -> None:
    line = Line(password="123456")
    done = drive(line, ControlAction.TRIP)
    assert not done.ok and done.attempts == 1
    assert "password_error" in done.reason and "control password" in done.reason
    assert line.sent == ["ControlRequest"]
    assert not line.sim.sample().status.relay_open


def test_a_protected_meter_refuses_a_trip_and_it_is_not_repeated() -> None:
    line = Line()
    assert drive(line, ControlAction.PROTECT).ok
    done = drive(line, ControlAction.TRIP)
    assert not done.ok and done.attempts == 1
    assert "protect" in done.reason
    assert not line.sim.sample().status.relay_open


def test_a_stale_frame_is_refused_by_the_meter() -> None:
    line = Line()
    done = drive(line, ControlAction.TRIP, valid_for=-60.0)  # deadline already past
    assert not done.ok and "deadline" in done.reason


def test_deadline_travels_in_the_meters_local_time() -> None:
    send = SendControl(1, "m", ControlAction.TRIP, EVENING + 300.9, "test")
    request = dlt645_control_request(ADDRESS, send.action, send.valid_until,
                                     Dlt645Credentials(0x04, "112233", "AABBCCDD"), 480)
    assert request.valid_until == dt.datetime(2025, 1, 1, 19, 5, 0)
    assert (request.password_level, request.password, request.operator) == (4, "112233", "AABBCCDD")


def test_a_silent_meter_is_retried_a_bounded_number_of_times() -> None:
    line = Line()
    line.sim.power_off()
    done = drive(line, ControlAction.TRIP)
    assert not done.ok and done.attempts == POLICY.max_attempts
    assert "after 3 frame(s): no reply" in done.reason
    assert line.sent == ["ControlRequest"] * 3


def test_a_slow_relay_is_read_again_until_the_timeout() -> None:
    line = Line()
    closed = {"relay_open": False, "relay_command_trip": True}
    opened = {"relay_open": True, "relay_command_trip": True}
    done = drive(line, ControlAction.TRIP, status=[closed, None, opened])
    assert done == Done(True, "", 1)  # read 3 times within the timeout, one frame


def test_a_relay_that_never_moves_gets_bounded_resends_then_fails() -> None:
    line = Line()
    stuck = {"relay_open": False, "relay_command_trip": False}
    done = drive(line, ControlAction.TRIP, status=[stuck] * 50)
    assert not done.ok and done.attempts == 3
    assert "expected relay_command_trip=True, relay_open=True" in done.reason
    assert "saw relay_command_trip=False, relay_open=False" in done.reason
    assert line.sent.count("ControlRequest") == 3


def test_state_machine_rejects_out_of_order_reports() -> None:
    act = RelayActuation("m", ControlAction.TRIP, EXPECTED_FLAGS[ControlAction.TRIP])
    with pytest.raises(RuntimeError, match="on_status"):
        act.on_status(0.0, {})
    assert act.next_step(0.0) == SendFrame(1)
    with pytest.raises(RuntimeError, match="report it first"):
        act.next_step(0.0)


def test_esam_ciphertext_is_relayed_unchanged() -> None:
    ciphertext = bytes.fromhex("98 00 00 00 01 02 03 04" + "5A" * 16 + "C3" * 4)
    frame = esam_control_frame(ADDRESS, ciphertext, preamble=4)
    assert frame[:4] == b"\xfe" * 4
    raw = parse_frame(frame)
    assert raw.address == ADDRESS and raw.control.function == 0x1C and not raw.control.reply
    assert raw.data == ciphertext
    with pytest.raises(ValueError, match="empty"):
        esam_control_frame(ADDRESS, b"")


def test_status_word_reply_for_another_di_is_not_taken_for_relay_bits() -> None:
    line = Line()
    reply = line.exchange(encode(status_read_request(ADDRESS)))
    assert isinstance(reply, ReadReply)
    flags = status_word3_flags(reply)
    assert flags is not None and flags["relay_open"] is False
    assert status_word3_flags(ReadReply(ADDRESS, 0x04000501, b"\x00\x00")) is None


# --------------------------------------------------------------------------------------------
# Modbus relays
# --------------------------------------------------------------------------------------------


def test_modbus_relay_profiles() -> None:
    coil = parse_modbus_relay({"coil": 16})
    assert coil == ModbusRelay("coil", 16, 0, 1)
    assert modbus_relay_write(coil, 5, ControlAction.TRIP) == ModbusWrite(5, "coil", 16, 0)
    assert modbus_relay_write(coil, 5, ControlAction.DIRECT_CLOSE) == ModbusWrite(5, "coil", 16, 1)
    inverted = parse_modbus_relay({"coil": 3, "open": True})
    assert modbus_relay_write(inverted, 1, ControlAction.TRIP) == ModbusWrite(1, "coil", 3, 1)
    register = parse_modbus_relay({"register": 0x100, "open": 0, "close": 1, "allow_close": 2})
    assert modbus_relay_write(register, 9, ControlAction.ALLOW_CLOSE) == ModbusWrite(9, "register", 0x100, 2)
    assert modbus_relay_write(register, 9, ControlAction.ALARM) is None  # no meter-side alarm
    assert modbus_relay_flags(register, 2) == {"relay_open": True, "close_allowed": True}
    assert modbus_relay_flags(register, 1) == {"relay_open": False, "close_allowed": False}


def test_modbus_allow_close_is_never_turned_into_a_close() -> None:
    coil = parse_modbus_relay({"coil": 16})
    with pytest.raises(ModbusRelayError, match="will not close it directly"):
        modbus_relay_write(coil, 5, ControlAction.ALLOW_CLOSE)


@pytest.mark.parametrize(("table", "message"), [
    ({}, "exactly one of coil"),
    ({"coil": 1, "register": 2}, "exactly one of coil"),
    ({"coil": -1}, "relay.coil must be an integer 0..65535"),
    ({"coil": 1, "open": 1}, "relay.open must be true or false"),
    ({"coil": 1, "close": 0}, "unknown key"),
    ({"register": 1, "open": 0}, "relay.close must be an integer"),
    ({"register": 1, "open": 0, "close": 0}, "must be different values"),
])
def test_modbus_relay_profile_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ModbusRelayError, match=message):
        parse_modbus_relay(table)


def test_modbus_trip_verified_from_the_value_read_back() -> None:
    relay = parse_modbus_relay({"register": 7, "open": 0, "close": 1})
    expected = expected_modbus_flags(ControlAction.TRIP)
    act = RelayActuation("m", ControlAction.TRIP, expected, POLICY)
    assert isinstance(act.next_step(0.0), SendFrame)
    act.on_sent(0.0, True)
    assert act.next_step(0.5) == ReadStatus()
    act.on_status(0.5, modbus_relay_flags(relay, 0))
    assert act.done == Done(True, "", 1)
    assert expected_modbus_flags(ControlAction.PROTECT) is None


# --------------------------------------------------------------------------------------------
# The DL/T 645 driver: the same machine, driven over a priority lane
# --------------------------------------------------------------------------------------------


class PriorityLane:
    """Stands in for :class:`Dlt645Bus` ``submit_priority``: what the real lane raises or
    returns (an acknowledged exchange, :class:`ExceptionReply`, :class:`BusTimeout` once the bus
    has spent its retries) with the simulated meter firmware behind it."""

    name = "rs485-test"
    settings = BusSettings(retry_backoff_s=0.0)

    def __init__(self, line: Line) -> None:
        self.line = line

    async def submit_priority(self, message: object) -> object:
        reply = self.line.exchange(encode(message))  # type: ignore[arg-type]
        if reply is None:
            raise BusTimeout("no reply from 000000000042 within 500 ms")
        if isinstance(reply, ErrorReply):
            raise ExceptionReply(reply.address, "control", reply.error_word, reply.errors)
        return reply


def _meter(password: str = "000000") -> MeterConfig:
    return MeterConfig(id="m", bus="rs485-test", address=ADDRESS, profile="dlt645-2007",
                       control_password=password)


def _actuate(line: Line, action: ControlAction, meter: MeterConfig | None = None) -> RelayOutcome:
    lane = PriorityLane(line)
    return asyncio.run(actuate_dlt645_relay(lane, meter or _meter(), action,  # type: ignore[arg-type]
                                            line.model.now() + 300, 480, POLICY))


def test_driver_sends_the_frame_first_then_verifies_from_status_word_3() -> None:
    line = Line()
    outcome = _actuate(line, ControlAction.TRIP)
    assert outcome == RelayOutcome(True, "", True, 1)
    assert line.sent == ["ControlRequest", "ReadRequest"]  # nothing on the lane before the 1CH
    assert line.sim.sample().status.relay_open
    closed = _actuate(line, ControlAction.DIRECT_CLOSE)
    assert closed == RelayOutcome(True, "", False, 1)


def test_driver_reports_a_refusal_once_with_what_to_check() -> None:
    line = Line(password="123456")
    outcome = _actuate(line, ControlAction.TRIP)
    assert not outcome.ok and outcome.attempts == 1 and outcome.relay_open is None
    assert "password_error" in outcome.detail and "control password" in outcome.detail
    assert line.sent == ["ControlRequest"]


def test_driver_does_not_repeat_what_the_bus_already_retried() -> None:
    line = Line()
    line.sim.power_off()
    outcome = _actuate(line, ControlAction.TRIP)
    assert not outcome.ok and outcome.attempts == 1
    assert "no acknowledgement of the trip frame on bus rs485-test" in outcome.detail
    assert line.sent == ["ControlRequest"]
