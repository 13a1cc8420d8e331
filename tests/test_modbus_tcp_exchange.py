"""TcpExchange (gateway/acquisition/modbus_tcp_exchange.py) against pymodbus's own
``client.execute``, side by side, on a real pymodbus TCP server: same replies, same exception
responses, same errors and the same connection drop after unanswered requests (silence, a reply
of another unit or transaction, a connection cut mid-request), the same recovery; and the
version / setup guard that keeps ``client.execute`` everywhere else."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.acquisition import modbus_bus
from gateway.acquisition.base import BusSettings
from gateway.acquisition.deadline import Deadlines
from gateway.acquisition.modbus_bus import ModbusBus, make_meter
from gateway.acquisition.modbus_responses import RESPONSE_CLASSES
from gateway.acquisition.modbus_tcp_exchange import TcpExchange, exchange_for, frame_tail
from gateway.acquisition.schedule import PollSchedule
from hil_tests.load_model import LoadModel, ManualClock
from hil_tests.modbus_sim import SimulatedModbusMeter, start_modbus_tcp_meters
from protocols.modbus.profile import ModbusProfile
from protocols.profiles import load_named_profile

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 0.2
VALUES = list(range(100, 140))


class Proxy:
    """TCP between the clients and the pymodbus server; ``mode`` spoils the replies:
    ``silent`` drops them, ``wrong_unit`` / ``wrong_tid`` change the MBAP unit id / transaction
    id, ``cut`` closes the client's connection when a request arrives."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.server_port)
        self._writers += [client_w, server_w]

        async def upstream() -> None:
            while data := await client_r.read(512):
                if self.mode == "cut":
                    client_w.close()
                    server_w.close()
                    return
                server_w.write(data)

        async def downstream() -> None:
            while data := await server_r.read(512):
                if self.mode == "silent":
                    continue
                frame = bytearray(data)
                if self.mode == "wrong_unit":
                    frame[6] = (frame[6] + 1) & 0xFF
                elif self.mode == "wrong_tid":
                    frame[0:2] = ((int.from_bytes(frame[0:2], "big") + 7) & 0xFFFF).to_bytes(2, "big")
                client_w.write(bytes(frame))

        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await asyncio.gather(upstream(), downstream())


@contextlib.asynccontextmanager
async def rig() -> AsyncIterator[Proxy]:
    """A pymodbus server with unit 1 (40 holding and input registers), behind a :class:`Proxy`."""
    blocks = [SimData(0, count=len(VALUES), values=VALUES, datatype=DataType.REGISTERS)]
    device = SimDevice(id=1, simdata=([SimData(0, datatype=DataType.BITS)],
                                      [SimData(0, datatype=DataType.BITS)], blocks, blocks))
    server = ModbusTcpServer([device], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    proxy = Proxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
        await server.shutdown()  # type: ignore[no-untyped-call]


async def connected_client(port: int, **kwargs: Any) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_S, retries=0,
                                  reconnect_delay=0.05, reconnect_delay_max=0.1, **kwargs)
    for response_class in RESPONSE_CLASSES:
        client.register(response_class)
    assert await client.connect()
    return client


class Side:
    """One way to send a request on one client: ``client.execute`` or the exchange."""

    def __init__(self, client: AsyncModbusTcpClient, fast: bool) -> None:
        self.client = client
        self.exchange: TcpExchange | None = exchange_for(client) if fast else None
        assert (self.exchange is not None) == fast
        self.deadline = Deadlines(TIMEOUT_S)

    async def outcome(self, request: ModbusPDU) -> tuple[Any, ...]:
        """What the request came to, comparable between the sides, with the client's state."""
        try:
            if self.exchange is None:
                reply = await self.client.execute(False, request)
            else:
                reply = await self.exchange.read(
                    request, frame_tail(self.exchange.ctx, request), self.deadline)
        except Exception as exc:  # the error itself is what is compared
            got: tuple[Any, ...] = ("raised", type(exc).__name__, str(exc))
        else:
            got = (type(reply).__name__, reply.isError(), getattr(reply, "exception_code", None),
                   list(getattr(reply, "registers", [])), reply.dev_id, reply.transaction_id)
        ctx = self.client.ctx
        return got, ctx.count_until_disconnect, self.client.connected, request.transaction_id


async def both(proxy: Proxy, scenario: Callable[[Side], Any]) -> tuple[Any, Any]:
    """``scenario`` run through client.execute and through the exchange, each on a new client."""
    results = []
    for fast in (False, True):
        proxy.mode = "pass"
        client = await connected_client(proxy.port)
        try:
            results.append(await scenario(Side(client, fast)))
        finally:
            client.close()
    return results[0], results[1]


def holding(address: int = 0, count: int = 12, unit: int = 1) -> ModbusPDU:
    return ReadHoldingRegistersRequest(address=address, count=count, dev_id=unit)


async def wait_connected(client: AsyncModbusTcpClient) -> None:
    for _ in range(100):
        if client.connected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("pymodbus did not reconnect")


