"""The exchange's shortcut for a reply (``TcpExchange.take_reply``, installed as the protocol's
``callback_data`` by ``exchange_for``) against pymodbus's own ``callback_data``, byte for byte:
the same bytes used, the same reply (every attribute), the same ``last_pdu`` and ``last_addr``,
the same exceptions and the same log lines — for whole replies and for frames spoilt every way
(split, doubled, another unit or transaction, a bad length, byte count or protocol id, an
exception reply, another function code), with and without pymodbus's debug log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.logging import Log
from pymodbus.transaction import TransactionManager

from gateway.acquisition.modbus_responses import RESPONSE_CLASSES
from gateway.acquisition.modbus_tcp_exchange import TcpExchange, exchange_for

UNIT = 7
TID = 513


def _client() -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=1, retries=0)
    for response_class in RESPONSE_CLASSES:
        client.register(response_class)
    return client


def _frame(tid: int, unit: int, pdu: bytes, *, pid: int = 0, extra_length: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1 + extra_length, unit) + pdu


def _reply(function: int, words: list[int], *, byte_count: int | None = None) -> bytes:
    data = struct.pack(f">{len(words)}H", *words)
    return bytes([function, len(data) if byte_count is None else byte_count]) + data


@contextlib.contextmanager
def pymodbus_log(level: int) -> Iterator[list[tuple[int, str]]]:
    """pymodbus's log lines at ``level`` and above, while in the block, and then the state of
    its repeated-line filter and of its record of the last frames (both start afresh, with one
    frame recorded, as the transport does before it hands bytes on)."""
    records: list[tuple[int, str]] = []
    Log.last_log_text, Log.repeat_log = "", False
    Log.frame_dump = [(Log.RECV_DATA, b"\x00\x05", b"")]

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelno, record.getMessage()))

    logger = logging.getLogger("pymodbus.logging")
    handler, before = Catch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
    records.append((0, f"{Log.last_log_text!r} {Log.repeat_log} {Log.frame_dump!r}"))


def _outcome(client: AsyncModbusTcpClient, handle: Any, data: bytes, *, answered: bool,
             level: int) -> tuple[Any, ...]:
    """What handing ``data`` to ``handle`` came to, with the protocol's state and the log."""
    ctx = client.ctx
    ctx.request_dev_id = UNIT
    ctx.request_transaction_id = TID
    ctx.response_future = asyncio.get_running_loop().create_future()
    if answered:
        ctx.response_future.set_result(None)
    with pymodbus_log(level) as log:
        try:
            used: Any = handle(data, addr=None)
        except Exception as exc:  # the exception itself is compared
            used = ("raised", type(exc).__name__, str(exc))
    future = ctx.response_future
    reply = future.result() if future.done() else "pending"
    return used, _described(reply), _described(ctx.last_pdu), ctx.last_addr, log


def _described(pdu: Any) -> Any:
    if pdu is None or isinstance(pdu, str):
        return pdu
    return type(pdu).__name__, sorted(vars(pdu).items()), str(pdu)


def _compare(data: bytes, *, answered: bool = False, level: int = logging.WARNING
             ) -> tuple[Any, ...]:
    """pymodbus's callback_data and the exchange's take_reply, each on a new client."""

    async def both() -> tuple[Any, ...]:
        reference, ours = _client(), _client()
        exchange = exchange_for(ours)
        assert isinstance(exchange, TcpExchange)
        assert ours.ctx.callback_data == exchange.take_reply
        expected = _outcome(reference, lambda d, addr: TransactionManager.callback_data(
            reference.ctx, d, addr), data, answered=answered, level=level)
        got = _outcome(ours, ours.ctx.callback_data, data, answered=answered, level=level)
        assert got == expected
        return got

    return asyncio.run(both())


WHOLE = _frame(TID, UNIT, _reply(3, list(range(1000, 1012))))

