"""Simulated Modbus meters end to end: pymodbus async clients poll through plan_reads and
decode_block, over real TCP on 127.0.0.1 and real pseudo-terminals, and what they decode equals
the load model's snapshot exactly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from hil_tests.load_model import DEFAULT_START_EPOCH, LoadModel, ManualClock
from hil_tests.modbus_sim import (
    SimulatedModbusMeter,
    readable_windows,
    start_modbus_rtu_meters,
    start_modbus_tcp_meters,
)
from protocols.modbus import ModbusProfile, Reading, RegisterFunction, decode_block, plan_reads
from protocols.profiles import load_named_profile

pytestmark = pytest.mark.timeout(60)

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def profile(name: str) -> ModbusProfile:
    loaded = load_named_profile(name)
    assert isinstance(loaded, ModbusProfile)
    return loaded


SDM630, DTSU666 = profile("sdm630"), profile("dtsu666")


def rig() -> tuple[ManualClock, LoadModel, list[SimulatedModbusMeter]]:
    clock = ManualClock()
    model = LoadModel(seed=2024, clock=clock)
    meters = [
        SimulatedModbusMeter(1, SDM630, model.meter("sdm-3p", base_kw=7.5)),
        SimulatedModbusMeter(2, DTSU666, model.meter("dtsu-3p", ct_ratio=Decimal(50), pt_ratio=Decimal("1.5"))),
        SimulatedModbusMeter(3, SDM630, model.meter("sdm-pv", phases=1, generating=True, pv_kw=5.0)),
    ]
    return clock, model, meters


async def poll(client: Client, sim: SimulatedModbusMeter) -> dict[str, Reading]:
    """What a gateway poller does: planned block reads, decoded through the profile."""
    readings: dict[str, Reading] = {}
    for block in plan_reads(sim.profile):
        read: Callable[..., Awaitable[Any]] = (
            client.read_input_registers if block.function is RegisterFunction.INPUT
            else client.read_holding_registers)
        reply = await read(block.start, count=block.count, device_id=sim.unit_id)
        assert not reply.isError(), reply
        readings.update(decode_block(block, reply.registers))
    return readings


def assert_matches_snapshot(readings: dict[str, Reading], sim: SimulatedModbusMeter) -> None:
    snapshot = sim.meter.snapshot().values()
    assert set(readings) == set(sim.profile.quantities)
    for spec in sim.profile.registers:
        value = snapshot.get(spec.quantity, Decimal(0))  # a 1-phase meter leaves b/c registers at 0
        expected = value if spec.is_register else float(value)
        reading = readings[spec.quantity]
        assert reading.value == expected, (sim.unit_id, spec.quantity, reading, value)
        assert type(reading.value) is type(expected)


# ---- TCP ------------------------------------------------------------------------------------


def test_tcp_poll_equals_the_load_model_exactly() -> None:
    async def scenario() -> None:
        clock, _, meters = rig()
        handle = await start_modbus_tcp_meters(meters, "127.0.0.1", 0)
        client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
        try:
            assert await client.connect()
            first = {}
            for sim in meters:
                first[sim.unit_id] = await poll(client, sim)
                assert_matches_snapshot(first[sim.unit_id], sim)
                assert len(handle.requests_for(sim.unit_id)) == len(plan_reads(sim.profile))
            assert [(r.function_code, r.address, r.count) for r in handle.requests_for(2)] == [
                (3, 0x0006, 2), (3, 0x2000, 70), (3, 0x401E, 12)]
            assert (first[2]["ratio.ct"].value, first[2]["ratio.pt"].value) == (50.0, 1.5)
            assert first[2]["ratio.pt"].raw == (15,)  # UrAt counts 0.1

            clock.advance(6 * 3600)  # 00:00 -> 06:00 simulated
            for sim in meters:
                later = await poll(client, sim)
                assert_matches_snapshot(later, sim)
                assert sim.meter.t == DEFAULT_START_EPOCH + 6 * 3600
                before = first[sim.unit_id]["energy.active.import.total"].value
                after = later["energy.active.import.total"].value
                assert isinstance(before, Decimal) and isinstance(after, Decimal) and after > before
        finally:
            client.close()
            await handle.close()

    asyncio.run(scenario())


def test_a_spike_knob_glitches_one_read_of_the_import_register() -> None:
    """``spike_next_read``: the next request reading the import total reports it 25 kWh too
    high, once; the next poll (and the model) are the true register."""
    async def scenario() -> None:
        clock, _, meters = rig()
        sim = meters[0]
        handle = await start_modbus_tcp_meters(meters, "127.0.0.1", 0)
        client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
        try:
            assert await client.connect()
            clock.advance(3600)
            sim.spike_next_read(Decimal(25))
            spiked = (await poll(client, sim))["energy.active.import.total"].value
            true = sim.meter.snapshot().values()["energy.active.import.total"]
            assert spiked == true + 25
            assert_matches_snapshot(await poll(client, sim), sim)
        finally:
            client.close()
            await handle.close()

    asyncio.run(scenario())


def test_tcp_commands_faults_and_exceptions_on_the_wire() -> None:
    async def scenario() -> None:
        clock, _, meters = rig()
        sdm, dtsu = meters[0], meters[1]
        async with await start_modbus_tcp_meters(meters) as handle:
            client = AsyncModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
            assert await client.connect()
            try:
                clock.advance(3600)
                sdm.meter.trip()
                readings = await poll(client, sdm)
                assert_matches_snapshot(readings, sdm)
                assert readings["current.a"].value == 0.0 and readings["power.active.total"].value == 0.0
                assert readings["voltage.a"].value > 200  # type: ignore[operator]

                dtsu.meter.power_off()
                silent = await client.read_holding_registers(0x2000, count=2, device_id=2)
                assert silent.isError() and silent.exception_code == 0x0B  # gateway: target did not respond
                assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()

                unmapped = await client.read_input_registers(0x0100, count=2, device_id=1)
                assert unmapped.isError() and unmapped.exception_code == 0x02
                wrong_table = await client.read_holding_registers(0x0000, count=2, device_id=1)
                assert wrong_table.isError() and wrong_table.exception_code == 0x02
                past_the_map = await client.read_input_registers(0x0000, count=81, device_id=1)
                assert past_the_map.isError() and past_the_map.exception_code == 0x02
                dtsu.meter.power_on()
                write = await client.write_register(0x0006, 5, device_id=2)
                assert write.isError() and write.exception_code == 0x02  # read-only
                coils = await client.read_coils(0, count=1, device_id=2)
                assert coils.isError() and coils.exception_code == 0x01
                absent = await client.read_input_registers(0, count=2, device_id=9)
                assert absent.isError() and absent.exception_code == 0x0B
            finally:
                client.close()

    asyncio.run(scenario())


def test_readable_windows_follow_the_profile_gap_rule() -> None:
    assert readable_windows(SDM630)[RegisterFunction.INPUT] == [(0x0000, 0x50), (0x0156, 4)]
    assert readable_windows(SDM630)[RegisterFunction.HOLDING] == []
    assert readable_windows(DTSU666)[RegisterFunction.HOLDING] == [(0x0006, 2), (0x2000, 70), (0x401E, 12)]


def test_bad_unit_ids_are_refused() -> None:
    async def scenario() -> None:
        _, model, _ = rig()
        meter = model.meter("x")
        with pytest.raises(ValueError, match=r"unit id 0 is outside 1\.\.247"):
            await start_modbus_tcp_meters([SimulatedModbusMeter(0, SDM630, meter)])
        with pytest.raises(ValueError, match="used by more than one"):
            await start_modbus_tcp_meters([SimulatedModbusMeter(5, SDM630, meter),
                                           SimulatedModbusMeter(5, DTSU666, meter)])

    asyncio.run(scenario())


# ---- RTU over a pseudo-terminal -------------------------------------------------------------


def test_rtu_poll_over_a_pty_at_9600_baud() -> None:
    async def scenario() -> None:
        clock, _, meters = rig()
        handle = await start_modbus_rtu_meters(meters, 9600)
        assert handle.device_path.startswith("/dev/pts/")
        client = AsyncModbusSerialClient(handle.device_path, baudrate=9600, timeout=1, retries=0)
        try:
            assert await client.connect()
            for sim in meters:
                assert_matches_snapshot(await poll(client, sim), sim)

            # 80 registers back = 165 bytes, plus the 8-byte request: at 10 bits per character
            # that is 0.18 s on a real 9600-baud line, and the bridge keeps that pace.
            started = time.perf_counter()
            reply = await client.read_input_registers(0, count=80, device_id=1)
            elapsed = time.perf_counter() - started
            assert not reply.isError() and elapsed >= (8 + 165) * 10 / 9600

            clock.advance(1800)
            assert_matches_snapshot(await poll(client, meters[1]), meters[1])

            # On RS-485 an absent or unpowered meter is simply silent: the master times out.
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=77)
            meters[0].meter.power_off()
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=1)
            meters[0].meter.power_on()
            assert_matches_snapshot(await poll(client, meters[0]), meters[0])
        finally:
            client.close()
            await handle.close()

    asyncio.run(scenario())