def test_replies_and_exception_responses_match_execute() -> None:
    async def scenario(side: Side) -> list[Any]:
        return [await side.outcome(holding()),
                await side.outcome(ReadInputRegistersRequest(address=4, count=6, dev_id=1)),
                await side.outcome(holding(address=4, count=2)),
                await side.outcome(holding(address=5000)),  # exception 02, illegal address
                await side.outcome(holding(unit=9)),  # no such unit: the server's exception 04
                await side.outcome(holding())]

    async def main() -> None:
        async with rig() as proxy:
            slow, fast = await both(proxy, scenario)
        assert fast == slow
        assert fast[0][0][3] == VALUES[:12] and fast[1][0][3] == VALUES[4:10]
        assert fast[3][0][1:3] == (True, 2) and fast[4][0][1:3] == (True, 4)
        assert [o[3] for o in fast] == [1, 2, 3, 4, 5, 6]  # pymodbus's transaction ids

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["silent", "wrong_unit", "wrong_tid"])
def test_unanswered_requests_time_out_and_drop_the_connection_like_execute(mode: str) -> None:
    async def scenario(side: Side) -> list[Any]:
        outcomes = [await side.outcome(holding())]
        side_proxy.mode = mode
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(5):  # retries + 3 = 3 unanswered pass, the fifth closes the connection
            outcomes.append(await side.outcome(holding()))
        waits.append((loop.time() - started) / 5)
        side_proxy.mode = "pass"
        await wait_connected(side.client)
        outcomes.append(await side.outcome(holding()))
        return outcomes

    async def main() -> None:
        nonlocal side_proxy
        async with rig() as proxy:
            side_proxy = proxy
            slow, fast = await both(proxy, scenario)
        assert fast == slow
        assert [o[1:3] for o in fast[1:6]] == [(2, True), (1, True), (0, True), (-1, True),
                                               (-1, False)]
        assert fast[5][0][1] == "ModbusIOException" and "CLOSING CONNECTION" in fast[5][0][2]
        for wait in waits:  # each unanswered request waited the client's timeout, no more
            assert TIMEOUT_S * 0.95 <= wait < TIMEOUT_S + 0.15
        assert fast[6][0][3] == VALUES[:12] and fast[6][1] == 3 and fast[6][3] == 1

    side_proxy: Proxy
    waits: list[float] = []
    asyncio.run(main())


def test_connection_cut_mid_request_fails_the_request_and_reconnects_like_execute() -> None:
    async def scenario(side: Side) -> list[Any]:
        outcomes = [await side.outcome(holding())]
        side_proxy.mode = "cut"
        # the reply never comes: the request fails at the client's timeout (pymodbus does not
        # fail it when the connection drops), and pymodbus starts reconnecting meanwhile
        cut = await side.outcome(holding())
        outcomes.append((cut[0], cut[3]))
        side_proxy.mode = "pass"
        await wait_connected(side.client)
        outcomes.append(await side.outcome(holding()))
        return outcomes

    async def main() -> None:
        nonlocal side_proxy
        async with rig() as proxy:
            side_proxy = proxy
            slow, fast = await both(proxy, scenario)
        assert fast == slow
        assert fast[1][0][1] == "ModbusIOException"
        assert fast[2][0][3] == VALUES[:12] and fast[2][3] == 1  # a new connection's first tid

    side_proxy: Proxy
    asyncio.run(main())


def test_late_reply_of_a_timed_out_request_is_not_taken_for_the_next() -> None:
    async def main() -> None:
        async with rig() as proxy:
            client = await connected_client(proxy.port)
            side = Side(client, fast=True)
            proxy.mode = "silent"
            assert (await side.outcome(holding()))[0][1] == "ModbusIOException"
            proxy.mode = "pass"
            got = await side.outcome(holding(address=20, count=3))
            assert got[0][3] == VALUES[20:23] and got[3] == 2
            client.close()

    asyncio.run(main())


def test_exchange_only_for_the_tested_pymodbus_and_the_plain_tcp_setup() -> None:
    async def main() -> None:
        async with rig() as proxy:
            plain = await connected_client(proxy.port)
            traced = await connected_client(proxy.port, trace_packet=lambda _s, data: data)
            retrying = AsyncModbusTcpClient("127.0.0.1", port=proxy.port, retries=2)
            serial = AsyncModbusSerialClient("/dev/null", retries=0)
            assert isinstance(exchange_for(plain), TcpExchange)
            assert exchange_for(plain, version="3.17.0") is None
            assert exchange_for(plain, version="4.0.0") is None
            assert exchange_for(traced) is None
            assert exchange_for(retrying) is None
            assert exchange_for(serial) is None
            for client in (plain, traced):
                client.close()

    asyncio.run(main())


def test_tcp_bus_polls_the_same_through_the_exchange_and_through_execute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ModbusBus end to end: a served meter's values and an absent (silent) unit's timeouts,
    retries and errors, with the exchange and with the version guard sending it to execute."""
    profile = load_named_profile("sdm630")
    assert isinstance(profile, ModbusProfile)

    async def polls() -> tuple[list[Any], int]:
        model = LoadModel(seed=5, clock=ManualClock(0.0))
        sim = SimulatedModbusMeter(3, profile, model.meter("tcp-3"))
        handle = await start_modbus_tcp_meters([sim], silent_absent_units=True)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        meters = [make_meter(f"tcp-{unit}", unit, profile, PollSchedule(3600, time.monotonic()))
                  for unit in (3, 9)]
        bus = ModbusBus("tcp", meters, queue, BusSettings(timeout_s=TIMEOUT_S, retries=1),
                        host="127.0.0.1", port=handle.port)
        await bus.open()
        try:
            seen = []
            for meter in (meters[0], meters[1], meters[0]):
                result = await bus.poll(meter)
                seen.append((result.ok, [(v.quantity, v.value, v.unit) for v in result.values],
                             result.errors, meter.stats.timeouts, meter.stats.retries,
                             meter.stats.transactions))
            return seen, len(bus._exchanges)
        finally:
            await bus.close()
            await handle.close()

    fast, exchanges = asyncio.run(polls())
    assert exchanges == 1
    assert fast[0][0] and fast[2][0] and not fast[1][0]
    assert fast[1][3:] == (2, 1, 2)  # one block: its try and one retry, both unanswered
    monkeypatch.setattr(modbus_bus, "exchange_for",
                        lambda client: exchange_for(client, version="3.17.0"))
    slow, exchanges = asyncio.run(polls())
    assert exchanges == 0
    assert fast == slow
