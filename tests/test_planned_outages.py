"""Planned outages (issue 14): the signed ``planned_outage`` command through the verifier (roles,
params, targets), its windows surviving a restart, and the power watch marking an outage that
starts inside a window ``planned: true`` (gateway/control/commands/planned.py,
gateway/analytics/outages.py)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.analytics.outages import PowerWatch, ServedArea
from gateway.config.loader import load_config
from gateway.config.model import GatewayConfig
from gateway.control.commands import CommandVerifier, Decision, Journal
from gateway.control.commands.planned import (
    FILE_NAME,
    MAX_WINDOW_S,
    PlannedOutages,
    PlannedWindow,
)
from protocols.commands import raw_public_key
from protocols.ed25519 import SigningKey
from tests.test_command_verifier import GW, NOW, command
from tests.test_outages import FakeAlarms, drive

OPERATOR = SigningKey(bytes([1]) * 32)
ENGINEER = SigningKey(bytes([3]) * 32)
VIEWER = SigningKey(bytes([4]) * 32)
SECADM = SigningKey(bytes([5]) * 32)
START = int(NOW) + 600
AREA_METERS = ("m-001", "m-002", "m-003")


def _config(tmp_path: Path) -> GatewayConfig:
    meters = "\n".join(
        f'[[meters]]\nid = "m-{i:03d}"\nbus = "rs485-1"\naddress = "{i:012d}"\n'
        'profile = "dlt645-2007"\n'
        for i in range(1, 5)
    )
    operators = "\n".join(
        f'[[operators]]\nkid = "{kid}"\npublic_key = "{raw_public_key(key).hex()}"\n'
        f'roles = ["{role}"]\n'
        for kid, key, role in (("op", OPERATOR, "OPERATOR"), ("eng", ENGINEER, "ENGINEER"),
                               ("view", VIEWER, "VIEWER"), ("sec", SECADM, "SECADM"))
    )
    text = textwrap.dedent(f"""
        [gateway]
        id = "{GW}"
        data_dir = "var"

        [mqtt]
        host = "127.0.0.1"

        [[buses]]
        name = "rs485-1"
        protocol = "dlt645"
        port = "/dev/null"
        """) + meters + textwrap.dedent("""
        [[groups]]
        id = "tq-1-subs"
        members = [{ meter = "m-002" }, { meter = "m-003" }]

        [[areas]]
        id = "tq-1"
        master = "m-001"
        subs = "tq-1-subs"

        [commands]
        clock_trusted = true
        max_meters_per_command = 2
        """) + operators
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_config(path)


class Rig:
    def __init__(self, tmp_path: Path, journal: Journal) -> None:
        self.config = _config(tmp_path)
        self.planned = PlannedOutages(tmp_path / FILE_NAME)
        self.verifier = CommandVerifier.from_config(self.config, journal, planned=self.planned)
        self.ctr = 0

    def send(self, *, signer: str = "op", targets: object = None,
             params: dict[str, object] | None = None, now: float = NOW) -> Decision:
        keys = {"op": (OPERATOR, "OPERATOR"), "eng": (ENGINEER, "ENGINEER"),
                "view": (VIEWER, "VIEWER"), "sec": (SECADM, "SECADM")}
        key, role = keys[signer]
        self.ctr += 1
        message, _ = command(keys=((key, signer),), action="planned_outage",
                             targets=targets if targets is not None else {"group": "tq-1"},
                             params=params if params is not None
                             else {"start": START, "end": START + 3600, "note": "transformer"},
                             role=role, ctr=self.ctr)
        return self.verifier.verify(message, now)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Journal.open(tmp_path / "audit.db") as journal:
        yield Rig(tmp_path, journal)


# ------------------------------------------------------------------------ the verifier


@pytest.mark.parametrize("signer", ["op", "eng"])
def test_operator_and_engineer_may_plan_an_area_outage(rig: Rig, signer: str) -> None:
    decision = rig.send(signer=signer)
    assert decision.accepted, decision.reason
    assert decision.command is not None
    # The area names its master and sub-meters; a whole area is not capped like a trip
    # (max_meters_per_command = 2 here, the area has 3 meters).
    assert decision.command.meters == AREA_METERS
    assert decision.command.group == "tq-1"


@pytest.mark.parametrize("signer", ["view", "sec"])
def test_viewer_and_secadm_may_not(rig: Rig, signer: str) -> None:
    decision = rig.send(signer=signer)
    assert decision.code == "insufficient_role"
    assert "sign as ENGINEER or OPERATOR" in decision.reason


def test_engineer_still_may_not_trip(rig: Rig) -> None:
    message, _ = command(keys=((ENGINEER, "eng"),), action="trip", targets=["m-001"],
                         role="ENGINEER", ctr=1)
    decision = rig.verifier.verify(message, NOW)
    assert decision.code == "insufficient_role"
    assert "CONTROL" in decision.reason


def test_meters_are_a_target_and_unknown_ones_are_rejected(rig: Rig) -> None:
    assert rig.send(targets=["m-004"]).accepted
    assert rig.send(targets=["m-009"]).code == "unknown_target"
    assert rig.send(targets={"group": "tq-9"}).code == "unknown_target"


def test_area_ids_are_targets_of_planned_outage_only(rig: Rig) -> None:
    message, _ = command(keys=((OPERATOR, "op"),), action="close", targets={"group": "tq-1"},
                         ctr=99)
    assert rig.verifier.verify(message, NOW).code == "unknown_target"


@pytest.mark.parametrize(("params", "why"), [
    ({"start": START + 10, "end": START}, "before params.end"),
    ({"start": START, "end": START}, "before params.end"),
    ({"start": START, "end": START + MAX_WINDOW_S + 1}, "longer than"),
    ({"start": START * 1000, "end": START * 1000 + 3_600_000}, "longer than"),
    ({"start": int(NOW) - 7200, "end": int(NOW) - 3600}, "ended"),
    ({"start": START}, "params.end"),
    ({"start": "soon", "end": START}, "params.start"),
    ({"start": True, "end": START}, "params.start"),
    ({"start": START, "end": START + 60, "crew": 3}, "unknown params"),
    ({"start": START, "end": START + 60, "note": "x" * 201}, "params.note"),
    ({"cancel": "00" * 16}, "names no planned outage"),
])
def test_bad_params_are_rejected(rig: Rig, params: dict[str, object], why: str) -> None:
    decision = rig.send(params=params)
    assert decision.code == "bad_params"
    assert why in decision.reason


def test_a_week_is_the_longest_window(rig: Rig) -> None:
    assert rig.send(params={"start": START, "end": START + MAX_WINDOW_S}).accepted


# ------------------------------------------------------------------------ windows and restart


def test_windows_survive_a_restart_and_can_be_cancelled(rig: Rig, tmp_path: Path) -> None:
    decision = rig.send()
    assert decision.command is not None
    cmd = decision.command
    outcome = rig.planned.apply(cmd.id, "tq-1", cmd.meters, cmd.params, NOW)
    assert "tq-1" in outcome

    reopened = PlannedOutages(tmp_path / FILE_NAME)
    assert reopened.windows == rig.planned.windows
    assert reopened.covers("tq-1", AREA_METERS, START * 1000)
    assert not reopened.covers("tq-1", AREA_METERS, START * 1000 - 1)
    assert not reopened.covers("tq-1", AREA_METERS, (START + 3600) * 1000)  # end excluded
    assert not reopened.covers("tq-2", ("m-004",), START * 1000)

    cancel = rig.send(signer="eng", params={"cancel": cmd.id.hex()})
    assert cancel.accepted, cancel.reason
    assert cancel.command is not None
    assert "cancelled" in rig.planned.apply(cancel.command.id, "tq-1", cancel.command.meters,
                                            cancel.command.params, NOW)
    assert not PlannedOutages(tmp_path / FILE_NAME).windows


def test_window_of_all_the_meters_covers_the_area_and_ended_windows_are_dropped(
        tmp_path: Path) -> None:
    planned = PlannedOutages(tmp_path / FILE_NAME)
    planned.apply(b"\x01" * 16, None, AREA_METERS, {"start": START, "end": START + 60}, NOW)
    assert planned.covers("tq-1", AREA_METERS, START * 1000 + 1)
    assert not planned.covers("tq-1", (*AREA_METERS, "m-004"), START * 1000 + 1)
    planned.apply(b"\x02" * 16, None, ["m-004"], {"start": START + 120, "end": START + 180},
                  START + 100)  # the first window has ended by now
    assert list(PlannedOutages(tmp_path / FILE_NAME).windows) == ["02" * 16]


def test_unreadable_file_starts_without_windows(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{not json")
    assert PlannedOutages(tmp_path / FILE_NAME).windows == {}


# ------------------------------------------------------------------------ the alarm's flag


def test_outage_starting_in_a_window_is_planned_and_outside_it_is_not() -> None:
    t0_ms = 1_760_000_000_000  # tests.test_outages.T0_MS: the wall clock of drive()
    planned = PlannedOutages(None)
    planned.windows["aa"] = PlannedWindow("aa", "tq-1", AREA_METERS, t0_ms // 1000 + 5,
                                          t0_ms // 1000 + 60)
    areas = (ServedArea("tq-1", AREA_METERS, ()), ServedArea("tq-2", ("m-004",), ()))
    alarms = FakeAlarms()
    watch = PowerWatch(areas, alarms, min_duration_s=2, hold_up_s=90, planned=planned)
    drive(watch, 1.0, 4.0, 4.5)  # starts before the window: not planned
    flags = {(e[0], e[2]): e[3]["planned"] for e in alarms.events}
    assert flags == {("raised", "outage.area/tq-1"): False, ("cleared", "outage.area/tq-1"): False,
                     ("raised", "outage.area/tq-2"): False, ("cleared", "outage.area/tq-2"): False}

    alarms.events.clear()
    watch2 = PowerWatch(areas, alarms, min_duration_s=2, hold_up_s=90, planned=planned)
    drive(watch2, 6.0, 9.0, 9.5)  # starts inside the window
    flags = {(e[0], e[2]): e[3]["planned"] for e in alarms.events}
    assert flags == {("raised", "outage.area/tq-1"): True, ("cleared", "outage.area/tq-1"): True,
                     ("raised", "outage.area/tq-2"): False, ("cleared", "outage.area/tq-2"): False}
