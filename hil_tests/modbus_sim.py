"""Simulated Modbus meters: pymodbus servers whose registers come from the load model.

Each :class:`SimulatedModbusMeter` pairs a unit id, a profile (the meter model's register map)
and a :class:`~hil_tests.load_model.SimMeter`. Several share one server, as meters share one
RS-485 line or one TCP gateway. On every request the unit's meter is advanced to the model's
current simulated time and its snapshot is encoded through the profile
(:func:`protocols.modbus.register_map.encode_values`) into the served registers — the same
mapping the gateway decodes with, so a test can compare published values with
``meter.snapshot()`` exactly.

What the wire does, as far as a simulator can make it:

* A profile register for ``prepaid.balance.*`` / ``prepaid.overdraft.*`` serves the load
  model's prepayment account (:meth:`~hil_tests.load_model.SimMeter.set_prepaid`, ``recharge``),
  which falls as the meter's import register rises.
* Only the registers a profile maps are readable, joined across gaps of up to the profile's
  ``max_gap`` (what the real meter tolerates); anything else is exception 02, a write is
  exception 02 (read-only), other function codes exception 01.
* A profile with a ``relay`` table gets that coil (FC 01 read, FC 05 write) or holding register
  (FC 03 read, FC 06 write) served from the load model's relay: writing the open value trips the
  meter (its load, and so its registers, stop), the close value closes it, an ``allow_close``
  value lets the customer close it. A value the profile does not name is exception 03; a trip
  of a protected meter (保电) is exception 04. Every write that reached a unit is in
  ``requests``; :meth:`ModbusMetersHandle.relay_writes` counts them.
* A unit id nobody answers to, or a meter in a supply outage, is silent on RTU (the master
  times out) and on TCP answers exception 0B "gateway target device failed to respond", as a
  TCP-to-RS-485 gateway does.
* RTU runs over two pseudo-terminals joined back to back (like ``socat pty,raw pty,raw``): the
  pymodbus server opens one slave, clients open :attr:`ModbusRtuMetersHandle.device_path`. The
  bridge delays every chunk by its time on the wire at the configured baud rate (10 or 11 bits
  per character), so a 2400-baud poll takes as long as it would on a real line.

Uses pymodbus 3.9+'s ``SimDevice``/``SimData`` datastore and its ``action`` hook, which runs
before each request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import tty
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Self

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hil_tests.load_model import RelayOutcome, SimMeter
from protocols.modbus.clock import CLOCK_WORDS, encode_clock
from protocols.modbus.profile import ModbusProfile, RegisterFunction
from protocols.modbus.register_map import encode_values
from protocols.modbus.relay import ModbusRelay

#: Modbus function codes that write (single/multiple coils, single/multiple registers).
WRITE_FUNCTIONS = frozenset({5, 6, 15, 16})

__all__ = [
    "ModbusMetersHandle",
    "ModbusRtuMetersHandle",
    "ModbusTcpMetersHandle",
    "ServedRequest",
    "SimulatedModbusMeter",
    "readable_windows",
    "start_modbus_rtu_meters",
    "start_modbus_tcp_meters",
]


@dataclass(frozen=True, slots=True)
class SimulatedModbusMeter:
    """One meter on a simulated bus: ``unit_id`` (1..247), ``profile``, ``meter``;
    ``spikes`` what the next read of a quantity reports too much (:meth:`spike_next_read`);
    ``clock_offset_s`` how far ahead of the model's time the clock is that the profile's
    ``clock`` registers show (protocols/modbus/clock.py)."""

    unit_id: int
    profile: ModbusProfile
    meter: SimMeter
    spikes: dict[str, Decimal] = field(default_factory=dict)
    clock_offset_s: float = 0.0

    def spike_next_read(self, kwh: Decimal, quantity: str = "energy.active.import.total") -> None:
        """The next request that reads ``quantity``'s registers reports it ``kwh`` too high,
        once — a glitched register read, as VEE must catch — then the true value again."""
        self.spikes[quantity] = Decimal(kwh)

    def served_values(self, values: dict[str, Decimal], function: RegisterFunction,
                      first: int, end: int) -> dict[str, Decimal]:
        """The model's values as this request reads them: a spike armed for a quantity whose
        registers lie in [first, end) of ``function`` is added, and consumed."""
        for spec in self.profile.registers:
            if (spec.quantity in self.spikes and spec.function is function
                    and first <= spec.address < end and spec.quantity in values):
                spike = self.spikes.pop(spec.quantity)
                values = {**values, spec.quantity: values[spec.quantity] + spike}
        return values


@dataclass(frozen=True, slots=True)
class ServedRequest:
    """A request that reached a unit: ``unit_id``, ``function_code``, ``address``, ``count``."""

    unit_id: int
    function_code: int
    address: int
    count: int


def readable_windows(profile: ModbusProfile) -> dict[RegisterFunction, list[tuple[int, int]]]:
    """(start, count) ranges the simulated meter answers for, per function.

    The profile's registers joined across gaps of at most ``max_gap`` unlisted registers —
    exactly what the profile claims the real meter lets a master read through.
    """
    windows: dict[RegisterFunction, list[tuple[int, int]]] = {f: [] for f in RegisterFunction}
    for spec in profile.registers:
        ranges = windows[spec.function]
        if ranges and spec.address - (ranges[-1][0] + ranges[-1][1]) <= profile.max_gap:
            start, count = ranges[-1]
            ranges[-1] = (start, max(start + count, spec.end) - start)
        else:
            ranges.append((spec.address, spec.words))
    return windows


def _register_block(ranges: list[tuple[int, int]]) -> list[SimData]:
    if not ranges:
        return [SimData(0, datatype=DataType.INVALID)]
    return [SimData(start, count=count, values=0, datatype=DataType.REGISTERS, readonly=True)
            for start, count in ranges]


async def _serve_unit(
    sim: SimulatedModbusMeter,
    log: list[ServedRequest],
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """pymodbus ``action`` hook: refresh this unit's registers from the load model, and serve
    the relay (reads show the model's relay, writes move it)."""
    if set_values or function_code not in WRITE_FUNCTIONS:
        # pymodbus runs the hook again, without values, to build a write's echo: that is
        # the same request, not another one.
        log.append(ServedRequest(sim.unit_id, function_code, address, count))
    relay = sim.profile.relay
    if relay is not None and function_code in (1, 5, 15) and relay.kind == "coil":
        return _serve_relay_coil(sim, relay, start_address, registers, set_values)
    if (relay is not None and function_code in (3, 6, 16) and relay.kind == "register"
            and address <= relay.address < address + max(count, 1)):
        problem = _serve_relay_register(sim, relay, function_code, start_address, registers,
                                        set_values)
        if problem is not None or function_code != 3:
            return problem
    if function_code == 3:
        function = RegisterFunction.HOLDING
    elif function_code == 4:
        function = RegisterFunction.INPUT
    else:
        return ExcCodes.ILLEGAL_FUNCTION
    snapshot = sim.meter.sample()
    if not snapshot.powered:
        raise NoSuchIdException(f"unit {sim.unit_id} ({sim.meter.meter_id}) has no supply")
    values = snapshot.values()
    if sim.spikes:
        values = sim.served_values(values, function, address, address + count)
    for (served_function, register), word in encode_values(sim.profile, values).items():
        if served_function is function:
            registers[register - start_address] = word
    clock = sim.profile.clock
    if clock is not None and clock.function == function.value:
        moment = snapshot.local_time + dt.timedelta(seconds=sim.clock_offset_s)
        for k, word in enumerate(encode_clock(moment.replace(tzinfo=None))):
            if 0 <= clock.address + k - start_address < len(registers):
                registers[clock.address + k - start_address] = word
    return None


def _relay_value(sim: SimulatedModbusMeter, relay: ModbusRelay) -> int:
    """The coil/register value the model's relay state reads as."""
    status = sim.meter.sample().status
    if not status.relay_open:
        return relay.close_value
    if status.close_allowed and relay.allow_close_value is not None:
        return relay.allow_close_value
    return relay.open_value


def _apply_relay_write(sim: SimulatedModbusMeter, relay: ModbusRelay, value: int) -> ExcCodes | None:
    """Move the model's relay as the meter would for ``value``."""
    if value == relay.open_value:
        outcome = sim.meter.trip()
    elif value == relay.close_value:
        outcome = sim.meter.close()
    elif relay.allow_close_value is not None and value == relay.allow_close_value:
        outcome = sim.meter.allow_close()
    else:
        return ExcCodes.ILLEGAL_VALUE
    return None if outcome is RelayOutcome.EXECUTED else ExcCodes.DEVICE_FAILURE


def _serve_relay_coil(sim: SimulatedModbusMeter, relay: ModbusRelay, start_address: int,
                      registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
    if not sim.meter.sample().powered:
        raise NoSuchIdException(f"unit {sim.unit_id} ({sim.meter.meter_id}) has no supply")
    if set_values:
        if len(set_values) != 1:
            return ExcCodes.ILLEGAL_ADDRESS  # only the relay coil exists
        problem = _apply_relay_write(sim, relay, int(bool(set_values[0])))
        if problem is not None:
            return problem
    # The datastore packs 16 coils per word, bit 0 first; show the model's state in it.
    index, bit = relay.address // 16 - start_address, relay.address % 16
    if _relay_value(sim, relay):
        registers[index] |= 1 << bit
    else:
        registers[index] &= ~(1 << bit)
    return None


def _serve_relay_register(sim: SimulatedModbusMeter, relay: ModbusRelay, function_code: int,
                          start_address: int, registers: list[int],
                          set_values: list[int] | list[bool] | None) -> ExcCodes | None:
    if not sim.meter.sample().powered:
        raise NoSuchIdException(f"unit {sim.unit_id} ({sim.meter.meter_id}) has no supply")
    if set_values:  # (a write's echo comes without values: just show the state)
        if function_code != 6 and len(set_values) != 1:
            return ExcCodes.ILLEGAL_ADDRESS  # the relay register is written alone
        problem = _apply_relay_write(sim, relay, int(set_values[0]))
        if problem is not None:
            return problem
    registers[relay.address - start_address] = _relay_value(sim, relay)
    return None


async def _absent_unit(
    log: list[ServedRequest],
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """Catch-all for unit ids no meter has: behave like nobody is there."""
    raise NoSuchIdException("no meter has this unit id")


def _devices(meters: Sequence[SimulatedModbusMeter], log: list[ServedRequest]) -> list[SimDevice]:
    seen: set[int] = set()
    devices: list[SimDevice] = []
    for sim in meters:
        if not 1 <= sim.unit_id <= 247:
            raise ValueError(f"meter {sim.meter.meter_id}: unit id {sim.unit_id} is outside 1..247")
        if sim.unit_id in seen:
            raise ValueError(f"unit id {sim.unit_id} is used by more than one simulated meter")
        seen.add(sim.unit_id)
        windows = readable_windows(sim.profile)
        if sim.profile.clock is not None:  # the clock's six registers, read on their own
            clock = sim.profile.clock
            windows[RegisterFunction(clock.function)] = sorted(
                [*windows[RegisterFunction(clock.function)], (clock.address, CLOCK_WORDS)])
        relay = sim.profile.relay
        # Coils: only a relay coil exists; anything else is answered with exception 01 by the
        # action. A relay register is writable, the mapped registers are not.
        coils = [SimData(relay.address if relay is not None and relay.kind == "coil" else 0,
                         datatype=DataType.BITS)]
        holding = _register_block(windows[RegisterFunction.HOLDING])
        if relay is not None and relay.kind == "register":
            holding = [b for b in holding if b.datatype is not DataType.INVALID]
            holding.append(SimData(relay.address, count=1, values=0, datatype=DataType.REGISTERS))
        devices.append(SimDevice(
            id=sim.unit_id,
            simdata=(
                coils,
                [SimData(0, datatype=DataType.BITS)],  # discrete inputs: exception 01
                holding,
                _register_block(windows[RegisterFunction.INPUT]),
            ),
            action=functools.partial(_serve_unit, sim, log),
        ))
    # pymodbus routes unknown ids to device 0; every address must be "valid" there so that the
    # action (and its silence) is reached instead of an illegal-address reply.
    devices.append(SimDevice(
        id=0,
        simdata=[SimData(0, count=0x10000, values=0, datatype=DataType.REGISTERS)],
        action=functools.partial(_absent_unit, log),
    ))
    return devices


@dataclass(eq=False)
class ModbusMetersHandle:
    """A running simulated bus. ``requests`` records every request that reached a unit
    (including absent ones); :meth:`close` stops the server. Usable as ``async with``."""

    server: ModbusBaseServer
    requests: list[ServedRequest]

    async def close(self) -> None:
        """Stop serving and release the port or pseudo-terminals."""
        await self.server.shutdown()  # type: ignore[no-untyped-call]

    def requests_for(self, unit_id: int) -> list[ServedRequest]:
        """The requests one unit received."""
        return [r for r in self.requests if r.unit_id == unit_id]

    def relay_writes(self, unit_id: int) -> int:
        """How many write requests reached ``unit_id`` (the only writable thing a simulated
        meter has is its relay), refused ones included: a test that expects a command to be
        stopped before the bus asserts zero."""
        return sum(1 for r in self.requests_for(unit_id) if r.function_code in WRITE_FUNCTIONS)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass(eq=False)
class ModbusTcpMetersHandle(ModbusMetersHandle):
    """A Modbus TCP server: connect to ``host``:``port``."""

    host: str = "127.0.0.1"
    port: int = 0


async def start_modbus_tcp_meters(
    meters: Sequence[SimulatedModbusMeter],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    silent_absent_units: bool = False,
) -> ModbusTcpMetersHandle:
    """Serve ``meters`` over Modbus TCP on ``host``; ``port=0`` picks a free port (see
    ``handle.port``). Absent or unpowered units answer exception 0B unless
    ``silent_absent_units``."""
    log: list[ServedRequest] = []
    server = ModbusTcpServer(_devices(meters, log), address=(host, port),
                             ignore_missing_devices=silent_absent_units)
    await server.serve_forever(background=True)
    sockets = getattr(server.transport, "sockets", None)
    if not sockets:
        await server.shutdown()  # type: ignore[no-untyped-call]
        raise OSError(f"Modbus TCP simulator could not listen on {host}:{port}")
    bound_port = int(sockets[0].getsockname()[1])
    return ModbusTcpMetersHandle(server=server, requests=log, host=host, port=bound_port)


# --------------------------------------------------------------------------------------------
# RTU over pseudo-terminals
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _PtyBridge:
    """Two pseudo-terminals back to back with the wire's timing.

    A pty has one named end (the slave, ``/dev/pts/N``) and an anonymous master. pymodbus opens
    its serial port by name, and so do clients, so each side gets the slave of its own pty and
    this bridge copies between the two masters. We keep both slaves open ourselves: on Linux a
    master read fails with EIO while no slave is open, which would break the bridge whenever a
    client reconnects.
    """

    char_time_s: float
    server_master: int = -1
    server_slave: int = -1
    client_master: int = -1
    client_slave: int = -1
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _readers: list[int] = field(default_factory=list)

    def open(self) -> None:
        self.server_master, self.server_slave = os.openpty()
        self.client_master, self.client_slave = os.openpty()
        for fd in (self.server_slave, self.client_slave):
            tty.setraw(fd)
        for fd in (self.server_master, self.client_master):
            os.set_blocking(fd, False)

    @property
    def server_path(self) -> str:
        return os.ttyname(self.server_slave)

    @property
    def client_path(self) -> str:
        return os.ttyname(self.client_slave)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for source, target in ((self.client_master, self.server_master),
                               (self.server_master, self.client_master)):
            lane: asyncio.Queue[bytes] = asyncio.Queue()
            loop.add_reader(source, self._read, source, lane)
            self._readers.append(source)
            self._tasks.append(asyncio.create_task(self._deliver(lane, target)))

    def _read(self, source: int, lane: asyncio.Queue[bytes]) -> None:
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # no slave open at the moment (EIO); the next open resumes the flow
        if data:
            lane.put_nowait(data)

    async def _deliver(self, lane: asyncio.Queue[bytes], target: int) -> None:
        while True:
            data = await lane.get()
            if self.char_time_s:
                await asyncio.sleep(len(data) * self.char_time_s)
            while data:
                try:
                    written = os.write(target, data)
                except BlockingIOError:
                    await asyncio.sleep(0.001)
                    continue
                except OSError:
                    break  # the other side is gone; drop what was on the wire
                data = data[written:]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for fd in (self.server_master, self.server_slave, self.client_master, self.client_slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.server_master = self.server_slave = self.client_master = self.client_slave = -1


@dataclass(eq=False)
class ModbusRtuMetersHandle(ModbusMetersHandle):
    """A Modbus RTU bus on a pseudo-terminal: open ``device_path`` at ``baudrate``."""

    device_path: str = ""
    baudrate: int = 9600
    bridge: _PtyBridge | None = None

    async def close(self) -> None:
        await super().close()
        if self.bridge is not None:
            await self.bridge.close()


async def start_modbus_rtu_meters(
    meters: Sequence[SimulatedModbusMeter],
    baudrate: int = 9600,
    *,
    parity: str = "N",
    stopbits: int = 1,
    pace: bool = True,
) -> ModbusRtuMetersHandle:
    """Serve ``meters`` as Modbus RTU slaves on a pseudo-terminal; clients open
    ``handle.device_path``. With ``pace`` the bridge holds each chunk for its time on the wire
    at ``baudrate`` (start + 8 data + parity + stop bits per character)."""
    if parity not in ("N", "E", "O") or stopbits not in (1, 2):
        raise ValueError("parity must be N, E or O and stopbits 1 or 2")
    bits = 1 + 8 + (0 if parity == "N" else 1) + stopbits
    bridge = _PtyBridge(char_time_s=bits / baudrate if pace else 0.0)
    bridge.open()
    log: list[ServedRequest] = []
    try:
        server = ModbusSerialServer(_devices(meters, log), port=bridge.server_path, baudrate=baudrate,
                                    parity=parity, stopbits=stopbits, ignore_missing_devices=True)
        await server.serve_forever(background=True)
    except BaseException:
        await bridge.close()
        raise
    bridge.start()
    return ModbusRtuMetersHandle(server=server, requests=log, device_path=bridge.client_path,
                                 baudrate=baudrate, bridge=bridge)
