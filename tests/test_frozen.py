"""protocols/frozen.py: what frozen_maker builds is the constructor's object in every respect
that can be observed, for the per-poll classes it is used for; classes it cannot serve are
refused."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.pipeline.feed import ValidatedPoll
from gateway.store.records import OutboxMessage
from protocols.frozen import frozen_maker
from protocols.payload import ReadRecord


def build(seq: int) -> bytes:
    return b"x%d" % seq


CASES = [
    (PollResult, ("m-1", "tcp-1", 1, 2, True, (PolledValue("voltage.a", 230.1, "V", 2),),
                  ("e",), {"relay_open": False})),
    (ValidatedPoll, ("m-1", "tcp-1", 2, True, (PolledValue("voltage.a", 230.1, "V", 2),),
                     (ReadRecord("voltage.a", 230.1, "V", 2),), {})),
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
