"""Modbus relays from the profile: the ``relay`` table is checked at load time with the key
path in the error, and the daemon's actuation (write on the bus priority lane, read-back through
``modbus_relay_flags``, bounded re-sends) moves the simulated meter's relay over real Modbus TCP,
which drops or restores its load."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.acquisition.base import BusSettings
from gateway.acquisition.modbus_bus import ModbusBus, make_meter
from gateway.acquisition.schedule import PollSchedule
from gateway.control.actuation import RelayOutcome, actuate_modbus_relay
from hil_tests.load_model import LoadModel, ManualClock, SimMeter
from hil_tests.modbus_sim import SimulatedModbusMeter, start_modbus_tcp_meters
from protocols.dlt645.messages import ControlAction
from protocols.modbus.profile import ModbusProfile
from protocols.modbus.relay import ModbusRelay
from protocols.profiles import ProfileError, load_named_profile, parse_profile

pytestmark = pytest.mark.timeout(60)

TEMPLATE = load_named_profile("modbus-relay-meter")
assert isinstance(TEMPLATE, ModbusProfile)

REGISTER_RELAY = """\
kind = "modbus"
relay = { register = 0x0100, open = 0, close = 1, allow_close = 2 }

[defaults]
function = "input"
type = "float32"

[[groups]]
registers = [
  { quantity = "voltage.a", address = 0x0000, unit = "V" },
  { quantity = "power.active.total", address = 0x0004, unit = "kW", scale = "0.001" },
]
"""


def test_shipped_template_declares_a_coil_and_the_meters_without_one_do_not() -> None:
    assert TEMPLATE.relay == ModbusRelay("coil", 0, open_value=0, close_value=1)
    for name in ("sdm630", "dtsu666"):
        profile = load_named_profile(name)
        assert isinstance(profile, ModbusProfile) and profile.relay is None


def test_relay_table_errors_name_the_file_and_key() -> None:
    bad = REGISTER_RELAY.replace("allow_close = 2", "allow_close = 1")
    with pytest.raises(ProfileError, match=r"acme\.toml: relay: open, close and allow_close must "
                                           r"be different values"):
        parse_profile(bad, source="acme.toml", name="acme")
    with pytest.raises(ProfileError, match=r"acme\.toml: relay\.coil must be an integer 0\.\.65535"):
        parse_profile(REGISTER_RELAY.replace(
            "relay = { register = 0x0100, open = 0, close = 1, allow_close = 2 }",
            'relay = { coil = "16" }'), source="acme.toml", name="acme")
    overlapping = REGISTER_RELAY.replace(
        '{ quantity = "voltage.a", address = 0x0000, unit = "V" }',
        '{ quantity = "voltage.a", address = 0x00FF, unit = "V", function = "holding" }')
    with pytest.raises(ProfileError, match=r"acme\.toml: relay\.register: 0x0100 is also holding "
                                           r"register voltage\.a"):
        parse_profile(overlapping, source="acme.toml", name="acme")
    with pytest.raises(ProfileError, match=r"relay must be a table"):
        parse_profile(REGISTER_RELAY.replace(
            "relay = { register = 0x0100, open = 0, close = 1, allow_close = 2 }",
            "relay = 16"), source="acme.toml", name="acme")


async def _with_bus(profile: ModbusProfile, sim_meter: SimMeter, body: Any, retries: int = 1) -> Any:
    sim = SimulatedModbusMeter(7, profile, sim_meter)
    handle = await start_modbus_tcp_meters([sim], "127.0.0.1", 0)
    queue: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
    meter = make_meter("mb-7", 7, profile, PollSchedule(3600, time.monotonic()))
    bus = ModbusBus("tcp", [meter], queue, BusSettings(timeout_s=0.5, retries=retries),
                    host="127.0.0.1", port=handle.port)
    runner = asyncio.create_task(bus.run())  # the priority lane is served by the bus task
    try:
        return await body(bus, handle)
    finally:
        bus.stop()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await handle.close()


def _power(sim_meter: SimMeter) -> float:
    return float(sim_meter.snapshot().values()["power.active.total"])


def test_coil_trip_opens_the_relay_drops_the_load_and_close_restores_it() -> None:
    model = LoadModel(seed=11, clock=ManualClock(0.0))
    sim_meter = model.meter("mb-7", phases=1, base_kw=3.0)
    assert TEMPLATE.relay is not None
    relay = TEMPLATE.relay

    async def body(bus: ModbusBus, handle: Any) -> tuple[RelayOutcome, ...]:
        before = _power(sim_meter)
        tripped = await actuate_modbus_relay(bus, "mb-7", 7, relay, ControlAction.TRIP)
        during = _power(sim_meter)
        assert sim_meter.sample().status.relay_open
        closed = await actuate_modbus_relay(bus, "mb-7", 7, relay, ControlAction.DIRECT_CLOSE)
        assert not sim_meter.sample().status.relay_open
        assert before > 0 and during == 0 and _power(sim_meter) > 0
        assert handle.relay_writes(7) == 2
        return tripped, closed

    tripped, closed = asyncio.run(_with_bus(TEMPLATE, sim_meter, body))
    assert tripped == RelayOutcome(True, "", True, 1)
    assert closed == RelayOutcome(True, "", False, 1)


def test_allow_close_without_a_profile_value_writes_nothing() -> None:
    model = LoadModel(seed=12, clock=ManualClock(0.0))
    sim_meter = model.meter("mb-7", phases=1)
    assert TEMPLATE.relay is not None
    relay = TEMPLATE.relay

    async def body(bus: ModbusBus, handle: Any) -> RelayOutcome:
        outcome = await actuate_modbus_relay(bus, "mb-7", 7, relay, ControlAction.ALLOW_CLOSE)
        assert handle.relay_writes(7) == 0
        return outcome

    outcome = asyncio.run(_with_bus(TEMPLATE, sim_meter, body))
    assert not outcome.ok and "no allow-close value" in outcome.detail


def test_register_relay_allow_close_leaves_it_open_for_the_customer() -> None:
    profile = parse_profile(REGISTER_RELAY, name="reg-relay")
    assert isinstance(profile, ModbusProfile) and profile.relay is not None
    relay = profile.relay
    model = LoadModel(seed=13, clock=ManualClock(0.0))
    sim_meter = model.meter("mb-7", phases=1)

    async def body(bus: ModbusBus, handle: Any) -> None:
        assert (await actuate_modbus_relay(bus, "mb-7", 7, relay, ControlAction.TRIP)).ok
        allowed = await actuate_modbus_relay(bus, "mb-7", 7, relay, ControlAction.ALLOW_CLOSE)
        assert allowed.ok and allowed.relay_open is True
        status = sim_meter.sample().status
        assert status.relay_open and status.close_allowed
        sim_meter.customer_close()
        assert _power(sim_meter) > 0
        assert handle.relay_writes(7) == 2

    asyncio.run(_with_bus(profile, sim_meter, body))


def test_a_refused_write_is_not_repeated() -> None:
    model = LoadModel(seed=14, clock=ManualClock(0.0))
    sim_meter = model.meter("mb-7", phases=1)
    sim_meter.set_protect(True)  # the simulated meter answers exception 04 to a trip
    assert TEMPLATE.relay is not None
    relay = TEMPLATE.relay

    async def body(bus: ModbusBus, handle: Any) -> RelayOutcome:
        outcome = await actuate_modbus_relay(bus, "mb-7", 7, relay, ControlAction.TRIP)
        assert handle.relay_writes(7) == 1
        return outcome

    outcome = asyncio.run(_with_bus(TEMPLATE, sim_meter, body, retries=2))
    assert not outcome.ok and outcome.attempts == 1
    assert "refused the write of 0 to coil 0x0000" in outcome.detail
    assert not sim_meter.sample().status.relay_open


def test_a_silent_meter_gets_one_plus_retries_writes_then_fails() -> None:
    model = LoadModel(seed=15, clock=ManualClock(0.0))
    sim_meter = model.meter("mb-7", phases=1)
    assert TEMPLATE.relay is not None
    relay = TEMPLATE.relay

    async def body(bus: ModbusBus, handle: Any) -> RelayOutcome:
        # Unit 9 does not exist: the TCP simulator answers 0B like a TCP-to-RS-485 gateway
        # whose device is silent — a timeout, so the write is sent again, within the bound.
        return await actuate_modbus_relay(bus, "mb-9", 9, relay, ControlAction.TRIP)

    outcome = asyncio.run(_with_bus(TEMPLATE, sim_meter, body, retries=2))
    assert not outcome.ok and outcome.attempts == 3
    assert "trip not executed after 3 frame(s): no reply to the relay write" in outcome.detail
