"""Group power has one definition (edge_rules.groups.group_power): the total published on
``P/G/groups`` and the total load control compares with its limits are the same number, also
when a member feeds back (rooftop PV: negative active power)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from edge_rules.groups import build_layout, group_power, latest_power
from gateway.acquisition.poll_result import PolledValue, PollResult
from gateway.analytics.groups import GroupPublisher
from gateway.config import load_config
from gateway.control.load_control.runner import LoadControlRunner
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.store import Store
from protocols.topics import GatewayTopics

CONFIG = """\
[gateway]
id = "gw-t"
data_dir = "{data_dir}"

[mqtt]
host = "127.0.0.1"

[[buses]]
name = "tcp-1"
protocol = "modbus-tcp"
host = "127.0.0.1"

[[meters]]
id = "shop"
bus = "tcp-1"
address = 1
profile = "sdm630"
poll_interval_s = 10

[[meters]]
id = "pv-house"
bus = "tcp-1"
address = 2
profile = "sdm630"
poll_interval_s = 10
ct_ratio = 2

# What the customers draw: an exporting house draws nothing.
[[groups]]
id = "consumption"
members = [{{ meter = "shop" }}, {{ meter = "pv-house" }}]

# The feeder's net power, as a utility configures it: the PV house's import added, its
# export subtracted.
[[groups]]
id = "net"
members = [{{ meter = "shop" }}, {{ meter = "pv-house" }},
           {{ meter = "pv-house", direction = "export", sign = "-" }}]
"""

NOW = 1_740_787_200.0


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "sdm630.toml").write_text("# test profile\n")
    (tmp_path / "var").mkdir()
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(data_dir=tmp_path / "var"))
    return path


def power_poll(meter: str, kw: str, t: float) -> PollResult:
    t_ms = int(t * 1000)
    return PollResult(meter, "tcp-1", t_ms, t_ms, True, values=(
        PolledValue("power.active.total", float(kw), "kW", t_ms),))


def test_published_total_equals_the_load_control_total_when_a_member_feeds_back(
        config_path: Path, tmp_path: Path) -> None:
    """Both consumers subscribe to the pipeline's validated feed, as in the daemon: the same
    committed polls reach the published total and the total a load limit is compared with."""
    config = load_config(config_path)
    store = Store.open(tmp_path / "gw.sqlite")
    services = PipelineServices.open(store, GatewayTopics("mtr/v1", config.gateway.id))
    committer = Committer(services, asyncio.Queue())
    publisher = GroupPublisher(config, services.writer, services.topics)
    runner = LoadControlRunner(config, committer=committer, journal=None, buses=[],  # type: ignore[arg-type]
                               report=None)
    services.feed.subscribe("groups", publisher.on_poll)
    services.feed.subscribe("load-control", runner.on_poll)
    committer.commit([power_poll("shop", "12.5", NOW - 2), power_poll("pv-house", "-4.0", NOW - 1)])

    published = {group: total for group, total in publisher.compute(NOW)}
    assert {g: (t.quality, t.val) for g, t in published.items()} == {
        "consumption": ("A", 12.5),  # the house exports 8 kW (× CT 2): it draws nothing
        "net": ("A", 12.5 - 8.0),
    }
    for group, total in published.items():
        assert runner.group_power(group, NOW) == total.val

    # A member that stopped answering: neither publishes nor compares a partial total.
    later = NOW + 3 * 10 + 6
    committer.commit([power_poll("shop", "11.0", later)])
    for group, total in publisher.compute(later):
        assert (total.quality, total.val, total.missing) == ("N", None, ("pv-house",))
        assert runner.group_power(group, later) is None
    assert publisher.publish(later) == 2  # through the one outbox writer
    assert [row.topic for row in store.pending(10)][-2:] == ["mtr/v1/gw-t/groups/consumption",
                                                            "mtr/v1/gw-t/groups/net"]
    store.close()


def test_direction_selects_the_part_of_the_power_each_member_counts() -> None:
    class Member:
        def __init__(self, meter: str, sign: str = "+", direction: str = "import") -> None:
            self.meter, self.sign, self.direction = meter, sign, direction

    class Group:
        def __init__(self, id: str, members: list[Member]) -> None:
            self.id, self.members = id, members

    layout = build_layout(
        [Group("export-only", [Member("pv", direction="export")]),
         Group("net", [Member("pv"), Member("pv", "-", "export")])],
        {"pv": 1.0},
    )
    meters = ["pv"]
    for kw, export_only, net in ((-3.0, 3.0, -3.0), (2.0, 0.0, 2.0), (0.0, 0.0, 0.0)):
        totals = group_power(layout, meters, np.array([[kw]]))
        assert totals.total[:, 0].tolist() == [export_only, net]
    stale = latest_power({"pv": (1.0, NOW - 36)}, meters, {"pv": 10.0}, NOW)
    assert np.isnan(stale[0, 0])
    fresh = latest_power({"pv": (1.0, NOW - 35)}, meters, {"pv": 10.0}, NOW)
    assert fresh[0, 0] == 1.0
