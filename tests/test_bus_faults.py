"""The bus-fault rule: a whole silent bus is one comm.bus alarm, never N comm_loss alarms."""

from __future__ import annotations

from gateway.acquisition.poll_result import BusEvent
from gateway.pipeline.bus_faults import COMM_BUS, AlarmChange, BusFaults, BusLine, bus_fault


def lost(meter: str, bus: str, t: int = 0) -> BusEvent:
    return BusEvent("comm_loss", meter, bus, "raised", t, {"address": meter})


def back(meter: str, bus: str, t: int = 0) -> BusEvent:
    return BusEvent("comm_loss", meter, bus, "cleared", t, {"address": meter})


def two_buses() -> BusFaults:
    faults = BusFaults([BusLine("a", "/dev/ttyA", ("a1", "a2", "a3")),
                        BusLine("b", "/dev/ttyB", ("b1", "b2"))])
    for meter, bus in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("b2", "b")):
        assert faults.on_poll(meter, bus, True, 0) == []
    return faults


def keys(changes: list[AlarmChange]) -> list[tuple[str, str]]:
    return [(c.key, c.state) for c in changes]


def silence(faults: BusFaults, bus: str, meters: list[str], mains_lost: bool = False
            ) -> list[AlarmChange]:
    out: list[AlarmChange] = []
    for meter in meters:
        out += faults.on_poll(meter, bus, False, 1)
    for meter in meters:
        out += faults.on_comm_loss(lost(meter, bus), lambda: mains_lost)
    return out


def test_rule() -> None:
    assert bus_fault("a", {"a": False, "b": True}, mains_lost=False)
    assert not bus_fault("a", {"a": False, "b": False}, mains_lost=False)  # all silent
    assert not bus_fault("a", {"a": False, "b": True}, mains_lost=True)  # an outage
    assert not bus_fault("a", {"a": True, "b": True}, mains_lost=False)  # a answers
    assert bus_fault("a", {"a": False}, mains_lost=False)  # one bus, mains present
    assert not bus_fault("a", {"a": False}, mains_lost=True)


def test_cut_bus_is_one_comm_bus_alarm_and_no_comm_loss() -> None:
    faults = two_buses()
    changes = silence(faults, "a", ["a1", "a2", "a3"])
    assert keys(changes) == [("comm.bus/a", "raised")]
    details = changes[0].details
    assert changes[0].kind == COMM_BUS and details["bus"] == "a" and details["link"] == "/dev/ttyA"
    assert details["meters"] == ["a1", "a2", "a3"] and details["folded"] == ["a1", "a2", "a3"]
    assert "RS-485 pair" in str(details["hint"])
    # Restore: the first answer clears comm.bus; the folded clears are not published.
    assert keys(faults.on_poll("a2", "a", True, 5)) == [("comm.bus/a", "cleared")]
    assert faults.on_comm_loss(back("a2", "a"), lambda: False) == []
    assert faults.on_poll("a1", "a", True, 6) == []
    assert faults.on_comm_loss(back("a1", "a"), lambda: False) == []
    # a3 stays silent after its bus is back: its own comm_loss, published now.
    assert keys(faults.on_poll("a3", "a", False, 7)) == [("comm_loss/a3", "raised")]
    assert keys(faults.on_comm_loss(back("a3", "a"), lambda: False)) == [("comm_loss/a3", "cleared")]


def test_one_silent_meter_is_its_own_comm_loss() -> None:
    faults = two_buses()
    assert keys(silence(faults, "a", ["a1"])) == [("comm_loss/a1", "raised")]
    assert keys(faults.on_comm_loss(back("a1", "a"), lambda: False)) == [("comm_loss/a1", "cleared")]


def test_every_bus_silent_or_mains_lost_keeps_per_meter_comm_loss() -> None:
    faults = two_buses()
    for meter, bus in (("b1", "b"), ("b2", "b")):
        faults.on_poll(meter, bus, False, 1)
    changes = silence(faults, "a", ["a1", "a2", "a3"])
    assert keys(changes) == [("comm_loss/a1", "raised"), ("comm_loss/a2", "raised"),
                             ("comm_loss/a3", "raised")]
    faults = two_buses()
    changes = silence(faults, "a", ["a1", "a2", "a3"], mains_lost=True)
    assert [k for k, _ in keys(changes)] == ["comm_loss/a1", "comm_loss/a2", "comm_loss/a3"]


def test_single_bus_without_mains_loss_is_a_bus_fault() -> None:
    faults = BusFaults([BusLine("only", "/dev/ttyX", ("x1", "x2"))])
    assert keys(silence(faults, "only", ["x1", "x2"])) == [("comm.bus/only", "raised")]


def test_comm_bus_raised_before_a_restart_is_cleared_by_an_answer() -> None:
    faults = BusFaults([BusLine("a", "/dev/ttyA", ("a1",))])
    faults.seed(["comm.bus/a", "comm_loss/zz"])
    assert keys(faults.on_poll("a1", "a", True, 1)) == [("comm.bus/a", "cleared")]


def test_unknown_bus_passes_through() -> None:
    faults = BusFaults([])
    assert keys(faults.on_comm_loss(lost("q1", "q"), lambda: False)) == [("comm_loss/q1", "raised")]
