"""The DL/T 645 exchange driver (protocols/dlt645/transaction.py ``Exchange``) at its sans-IO boundary.

The shells (the daemon's bus task, gwtool's meter link) only move bytes; everything asserted here is
therefore what both of them do on the wire.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import dlt645 as d
from protocols.dlt645.transaction import (
    EXCHANGE_TRANSITIONS,
    Answered,
    Exchange,
    ExchangeMisuse,
    ExchangePolicy,
    Failed,
    Phase,
    Transmit,
    Wait,
)

ADDR = "000102030425"
OTHER = "000102030426"
DI = 0x00010000
POLICY = ExchangePolicy(reply_timeout_s=0.5, attempts=3, retry_backoff_s=0.05, turnaround_s=0.02,
                        char_time_s=11 / 2400, link="2400 8E1")

GOOD = d.encode(d.build_read_reply(ADDR, DI, [Decimal("12.34")]))
STRAY = d.encode(d.build_read_reply(OTHER, DI, [Decimal("56.78")]))
ECHO = d.encode(d.ReadRequest(ADDR, DI))
REFUSAL = d.encode(d.ErrorReply(ADDR, "read_data", 0x02, ("no_data",)))
GARBLED = d.encode(d.ReadReply(ADDR, DI, b"\x12"))  # checksum-valid, data too short for its DI
FIRST_PART = d.encode(d.ReadReply(ADDR, 0x0001FF00, bytes(8), (), True))
NOISE = b"\x00\xff\x68\x12\x34\x16\x55"


def _sent(ex: Exchange, now: float = 0.0) -> Wait:
    action = ex.start(now)
    assert isinstance(action, Transmit) and action.attempt == 1 and action.flush_input
    waiting = ex.sent(now)
    assert isinstance(waiting, Wait)
    return waiting


def test_reply_after_noise_and_stray_frames_answers_the_request() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), POLICY)
    waiting = _sent(ex)
    assert waiting.deadline == pytest.approx((len(ECHO) + 4) * 11 / 2400 + 0.5)  # 4 FE preamble bytes
    assert isinstance(ex.receive(NOISE + ECHO + STRAY, 0.1), Wait)
    done = ex.receive(GOOD[:7], 0.15)
    assert isinstance(done, Wait)
    done = ex.receive(GOOD[7:], 0.2)
    assert isinstance(done, Answered)
    assert [r.value for r in done.readings] == [Decimal("12.34")]
    assert (done.attempts, done.ignored) == (1, 2)
    assert ex.phase is Phase.DONE


def test_silence_is_retried_with_growing_backoff_then_reported_in_one_line() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), POLICY)
    deadline = _sent(ex).deadline
    assert isinstance(ex.tick(deadline - 0.001), Wait)  # early tick: nothing happens
    backoff = ex.tick(deadline)
    assert isinstance(backoff, Wait) and backoff.deadline == pytest.approx(deadline + 0.05)
    retry = ex.tick(backoff.deadline)
    assert isinstance(retry, Transmit) and retry.attempt == 2 and retry.flush_input
    assert isinstance(retry.retry_after, d.NoReply) and retry.frame == bytes.fromhex('FEFEFEFE') + ECHO
    deadline = ex.sent(backoff.deadline).deadline  # type: ignore[union-attr]
    backoff = ex.tick(deadline)
    assert isinstance(backoff, Wait) and backoff.deadline == pytest.approx(deadline + 0.10)
    retry = ex.tick(backoff.deadline)
    assert isinstance(retry, Transmit) and retry.attempt == 3
    failed = ex.tick(ex.sent(backoff.deadline).deadline)  # type: ignore[union-attr]
    assert isinstance(failed, Failed) and failed.attempts == 3
    assert type(failed.error) is d.NoReply
    assert str(failed.error) == ("meter 000102030425: no reply after 3 tries at 2400 8E1 — check "
                                 "wiring, address and baud")


def test_other_meters_answering_turn_the_timeout_into_a_stray_reply() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), ExchangePolicy(attempts=1, link="9600 8N1"))
    deadline = _sent(ex).deadline
    ex.receive(STRAY + ECHO, 0.1)  # our own echo is not "another meter"
    failed = ex.tick(deadline)
    assert isinstance(failed, Failed) and isinstance(failed.error, d.StrayReply)
    assert failed.error.others == (OTHER,)
    assert "but 000102030426 answered — check the address" in str(failed.error)


def test_noise_only_is_named_in_the_timeout() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), ExchangePolicy(attempts=1))
    deadline = _sent(ex).deadline
    ex.receive(NOISE, 0.1)
    failed = ex.tick(deadline)
    assert isinstance(failed, Failed) and type(failed.error) is d.NoReply
    assert failed.error.noise_bytes == len(NOISE) and "check baud and parity" in str(failed.error)


def test_garbled_reply_from_the_addressee_fails_the_attempt_at_once_and_is_retried() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), POLICY)
    _sent(ex)
    backoff = ex.receive(GARBLED, 0.1)
    assert isinstance(backoff, Wait) and backoff.deadline == pytest.approx(0.15)  # not the 0.5 s timeout
    retry = ex.tick(backoff.deadline)
    assert isinstance(retry, Transmit) and isinstance(retry.retry_after, d.GarbledReply)
    assert retry.not_before == pytest.approx(0.15)
    ex.sent(backoff.deadline)
    assert isinstance(ex.receive(GOOD, 0.3), Answered)
    assert ex.undecodable_frames == 1


def test_garbled_reply_on_the_last_attempt_is_reported_with_its_cause() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), ExchangePolicy(attempts=1))
    _sent(ex)
    failed = ex.receive(GARBLED, 0.1)
    assert isinstance(failed, Failed) and isinstance(failed.error, d.GarbledReply)
    assert isinstance(failed.error.cause, d.DataError) and "needs 4 bytes" in str(failed.error)


def test_refusal_is_final_without_retry() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), POLICY)
    _sent(ex)
    failed = ex.receive(REFUSAL, 0.1)
    assert isinstance(failed, Failed) and isinstance(failed.error, d.ExceptionReply)
    assert failed.attempts == 1 and failed.error.errors == ("no_data",)


def test_more_follows_asks_for_the_next_frame_after_the_turnaround() -> None:
    ex = Exchange(d.ReadRequest(ADDR, 0x0001FF00), POLICY)
    _sent(ex)
    follow = ex.receive(FIRST_PART, 0.2)
    assert isinstance(follow, Transmit) and not follow.flush_input and follow.attempt == 1
    assert follow.not_before == pytest.approx(0.22)
    assert isinstance(d.decode(follow.frame), d.ReadFollowupRequest)
    assert ex.sent(0.22).deadline == pytest.approx(0.22 + len(follow.frame) * 11 / 2400 + 0.5)  # type: ignore[union-attr]


def test_broadcast_waits_for_the_frame_to_leave_the_wire_then_is_done() -> None:
    import datetime as dt

    ex = Exchange(d.TimeSyncRequest(dt.datetime(2026, 1, 2, 3, 4, 5)), POLICY)
    frame = ex.start(0.0)
    assert isinstance(frame, Transmit)
    drain = ex.sent(0.0)
    assert isinstance(drain, Wait)
    assert drain.deadline == pytest.approx(len(frame.frame) * 11 / 2400 + 0.02)
    done = ex.tick(drain.deadline)
    assert isinstance(done, Answered) and done.replies == ()


def test_calls_out_of_order_raise_and_change_nothing() -> None:
    ex = Exchange(d.ReadRequest(ADDR, DI), POLICY)
    for call in (lambda: ex.sent(0.0), lambda: ex.tick(0.0), lambda: ex.receive(GOOD, 0.0)):
        with pytest.raises(ExchangeMisuse):
            call()
        assert ex.phase is Phase.IDLE
    _sent(ex)
    with pytest.raises(ExchangeMisuse):
        ex.start(0.0)
    with pytest.raises(ExchangeMisuse):
        ex.sent(0.0)
    assert ex.phase is Phase.AWAIT_REPLY


# -- state × input ---------------------------------------------------------------------------------

CHUNKS = [GOOD, STRAY, ECHO, REFUSAL, GARBLED, FIRST_PART, NOISE, GOOD[:9], GOOD[9:], b"", b"\xfe" * 4]
INPUTS = st.one_of(
    st.tuples(st.just("start")),
    st.tuples(st.just("sent")),
    st.tuples(st.just("tick"), st.floats(0, 1.0)),
    st.tuples(st.just("receive"), st.sampled_from(CHUNKS) | st.binary(max_size=40), st.floats(0, 0.3)),
)
ALLOWED_MOVES = {(phase, after) for (phase, _step), after in EXCHANGE_TRANSITIONS.items()}
ACTION_OF_PHASE = {
    Phase.TRANSMIT: Transmit, Phase.AWAIT_REPLY: Wait, Phase.BACKOFF: Wait, Phase.DRAIN: Wait,
    Phase.DONE: Answered, Phase.FAILED: Failed,
}


@settings(max_examples=400, deadline=None)
@given(attempts=st.integers(1, 3), di=st.sampled_from([DI, 0x0001FF00]),
       begin=st.booleans(), inputs=st.lists(INPUTS, max_size=30))
def test_every_input_in_every_phase_is_a_listed_transition_or_a_typed_error(
        attempts: int, di: int, begin: bool, inputs: list[tuple[object, ...]]) -> None:
    ex = Exchange(d.ReadRequest(ADDR, di), ExchangePolicy(reply_timeout_s=0.4, attempts=attempts))
    now = 0.0
    if begin:  # most runs should get past IDLE; the others walk IDLE's refusals
        inputs = [("start",), ("sent",), *inputs]
    for op, *args in inputs:
        before = ex.phase
        try:
            if op == "start":
                action = ex.start(now)
            elif op == "sent":
                action = ex.sent(now)
            elif op == "tick":
                now += float(args[0])  # type: ignore[arg-type]
                action = ex.tick(now)
            else:
                now += float(args[1])  # type: ignore[arg-type]
                action = ex.receive(args[0], now)  # type: ignore[arg-type]
        except ExchangeMisuse:
            assert ex.phase is before, "a refused call must change nothing"
            continue
        assert (before, ex.phase) in ALLOWED_MOVES
        assert isinstance(action, ACTION_OF_PHASE[ex.phase])
        assert action is ex.action
        assert 1 <= ex.attempt <= attempts
        if isinstance(action, Failed):
            assert isinstance(action.error, d.NoReply | d.GarbledReply | d.ExceptionReply)
            assert action.attempts == ex.attempt
            assert action.attempts == attempts or isinstance(action.error, d.ExceptionReply)
        if isinstance(action, Answered):
            assert action.replies and all(r.address == ADDR for r in action.replies)
