"""Basic validation before storing: decreasing registers, rollover, impossible values."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.pipeline.validation import RegisterMemory, check_value, classify, is_register
from gateway.store import Store
from protocols.payload import decode_message
from protocols.topics import GatewayTopics


def pv(q: str, v: object) -> PolledValue:
    return PolledValue(q, v, "kWh", 1_700_000_000_000)  # type: ignore[arg-type]


def test_register_decrease_is_not_actual() -> None:
    checked = check_value(pv("energy.active.import.total", Decimal("100.00")), Decimal("100.01"))
    assert checked.quality == "N" and checked.reasons == (18,)


def test_rollover_near_the_register_width_is_actual() -> None:
    checked = check_value(pv("energy.active.import.total", Decimal("3.20")), Decimal("999998.10"))
    assert checked.quality == "A" and checked.rollover


def test_impossible_values_are_flagged() -> None:
    assert check_value(pv("voltage.a", Decimal("2200.0")), None).reasons == (74,)
    assert check_value(pv("power.factor.total", Decimal("-1.5")), None).reasons == (73,)
    assert check_value(pv("frequency", Decimal("50.01")), None).quality == "A"


def test_memory_keeps_the_last_actual_value_not_the_rejected_one() -> None:
    memory = RegisterMemory()
    assert memory.check("m", pv("energy.active.import.total", Decimal("10.00"))).quality == "A"
    assert memory.check("m", pv("energy.active.import.total", Decimal("9.00"))).quality == "N"
    # 9.50 is still below the last *actual* 10.00
    assert memory.check("m", pv("energy.active.import.total", Decimal("9.50"))).quality == "N"
    assert memory.check("m", pv("energy.active.import.total", Decimal("10.50"))).quality == "A"


def test_committer_publishes_flags_and_remembers_registers_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"

    def poll(value: str) -> PollResult:
        return PollResult("m-1", "b", 1, 2, True, (pv("energy.active.import.total", Decimal(value)),))

    with Store.open(path) as store:
        committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", "gw")), asyncio.Queue())
        committer.commit([poll("50.00")])
    with Store.open(path) as store:  # a restart: the memory comes back from the store
        committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", "gw")), asyncio.Queue())
        assert committer.seed_registers() == 1
        committer.commit([poll("49.00")])
        rows = store.pending(10)
        last = decode_message(rows[-1].payload)
        read = last["reads"][0]
        assert read["quality"] == "N" and read["reasons"] == [18]
        assert read["val"] is None  # billing cannot use it ...
        assert read["raw"] == Decimal("49.00")  # ... but the engineer sees what the meter said


@given(st.sampled_from(["voltage.a", "current.n", "power.factor.total", "frequency",
                        "power.active.total", "x.unbounded", "energy.active.import.total",
                        "energy.reactive.q1"]),
       st.floats(allow_nan=False), st.none() | st.decimals(allow_nan=False, allow_infinity=False))
def test_the_committers_float_window_accepts_exactly_what_classify_calls_actual(
        quantity: str, value: float, previous: Decimal | None) -> None:
    from gateway.pipeline.validation import ACTUAL, float_window

    window = float_window(quantity)
    if window is None:
        assert is_register(quantity)
        return
    inside = window[0] <= value <= window[1]
    assert (classify(quantity, value, previous) is ACTUAL) == inside
    assert (classify(quantity, value, None) is ACTUAL) == inside
