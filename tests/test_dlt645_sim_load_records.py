"""The simulated DL/T 645-2007 meter keeps its interval curve and answers load-record reads.

Frames only (no pty): the meter firmware is handed request frames, as the line would.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hil_tests.dlt645_sim import Dlt645Meter, MeterSpec, build_meter
from hil_tests.load_model import DEFAULT_START_EPOCH, LoadModel, ManualClock
from protocols import dlt645 as d
from protocols.dlt645.transaction import Transaction

ADDR = "000000000007"
START_LOCAL = dt.datetime(2025, 1, 1, 0, 0)  # DEFAULT_START_EPOCH in the meters' UTC+8


def _meter(clock: ManualClock, version: int = 2007) -> Dlt645Meter:
    return build_meter(LoadModel(seed=5, clock=clock), MeterSpec(ADDR, version=version))


def _ask(meter: Dlt645Meter, request: d.ReadRequest) -> Transaction:
    """One exchange with follow-ups, the way the gateway's bus task runs it."""
    tx = Transaction(request)
    frame: bytes | None = tx.start()
    while frame is not None and not tx.finished:
        reply = meter.handle(d.parse_frame(frame)).frame
        assert reply is not None
        frame = tx.receive(d.decode(reply))
    return tx


def _register_at(seconds: float) -> Decimal:
    """The import total an identical meter shows at exactly ``seconds`` after the start."""
    clock = ManualClock(0.0)
    twin = _meter(clock)
    clock.advance(seconds)
    return twin.sim.sample().values()["energy.active.import.total"]


def test_records_of_a_silent_stretch_are_the_registers_at_each_boundary() -> None:
    clock = ManualClock(0.0)
    meter = _meter(clock)
    clock.advance(3 * 3600 + 100)  # nobody asked for three hours: the meter still recorded
    tx = _ask(meter, d.ReadRequest(ADDR, d.ENERGY_RECORDS_DI, count=8,
                                   start=START_LOCAL + dt.timedelta(minutes=20)))
    assert len(tx.replies) >= 2  # 8 records do not fit one frame: follow-ups were needed
    records = d.decode_load_records(bytes(tx.data))
    assert [r.time for r in records] == [START_LOCAL + dt.timedelta(minutes=15 * k)
                                         for k in range(2, 10)]
    assert all(r.valid for r in records)
    for record in (records[0], records[-1]):
        minutes = (record.time - START_LOCAL).total_seconds()
        assert record.active_import == _register_at(minutes)
    assert [r.active_import for r in records] == sorted(r.active_import  # type: ignore[type-var]
                                                        for r in records)


def test_no_record_yet_is_no_data_and_other_load_dis_are_refused() -> None:
    clock = ManualClock(0.0)
    meter = _meter(clock)
    clock.advance(600)
    request = d.ReadRequest(ADDR, d.ENERGY_RECORDS_DI, count=2, start=START_LOCAL)
    reply = d.decode(meter.handle(d.parse_frame(d.encode(request))).frame or b"")
    assert isinstance(reply, d.ErrorReply) and reply.errors == ("no_data",)
    other = d.ReadRequest(ADDR, 0x06010001, count=2, start=START_LOCAL)
    reply = d.decode(meter.handle(d.parse_frame(d.encode(other))).frame or b"")
    assert isinstance(reply, d.ErrorReply) and reply.errors == ("no_data",)


def test_model_start_is_where_the_records_begin() -> None:
    assert dt.datetime.fromtimestamp(DEFAULT_START_EPOCH, dt.timezone(dt.timedelta(hours=8))
                                     ).replace(tzinfo=None) == START_LOCAL