SPOILT = {
    "whole holding": WHOLE,
    "whole input": _frame(TID, UNIT, _reply(4, [0, 0xFFFF, 0x8000])),
    "one register": _frame(TID, UNIT, _reply(3, [42])),
    "no registers": _frame(TID, UNIT, _reply(3, [])),
    "odd byte count": _frame(TID, UNIT, bytes([3, 3, 1, 2, 3])),
    "byte count too large": _frame(TID, UNIT, _reply(3, [1, 2], byte_count=5)),
    "byte count too small": _frame(TID, UNIT, _reply(3, [1, 2], byte_count=2)),
    "split: first part": WHOLE[:10],
    "header only": WHOLE[:8],
    "two replies": WHOLE + WHOLE,
    "reply and a part": WHOLE + WHOLE[:5],
    "another unit": _frame(TID, UNIT + 1, _reply(3, [1, 2])),
    "another transaction": _frame(TID + 1, UNIT, _reply(3, [1, 2])),
    "transaction id 0": _frame(0, UNIT, _reply(3, [1, 2])),
    "unit 0": _frame(TID, 0, _reply(3, [1, 2])),
    "protocol id 1": _frame(TID, UNIT, _reply(3, [1, 2]), pid=1),
    "protocol id 256": _frame(TID, UNIT, _reply(3, [1, 2]), pid=256),
    "length one long": _frame(TID, UNIT, _reply(3, [1, 2]), extra_length=1),
    "length one short": _frame(TID, UNIT, _reply(3, [1, 2]), extra_length=-1),
    "exception reply": _frame(TID, UNIT, bytes([0x83, 2])),
    "coils reply": _frame(TID, UNIT, bytes([1, 1, 5])),
    "write reply": _frame(TID, UNIT, struct.pack(">BHH", 6, 1, 1)),
    "unknown function": _frame(TID, UNIT, bytes([0x41, 2, 0, 0])),
}


@pytest.mark.parametrize("answered", [False, True], ids=["awaited", "nobody waits"])
@pytest.mark.parametrize("name", sorted(SPOILT))
def test_take_reply_does_what_pymodbus_does(name: str, answered: bool) -> None:
    _compare(SPOILT[name], answered=answered)


def test_a_whole_reply_is_taken() -> None:
    used, reply, last, _, log = _compare(WHOLE)
    assert used == len(WHOLE) and reply == last and log == [(0, "'' False [('recv', b'\\x00\\x05', b'')]")]
    assert reply[0] == "HoldingRegistersResponse"
    assert dict(reply[1])["registers"] == list(range(1000, 1012))


@pytest.mark.parametrize("name", ["whole holding", "byte count too large", "another unit"])
def test_take_reply_with_pymodbus_debug_log_on_logs_what_pymodbus_logs(name: str) -> None:
    log = _compare(SPOILT[name], level=logging.DEBUG)[-1]
    assert any("decoded PDU" in line for _, line in log) == (name == "whole holding")


@settings(max_examples=1500, deadline=None)
@given(
    tid=st.sampled_from([TID, TID + 1, 0]),
    unit=st.sampled_from([UNIT, UNIT + 1, 0]),
    function=st.sampled_from([3, 4, 0x83, 0x84, 1, 16, 0]),
    words=st.lists(st.integers(0, 0xFFFF), max_size=125),
    byte_count_shift=st.sampled_from([0, 0, 0, 1, -1, 2]),
    length_shift=st.sampled_from([0, 0, 0, 1, -1]),
    pid=st.sampled_from([0, 0, 0, 1]),
    cut=st.integers(0, 80),
    tail=st.binary(max_size=12),
)
def test_take_reply_on_random_frames(tid: int, unit: int, function: int, words: list[int],
                                     byte_count_shift: int, length_shift: int, pid: int,
                                     cut: int, tail: bytes) -> None:
    pdu = _reply(function, words, byte_count=(2 * len(words) + byte_count_shift) & 0xFF)
    data = _frame(tid, unit, pdu, pid=pid, extra_length=length_shift) + tail
    if cut < 40:  # else whole
        data = data[: max(1, len(data) - cut)]
    _compare(data)


def test_the_shortcut_skips_the_framer_for_a_whole_reply_only() -> None:
    """A whole reply does not reach pymodbus's framer; a part of one does."""

    async def main() -> list[bool]:
        reached = []
        for data in (WHOLE, WHOLE[:10]):
            client = _client()
            exchange = exchange_for(client)
            assert exchange is not None
            framer = client.ctx.framer
            handle_frame = framer.handleFrame

            def spy(*args: Any, handle_frame: Any = handle_frame) -> Any:
                reached.append(True)
                return handle_frame(*args)

            framer.handleFrame = spy  # type: ignore[method-assign, assignment]
            reached.append(False)
            _outcome(client, exchange.take_reply, data, answered=False, level=logging.WARNING)
        return reached

    assert asyncio.run(main()) == [False, False, True]
