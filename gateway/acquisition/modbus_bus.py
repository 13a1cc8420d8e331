"""Modbus RTU and TCP bus tasks on pymodbus's async clients.

pymodbus does the framing (MBAP / RTU CRC); our side only maps registers to quantities, through the
meter's profile (:mod:`protocols.modbus.register_map`). A poll is the profile's merged read blocks —
typically 1–3 requests for the ten standard quantities, not one request per quantity.

RTU: one client, one transaction at a time (half-duplex, like DL/T 645). TCP: a small pool of
connections to the bus's endpoint so up to ``max_concurrency`` meters are polled in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest

from gateway.acquisition.base import BusSettings, MeterSlot, ScheduledBus, now_ms
from gateway.acquisition.deadline import Deadlines, for_current_task
from gateway.acquisition.errors import AcquisitionError
from gateway.acquisition.meter_clock import CLOCK_OFFSET, ClockCadence
from gateway.acquisition.modbus_responses import RESPONSE_CLASSES, register_bytes
from gateway.acquisition.modbus_tcp_exchange import TcpExchange, exchange_for, frame_tail
from gateway.acquisition.poll_result import BusEvent, PolledValue, PollResult
from protocols.dlt645.clock import clock_offset_s
from protocols.frozen import frozen_maker
from protocols.modbus.clock import CLOCK_WORDS, ModbusClock, decode_clock
from protocols.modbus.errors import RegisterDecodeError
from protocols.modbus.profile import ModbusProfile, RegisterFunction
from protocols.modbus.register_map import (
    DecodeProblem,
    ReadBlock,
    decode_reply_columns,
    plan_reads,
)
from protocols.modbus.relay import ModbusWrite

ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient


@dataclass
class ModbusMeter(MeterSlot):
    unit: int = 1
    profile: ModbusProfile | None = None
    blocks: list[ReadBlock] = field(default_factory=list)
    #: When the clock the profile maps is read (gateway/acquisition/meter_clock.py).
    clock: ClockCadence | None = None
    #: pymodbus's request of each block, made once and sent again at every poll (pymodbus sets
    #: its transaction id and checks address and count when it encodes it). One meter's: a
    #: meter is polled by one worker at a time, so no request is in two transactions at once.
    requests: dict[tuple[RegisterFunction, int, int], ModbusPDU] = field(
        default_factory=dict, repr=False, compare=False)
    #: Each TCP request's frame less its transaction id (gateway/acquisition/modbus_tcp_exchange.py)
    frames: dict[tuple[RegisterFunction, int, int], bytes] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def reads_clock(self) -> bool:
        return self.clock is not None


#: Modbus exceptions 0A (gateway path unavailable) and 0B (target device failed to respond).
GATEWAY_EXCEPTIONS = frozenset({0x0A, 0x0B})
_new_tuple = tuple.__new__
_poll_result = frozen_maker(PollResult)


class ModbusRefusal(AcquisitionError, ModbusException):
    """The meter answered with a Modbus exception (e.g. 02 illegal address, 04 device failure):
    it heard the request and said no. Sending the same write again changes nothing, unlike a
    timeout."""


@dataclass(frozen=True, slots=True)
class RelayRead:
    """A priority read of a relay's coil (``kind`` ``coil``, FC 01) or holding register
    (``register``, FC 03) at ``address`` of ``unit``; the reply is its value as an int."""

    unit: int
    kind: str
    address: int


def make_meter(meter_id: str, unit: int, profile: ModbusProfile, schedule: Any, *,
               blocks: list[ReadBlock] | None = None) -> ModbusMeter:
    """``blocks``: the profile's read plan when the caller already made it; meters of one
    profile share it (and so the decode plans cached per block), nobody changes it."""
    return ModbusMeter(meter_id=meter_id, address=str(unit), schedule=schedule, unit=unit,
                       profile=profile, blocks=plan_reads(profile) if blocks is None else blocks)


class ModbusBus(ScheduledBus[ModbusMeter]):
    """RTU (``serial`` given) or TCP (``host``/``port`` given)."""

    def __init__(self, name: str, meters: list[ModbusMeter],
                 outbound: asyncio.Queue[PollResult | BusEvent], settings: BusSettings, *,
                 host: str | None = None, port: int = 502, serial: dict[str, Any] | None = None) -> None:
        super().__init__(name, meters, outbound, settings)
        self.host = host
        self.tcp_port = port
        self.serial = serial
        self._pool: asyncio.Queue[ModbusClient] = asyncio.Queue()
        self._clients: list[ModbusClient] = []
        #: The TCP clients whose register reads skip client.execute (modbus_tcp_exchange.py)
        self._exchanges: dict[ModbusClient, TcpExchange] = {}
        #: The bound on each register read, one per worker task (gateway/acquisition/deadline.py)
        self._deadlines: dict[asyncio.Task[object], Deadlines] = {}
        #: The loop the bus was opened on, for the deadlines' task look-up (deadline.py)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The meters' zone east of UTC ([commands] meter_utc_offset_min), for clock reads.
        self.meter_utc_offset_min = 480

    def describe_link(self) -> str:
        if self.serial:
            return f"{self.serial.get('baudrate')} baud on {self.serial.get('port')}"
        return f"{self.host}:{self.tcp_port}"

    def _new_client(self) -> ModbusClient:
        client = self._make_client()
        for response_class in RESPONSE_CLASSES:
            client.register(response_class)
        return client

    def _make_client(self) -> ModbusClient:
        timeout = self.settings.timeout_s
        if self.serial is not None:
            return AsyncModbusSerialClient(
                self.serial["port"], baudrate=self.serial.get("baudrate", 9600),
                parity=self.serial.get("parity", "N"), bytesize=self.serial.get("bytesize", 8),
                stopbits=int(self.serial.get("stopbits", 1)), timeout=timeout, retries=0,
                reconnect_delay=0.5, reconnect_delay_max=30,
            )
        assert self.host is not None
        return AsyncModbusTcpClient(self.host, port=self.tcp_port, timeout=timeout, retries=0,
                                    reconnect_delay=0.5, reconnect_delay_max=30)

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        count = 1 if self.serial is not None else max(1, self.settings.concurrency)
        for _ in range(count):
            client = self._new_client()
            self._clients.append(client)
            exchange = exchange_for(client)
            if exchange is not None:
                self._exchanges[client] = exchange
            self._pool.put_nowait(client)

    async def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._exchanges.clear()
        for guard in self._deadlines.values():
            guard.close()
        self._deadlines.clear()

    async def _client(self) -> ModbusClient:
        pool = self._pool
        # get_nowait while one is free: what Queue.get does then, without its coroutine
        client = pool.get_nowait() if not pool.empty() else await pool.get()
        if not client.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.connect(), self.settings.timeout_s * 2)
        return client

    async def _read_block(self, client: ModbusClient, meter: ModbusMeter, block: ReadBlock) -> bytes:
        """One register block: what ``client.read_holding_registers`` (or input) does, with
        the meter's request made once (:attr:`ModbusMeter.requests`) instead of a new PDU per
        read. On TCP the request goes through :class:`TcpExchange` (execute's steps without its
        lock and ``wait_for``), bounded at the client's timeout by the worker's deadline; else
        through ``client.execute``, whose own timeout bounds it, with the deadline at twice that
        only catching a client that hangs (one timer per worker rather than one per read,
        gateway/acquisition/deadline.py)."""
        key = (block.function, block.start, block.count)
        request = meter.requests.get(key)
        if request is None:
            kind = ReadInputRegistersRequest if block.function is RegisterFunction.INPUT \
                else ReadHoldingRegistersRequest
            request = meter.requests[key] = kind(address=block.start, count=block.count,
                                                 dev_id=meter.unit)
        exchange = self._exchanges.get(client)
        if exchange is None:
            with for_current_task(self._deadlines, self.settings.timeout_s * 2, self._loop):
                response = await client.execute(False, request)
        else:
            tail = meter.frames.get(key)
            if tail is None:
                tail = meter.frames[key] = frame_tail(exchange.ctx, request)
            response = await exchange.read(
                request, tail, for_current_task(self._deadlines, self.settings.timeout_s, self._loop))
        if response.isError():
            raise ModbusException(f"exception response {response}")
        return register_bytes(response)

    async def poll(self, meter: ModbusMeter) -> PollResult:
        started_ms = now_ms()
        t0 = time.monotonic()
        meter.stats.polls += 1
        values: list[PolledValue] = []
        errors: list[str] = []
        answered = False
        client = await self._client()
        try:
            for block in meter.blocks:
                if self.serial is not None:
                    await self.serve_priority_now()
                registers: bytes | None = None
                for attempt in range(1 + self.settings.retries):
                    started = time.monotonic()
                    try:
                        if not client.connected:
                            raise ModbusException(f"not connected to {self.describe_link()}")
                        registers = await self._read_block(client, meter, block)
                        answered = True
                        self.stats.record(time.monotonic(), True)
                        break
                    except (ModbusException, TimeoutError, ConnectionError, OSError) as exc:
                        self.stats.record(time.monotonic(), False)
                        meter.stats.timeouts += 1
                        last = f"{block.function.value} {block.start:#06x}+{block.count}: {exc}"
                        if attempt < self.settings.retries:
                            meter.stats.retries += 1
                            await asyncio.sleep(self.settings.retry_backoff_s * (attempt + 1))
                    finally:
                        self.stats.busy_s += time.monotonic() - started
                        meter.stats.transactions += 1
                if registers is None:
                    errors.append(last)
                    if not answered:
                        break
                    continue
                t_ms = now_ms()
                try:
                    quantities, units, decoded = decode_reply_columns(block, registers)
                except RegisterDecodeError as exc:
                    meter.stats.bad_frames += 1
                    errors.append(str(exc))
                    continue
                if DecodeProblem in map(type, decoded):
                    for quantity, unit, value in zip(quantities, units, decoded, strict=True):
                        if isinstance(value, DecodeProblem):
                            errors.append(f"{quantity}: {value.value}")
                        else:
                            values.append(PolledValue(quantity, value, unit, t_ms))
                else:
                    # PolledValue(quantity, value, unit, t_ms) for each, in one C loop: the
                    # columns zipped into tuples made named tuples without their Python-level
                    # __new__ (ten per poll).
                    values += map(_new_tuple, repeat(PolledValue),
                                  zip(quantities, decoded, units, repeat(t_ms)))
            if answered and meter.clock is not None and meter.clock.is_due(time.monotonic()):
                offset = await self._read_clock(client, meter, meter.clock)
                if offset is not None:
                    values.append(offset)
        finally:
            self._pool.put_nowait(client)
        ok = answered and bool(values)
        meter.stats.last_poll_s = time.monotonic() - t0
        if ok:
            meter.stats.polls_ok += 1
            meter.stats.last_ok_ms = now_ms()
        else:
            meter.stats.polls_failed += 1
        if errors:
            meter.stats.last_error = "; ".join(errors)
        # PollResult(...) with every field given (no flags), without the frozen dataclass's
        # __init__: one per poll (protocols/frozen.py).
        return _poll_result(meter.meter_id, self.name, started_ms, now_ms(), ok, tuple(values),
                            tuple(errors), {})

    async def _read_clock(self, client: ModbusClient, meter: ModbusMeter,
                          cadence: ClockCadence) -> PolledValue | None:
        """The clock's offset as a value of this poll (one read of the six registers the
        profile maps, protocols/modbus/clock.py); None when it was not had."""
        assert meter.profile is not None and meter.profile.clock is not None
        clock: ModbusClock = meter.profile.clock
        read = client.read_holding_registers if clock.function == "holding" else \
            client.read_input_registers
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.timeout_s * 2):
                response = await read(clock.address, count=CLOCK_WORDS, device_id=meter.unit)
            received = now_ms()
            if response.isError():
                raise ModbusException(f"exception response {response}")
            moment = decode_clock(list(response.registers))
        except (ModbusException, TimeoutError, ConnectionError, OSError, ValueError) as exc:
            meter.stats.last_error = f"clock {clock.function} {clock.address:#06x}: {exc}"
            cadence.failed(time.monotonic())
            return None
        finally:
            self.stats.busy_s += time.monotonic() - started
            meter.stats.transactions += 1
        cadence.read(time.monotonic())
        offset = clock_offset_s(moment, received, self.meter_utc_offset_min)
        return PolledValue(CLOCK_OFFSET, round(offset, 3), "s", received)

    async def send_priority(self, message: Any) -> Any:
        """One relay write (:class:`~protocols.modbus.relay.ModbusWrite`) or read-back
        (:class:`RelayRead`), one attempt: the caller's actuation state machine decides about
        re-sending (a write is re-sent only after the read-back disagrees, with a bound).
        Raises :class:`ModbusRefusal` for an exception reply, ModbusException / TimeoutError /
        OSError when nothing usable came back."""
        if not isinstance(message, ModbusWrite | RelayRead):
            raise TypeError(f"Modbus bus {self.name} cannot send {type(message).__name__}")
        client = await self._client()
        try:
            if not client.connected:
                raise ModbusException(f"not connected to {self.describe_link()}")
            async with asyncio.timeout(self.settings.timeout_s * 2):
                if isinstance(message, ModbusWrite):
                    if message.kind == "coil":
                        response = await client.write_coil(message.address, bool(message.value),
                                                           device_id=message.unit)
                    else:
                        response = await client.write_register(message.address, message.value,
                                                               device_id=message.unit)
                elif message.kind == "coil":
                    response = await client.read_coils(message.address, count=1,
                                                       device_id=message.unit)
                else:
                    response = await client.read_holding_registers(message.address, count=1,
                                                                   device_id=message.unit)
            if response.isError():
                # 0A/0B come from a TCP-to-RS-485 gateway, not the meter: nobody answered,
                # which is a timeout to retry, not a refusal.
                if getattr(response, "exception_code", None) in GATEWAY_EXCEPTIONS:
                    raise ModbusException(f"unit {message.unit} did not answer the TCP "
                                          f"gateway ({response})")
                raise ModbusRefusal(f"unit {message.unit} answered {response}")
            if isinstance(message, ModbusWrite):
                return response
            return int(response.bits[0]) if message.kind == "coil" else int(response.registers[0])
        finally:
            self._pool.put_nowait(client)
