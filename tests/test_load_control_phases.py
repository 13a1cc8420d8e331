"""The load-control engine's phase tables, walked: every (phase, event) pair is either the
transition the table lists or a :class:`TransitionError` that leaves the state untouched; and a
state saved by the engine before phases were enums (``tests/golden/load_control_state_v1.json``,
written by the string-phase engine) still loads and saves the same strings."""

from __future__ import annotations

import copy
import enum
import itertools
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.control.load_control import EngineSettings, LoadControlEngine
from gateway.control.load_control.phases import (
    PREPAID_TRANSITIONS,
    ROUND_TRANSITIONS,
    PrepaidEvent,
    PrepaidPhase,
    RoundEvent,
    RoundPhase,
    TransitionError,
)
from gateway.control.load_control.state import Controller, MeterState, TripStep
from tests.load_control_rig import Rig

GOLDEN = Path(__file__).parent / "golden" / "load_control_state_v1.json"


@pytest.mark.parametrize(("phase", "event"), list(itertools.product(RoundPhase, RoundEvent)))
def test_round_table_every_pair(phase: RoundPhase, event: RoundEvent) -> None:
    ctl = Controller(phase=phase, alarm_round=1, alarm_since=5.0, alarm_meters=["m1"],
                     steps=[TripStep(1, ["m0"], 1.0, "temporary", 20.0, 25.0)])
    before = copy.deepcopy(ctl)
    expected = ROUND_TRANSITIONS.get((phase, event))
    assert ctl.allows(event) is (expected is not None)
    if expected is None:
        with pytest.raises(TransitionError, match=f"{event.name} is not a transition from "
                                                  f"phase '{phase.value}'"):
            ctl.fire(event)
        assert ctl == before
    else:
        ctl.fire(event)
        assert ctl.phase is expected
        assert ctl == Controller(**{**vars(before), "phase": expected})  # nothing else moved


@pytest.mark.parametrize(("phase", "event"), list(itertools.product(PrepaidPhase, PrepaidEvent)))
def test_prepaid_table_every_pair(phase: PrepaidPhase, event: PrepaidEvent) -> None:
    ms = MeterState(prepaid_phase=phase, prepaid_due=9.0, balance=-1.0, holds={"prepaid": 3.0})
    before = copy.deepcopy(ms)
    expected = PREPAID_TRANSITIONS.get((phase, event))
    assert ms.prepaid_allows(event) is (expected is not None)
    if expected is None:
        with pytest.raises(TransitionError):
            ms.fire_prepaid(event)
        assert ms == before
    else:
        ms.fire_prepaid(event)
        assert ms.prepaid_phase is expected
        assert ms == MeterState(**{**vars(before), "prepaid_phase": expected})


@pytest.mark.parametrize(("table", "start"), [(ROUND_TRANSITIONS, RoundPhase.IDLE),
                                              (PREPAID_TRANSITIONS, PrepaidPhase.NORMAL)])
def test_every_phase_is_reachable_and_leads_back_to_rest(table: Mapping[Any, Any],
                                                         start: enum.Enum) -> None:
    """No phase the engine can never enter, and none it can never leave."""
    phases: set[object] = set(type(start))

    def reachable(origin: object, edges: list[tuple[object, object]]) -> set[object]:
        seen, todo = {origin}, [origin]
        while todo:
            here = todo.pop()
            for a, b in edges:
                if a == here and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    forward = [(p, q) for (p, _e), q in table.items()]
    assert reachable(start, forward) == phases
    backward = [(q, p) for p, q in forward]
    assert reachable(start, backward) == phases


def test_state_saved_with_string_phases_loads_and_saves_the_same_strings() -> None:
    saved = json.loads(GOLDEN.read_text())
    rig = Rig(settings=EngineSettings(power_up_protect_s=0, alarm_delay_s=600.0))
    engine = LoadControlEngine.from_dict(saved, rig.topology, rig.settings,
                                         rng=random.Random(1))
    view = engine.group_view("g")
    assert (view.phase, view.energy_phase) == ("alarm", "idle")
    assert engine._meters["m3"].prepaid_phase is PrepaidPhase.TRIP_PENDING
    again = json.loads(json.dumps(engine.to_dict()))
    again.pop("rng")
    assert again == saved
    # The engine carries on from it: the round announced before the "restart" trips when its
    # alarm delay has run, which needs the loaded phase to be the alarm phase.
    tripped = engine.tick(saved["groups"]["g"]["power"]["alarm_since"] + 600.0)
    assert any(type(o).__name__ == "SendControl" for o in tripped)
