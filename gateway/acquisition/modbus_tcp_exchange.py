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

The reply's way in is pymodbus's too, with one shortcut: the protocol's ``callback_data`` (what
``data_received`` hands the received bytes to) is :meth:`TcpExchange.take_reply` on these
clients. When the bytes are exactly one whole reply of the awaited unit and transaction to a
register read, of one of our response classes (gateway/acquisition/modbus_responses.py), it does
what the framer and decoder would end with — the class's own ``decode``, device and transaction
id, ``last_pdu``, the future's result — without their loop, slicing, lookups and debug-log calls
(4.1 → 2.6 µs a reply, timeit; issue 18). Anything else (a partial, several or another frame, an
exception reply, another unit or transaction, pymodbus's debug log on) goes to pymodbus's own
``callback_data``, untouched.

That reaches into pymodbus's internals, so it is used only where they are the ones read here:
pymodbus 3.16.x, the stock transaction manager, the socket (MBAP) framer over TCP, no retries
inside pymodbus, no local echo and no trace hooks (:func:`exchange_for`). Anything else — another
pymodbus version, a serial bus — keeps ``client.execute``. ``tests/test_modbus_tcp_exchange.py``
runs both against a real pymodbus server side by side.
"""

from __future__ import annotations

import asyncio
import logging

import pymodbus
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerSocket
from pymodbus.logging import Log
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.decoders import DecodePDU
from pymodbus.transaction import TransactionManager
from pymodbus.transport import CommType

from gateway.acquisition.deadline import Deadlines
from gateway.acquisition.modbus_responses import RESPONSE_CLASSES

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
            or getattr(ctx.trace_pdu, "__func__", None) is not TransactionManager.dummy_trace_pdu
            or type(ctx.framer.decoder) is not DecodePDU):
        return None
    exchange = TcpExchange(ctx)
    ctx.callback_data = exchange.take_reply  # type: ignore[method-assign]
    return exchange


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

    def take_reply(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        """``ctx.callback_data(data, addr)`` (module docstring): how many bytes of the receive
        buffer ``data`` were used. The shortcut's conditions are the ones under which pymodbus's
        framer (``FramerBase.handleFrame``, ``FramerSocket.decode``) and decoder
        (``DecodePDU.decode``) take the whole buffer as one reply and build it with ``cls()`` and
        ``cls.decode`` — which cannot fail on a byte count that matches the frame's length."""
        ctx = self.ctx
        size = len(data)
        if (size > 9 and data[8] == size - 9  # byte count: the rest of the frame
                and int.from_bytes(data[4:6], "big") + 6 == size  # MBAP length: one whole frame
                and not data[2] and not data[3]):  # protocol id 0
            dev_id = data[6]
            tid = int.from_bytes(data[0:2], "big")
            expected_dev_id = ctx.request_dev_id
            expected_tid = ctx.request_transaction_id
            decoder = ctx.framer.decoder
            cls = decoder.pdu_table.get(data[7], _NO_CLASSES)[decoder.pdu_inx]
            if ((not expected_dev_id or dev_id == expected_dev_id)
                    and (not expected_tid or not tid or tid == expected_tid)
                    and cls in RESPONSE_CLASSES and not _debug_logged()):
                pdu = cls()
                pdu.decode(data[8:])
                pdu.dev_id = dev_id
                pdu.transaction_id = tid
                ctx.last_pdu = pdu  # ctx.trace_pdu is pymodbus's pass-through (exchange_for)
                ctx.last_addr = addr
                future = ctx.response_future
                if future.done():
                    Log.warning("ERROR: received pdu without a corresponding request, "  # type: ignore[no-untyped-call]
                                "IGNORING")
                else:
                    future.set_result(pdu)
                return size
        return TransactionManager.callback_data(ctx, data, addr)

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


#: No request or response class for a function code (the decoder's table's default)
_NO_CLASSES = (None, None)


def _debug_logged() -> bool:
    """Whether pymodbus's debug log is on: its framer and decoder then log each reply."""
    return Log._logger.isEnabledFor(logging.DEBUG)


def _io_error(message: str, request: ModbusPDU) -> ModbusIOException:
    return ModbusIOException(message, function_code=request.function_code,
                             transaction_id=request.transaction_id, dev_id=request.dev_id)
