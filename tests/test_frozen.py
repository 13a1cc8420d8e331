"""protocols/frozen.py: what frozen_maker builds is the constructor's object in every respect
that can be observed, for the per-poll classes it is used for; classes it cannot serve are
refused."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.pipeline.feed import ValidatedPoll
from gateway.store.records import OutboxCursor, OutboxMessage, OutboxRow
from protocols.frozen import frozen_maker
from protocols.payload import ReadRecord


def build(seq: int) -> bytes:
    return b"x%d" % seq


CASES = [
    (PollResult, ("m-1", "tcp-1", 1, 2, True, (PolledValue("voltage.a", 230.1, "V", 2),),
                  ("e",), {"relay_open": False})),
    (ValidatedPoll, ("m-1", "tcp-1", 2, True, (ReadRecord("voltage.a", 230.1, "V", 2),),
                     (PolledValue("voltage.a", 230.1, "V", 2),), {})),
    (OutboxRow, (7, "P/G/reads/m-1", b"x7", 1, 2, 0, False, True)),
    (OutboxCursor, (3, 9, 0)),
    (OutboxMessage, ("P/G/reads/m-1", 1, build, "m-1", (ReadRecord("voltage.a", 230.1, "V", 2),),
                     False)),
]


@pytest.mark.parametrize(("cls", "args"), CASES)
def test_same_object_as_the_constructor(cls: type, args: tuple[object, ...]) -> None:
    got = frozen_maker(cls)(*args)
    want = cls(*args)
    assert type(got) is cls and got == want and repr(got) == repr(want)
    assert dataclasses.astuple(got) == dataclasses.astuple(want) if cls is not OutboxMessage \
        else got.build(7) == want.build(7)
    if cls is not OutboxMessage:  # a local function does not pickle
        assert pickle.loads(pickle.dumps(got)) == want
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(got, name, "other")
    assert not hasattr(got, "__dict__")


def test_refuses_what_it_cannot_build_faithfully() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    for cls in (Mutable, NoSlots, Checked, int):
        with pytest.raises(TypeError):
            frozen_maker(cls)


def test_validated_poll_values_are_the_accepted_values_then_the_texts() -> None:
    """``values`` is built on demand from the graded records and the poll's text values: a
    rejected record (no value) is absent, the value VEE assigned replaces the one read, numbers
    of the raw poll are not repeated, and ``value()`` finds the same first match."""
    polled = (PolledValue("voltage.a", 230.1, "V", 2), PolledValue("power.active.total", 9e9, "kW", 2),
              PolledValue("freeze.time", "2026-12-07T00:00", None, 2),
              PolledValue("relay.open", False, None, 2))
    records = (ReadRecord("voltage.a", 230.4, "V", 2, quality="S", reasons=(3,)),
               ReadRecord("power.active.total", None, "kW", 2, quality="N", reasons=(1,),
                          raw=9e9))
    poll = ValidatedPoll("m-1", "tcp-1", 2, True, records, polled, {})
    assert poll.values == (PolledValue("voltage.a", 230.4, "V", 2), polled[2], polled[3])
    assert poll.value("voltage.a") == PolledValue("voltage.a", 230.4, "V", 2)
    assert poll.value("power.active.total") is None
    assert poll.value("relay.open") == polled[3]
    assert poll.value("current.a") is None
