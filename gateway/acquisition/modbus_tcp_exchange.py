"""One Modbus TCP register read through pymodbus's own protocol object, without its per-request
lock and ``asyncio.wait_for``.

``client.execute`` wraps every request in an ``asyncio.Lock``, a fresh ``asyncio.Future()`` (which
looks the loop up the slow way, with a ``getpid()`` call on CPython 3.11) and ``asyncio.wait_for``
(a task of its own, a timer and another future), then frames the PDU again. At a hundred meters
polled each second that was about 9 % of the daemon's CPU (py-spy, docs/performance.md, issue
18) — for a client our bus already hands to one worker at a time, so the lock never waits.

:class:`TcpExchange` does what ``TransactionManager.execute`` (pymodbus 3.16, ``retries=0``) does,
step for step, with pymodbus's pieces: the transaction id comes from ``getNextTID``, the frame from
the client's framer (``buildFrame``, once per request: a later request differs only in the MBAP
transaction id, its first two bytes), the bytes go out through the protocol's ``send``, the reply
comes back through pymodbus's ``data_received`` → framer → ``response_future``, and the checks
after it are execute's (device id, transaction id, the ``count_until_disconnect`` rule that drops a
connection after ``retries + 3`` unanswered requests, so pymodbus reconnects it). Only the wait is
ours: the worker's re-arming deadline (gateway/acquisition/deadline.py) bounded at the client's
own timeout, instead of ``wait_for``.

That reaches into pymodbus's internals, so it is used only where they are the ones read here:
pymodbus 3.16.x, the stock transaction manager, the socket (MBAP) framer over TCP, no retries
inside pymodbus, no local echo and no trace hooks (:func:`exchange_for`). Anything else — another
pymodbus version, a serial bus — keeps ``client.execute``. ``tests/test_modbus_tcp_exchange.py``
runs both against a real pymodbus server side by side.
"""

from __future__ import annotations

import asyncio

import pymodbus
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerSocket
from pymodbus.logging import Log
from pymodbus.pdu import ModbusPDU
from pymodbus.transaction import TransactionManager
from pymodbus.transport import CommType

from gateway.acquisition.deadline import Deadlines

#: The pymodbus releases whose ``TransactionManager.execute`` this module follows.
TESTED_PYMODBUS = "3.16."


def exchange_for(client: object, version: str = pymodbus.__version__) -> TcpExchange | None:
    """The fast path for ``client``, or None when it must keep ``client.execute`` (module
    docstring: anything but the pymodbus and the setup whose internals were read)."""
    if not version.startswith(TESTED_PYMODBUS) or not isinstance(client, AsyncModbusTcpClient):
        return None
    ctx = client.ctx
    params = ctx.comm_params
    if (type(ctx) is not TransactionManager or type(ctx.framer) is not FramerSocket
            or params.comm_type is not CommType.TCP or params.handle_local_echo
            or ctx.retries != 0 or ctx.is_server or ctx.is_sync
            or getattr(ctx.trace_packet, "__func__", None) is not TransactionManager.dummy_trace_packet
            or getattr(ctx.trace_pdu, "__func__", None) is not TransactionManager.dummy_trace_pdu):
        return None
    return TcpExchange(ctx)


def frame_tail(ctx: TransactionManager, request: ModbusPDU) -> bytes:
    """``request`` framed by the client's framer, less the 2-byte transaction id it starts with
    (the MBAP header: transaction id, protocol id 0, length, unit id)."""
    frame = ctx.framer.buildFrame(request)
    if frame[:2] != request.transaction_id.to_bytes(2, "big"):  # pragma: no cover - layout guard
        raise RuntimeError(f"unexpected MBAP frame {frame.hex()} for {request}")
    return frame[2:]


class TcpExchange:
    """Requests on one pymodbus TCP client, one at a time (the bus's pool hands a client to one
    worker at a time; ``client.execute`` on the same client — clock and relay reads — is awaited
    by that same worker, never alongside)."""

    __slots__ = ("_loop", "ctx")

    def __init__(self, ctx: TransactionManager) -> None:
        self.ctx = ctx
        self._loop: asyncio.AbstractEventLoop | None = None

    async def read(self, request: ModbusPDU, tail: bytes, deadline: Deadlines) -> ModbusPDU:
        """``client.execute(False, request)``: the reply, or ModbusIOException after
        ``deadline``'s delay with no reply (or a reply of another unit or transaction),
        ConnectionException when not connected. ``tail``: :func:`frame_tail` of ``request``."""
        ctx = self.ctx
        if not ctx.transport:
            raise ConnectionException("Client is not connected")
        if ctx._lock.locked():  # someone is in client.execute: queue behind them as it would
            async with ctx._lock:
                pass
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        tid = request.transaction_id = ctx.getNextTID()
        # what pdu_send notes for the framer's checks of the reply
        ctx.request_dev_id = request.dev_id
        ctx.request_transaction_id = tid
        future: asyncio.Future[ModbusPDU] = loop.create_future()
        ctx.response_future = future
        ctx.send(tid.to_bytes(2, "big") + tail)  # clears recv_buffer, as execute does
        try:
            with deadline:
                response = await future
        except TimeoutError:
            raise self._unanswered(request) from None
        ctx.count_until_disconnect = ctx.max_until_disconnect
        if request.dev_id and response.dev_id != request.dev_id:
            raise _io_error(f"ERROR: request uses device id={request.dev_id} but received "
                            f"{response.dev_id}.", request)
        if response.transaction_id and response.transaction_id != tid:
            raise _io_error(f"ERROR: request uses transaction id={tid} but received "
                            f"{response.transaction_id}.", request)
        response.retries = 0
        return response

    def _unanswered(self, request: ModbusPDU) -> ModbusIOException:
        """execute's rule after a request went unanswered: the connection is dropped (and
        pymodbus reconnects it) once ``retries + 3`` requests in a row went unanswered."""
        ctx = self.ctx
        if ctx.count_until_disconnect < 0:
            ctx.connection_lost(TimeoutError("Server not responding"))
            return _io_error("ERROR: No response received of the last requests (default: "
                             "retries+3), CLOSING CONNECTION.", request)
        ctx.count_until_disconnect -= 1
        text = f"No response received after {ctx.retries} retries, continue with next request"
        Log.error(text)  # type: ignore[no-untyped-call]
        return _io_error(text, request)


def _io_error(message: str, request: ModbusPDU) -> ModbusIOException:
    return ModbusIOException(message, function_code=request.function_code,
                             transaction_id=request.transaction_id, dev_id=request.dev_id)
