"""``[health] textfile_dir``: the health snapshot as a node-exporter textfile.

The oracle for the format is ``prometheus_client``'s own parser (the reference implementation
of the text exposition format); the oracle for the figures is the health message the same
daemon publishes on the broker from the same snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app.health_textfile import TextfileWriter, render
from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, wait_until

pytestmark = pytest.mark.timeout(180)


def parse(text: str) -> dict[str, Any]:
    """``{family name: {"type": ..., "samples": {(sample name, labels...): value}}}``."""
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, *sorted(s.labels.items())): s.value for s in family.samples}
        out[family.name] = {"type": family.type, "samples": samples}
    return out


SNAPSHOT: dict[str, Any] = {
    "uptime_s": 12.5, "rss_bytes": 50_000_000, "cpu_pct": 3.25, "loop_lag_ms": 4.0,
    "event_loop": "uvloop", "outbox_depth": 7, "oldest_unacked_age_s": 1.5, "healthy": True,
    "buses": {"rs485-1": {"state": "up", "line_error": None, "transactions_per_s": 2.0,
                          "success_ratio": 0.5, "transactions": 10, "timeouts": 5, "overruns": 1,
                          "priority_frames": 0, "comm_lost": ["m-2"], "unreachable": [],
                          "meters": {"m-1": [4, 3, 1, 2, 1, 125], "m-2": [4, 0, 4, 8, 4, 900]}}},
    "tasks": {"bus:rs485-1": "running", "pump": "failed: boom"},
    "mqtt": {"state": 'odd "state"\\\n', "connects": 2, "connection_losses": 1, "last_error": None},
    "committer": {"polls": 8, "commits": 8, "reads": 30, "flagged": 0, "alarms": 1, "held": 0,
                  "dropped": 0},
    "store": {"state": "ok", "held": 0, "dropped": 0, "ballast": True},
}


def test_render_parses_with_the_reference_parser() -> None:
    families = parse(render("gw-1", SNAPSHOT))
    gw = ("gateway", "gw-1")
    assert families["edge_gateway_outbox_depth"]["samples"] == {("edge_gateway_outbox_depth", gw): 7}
    assert families["edge_gateway_healthy"]["samples"][("edge_gateway_healthy", gw)] == 1
    assert families["edge_gateway_loop_lag_seconds"]["samples"][
        ("edge_gateway_loop_lag_seconds", gw)] == 0.004
    polls_ok = families["edge_gateway_meter_polls_ok"]
    assert polls_ok["type"] == "counter"
    assert polls_ok["samples"] == {
        ("edge_gateway_meter_polls_ok_total", ("bus", "rs485-1"), gw, ("meter", "m-1")): 3,
        ("edge_gateway_meter_polls_ok_total", ("bus", "rs485-1"), gw, ("meter", "m-2")): 0}
    assert families["edge_gateway_meter_last_poll_seconds"]["samples"][
        ("edge_gateway_meter_last_poll_seconds", ("bus", "rs485-1"), gw, ("meter", "m-2"))] == 0.9
    assert families["edge_gateway_bus_comm_lost_meters"]["samples"][
        ("edge_gateway_bus_comm_lost_meters", ("bus", "rs485-1"), gw)] == 1
    state = families["edge_gateway_mqtt_state"]["samples"]
    assert list(state) == [("edge_gateway_mqtt_state", gw, ("state", 'odd "state"\\\n'))]
    assert families["edge_gateway_mqtt_connected"]["samples"][("edge_gateway_mqtt_connected", gw)] == 0
    up = parse(render("gw-1", {**SNAPSHOT, "mqtt": {"state": "up"}}))["edge_gateway_mqtt_connected"]
    assert up["samples"] == {("edge_gateway_mqtt_connected", gw): 1}
    tasks = families["edge_gateway_task_running"]["samples"]
    assert tasks[("edge_gateway_task_running", gw, ("task", "pump"))] == 0
    assert tasks[("edge_gateway_task_running", gw, ("task", "bus:rs485-1"))] == 1
    assert families["edge_gateway_committer_reads"]["samples"] == {("edge_gateway_committer_reads", gw): 30}
    assert families["edge_gateway_store_ballast"]["samples"] == {("edge_gateway_store_ballast", gw): 1}
    assert "edge_gateway_store_state" not in families  # text fields are not numbers


def test_a_directory_it_cannot_write_is_logged_once_and_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    writer = TextfileWriter(blocker / "metrics")
    with caplog.at_level(logging.WARNING):
        assert not writer.write("a 1\n")
        assert not writer.write("a 1\n")
    assert len([r for r in caplog.records if "cannot write the health textfile" in r.message]) == 1
    good = TextfileWriter(tmp_path / "metrics")
    assert good.write("a 1\n") and (tmp_path / "metrics" / "edge_gateway.prom").read_text() == "a 1\n"
    assert list((tmp_path / "metrics").iterdir()) == [tmp_path / "metrics" / "edge_gateway.prom"]


def test_the_daemons_textfile_carries_the_health_messages_figures(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=1) as rig:
        assert rig.config_path is not None
        with rig.config_path.open("a") as f:
            f.write('\n[health]\ntextfile_dir = "metrics"\n')
        textfile = tmp_path / "metrics" / "edge_gateway.prom"
        with Observer(rig.broker, rig.topic("health"), client_id="textfile-health") as observer:
            rig.start_daemon()

            def all_polled() -> bool:
                if not textfile.exists():
                    return False
                ok = parse(textfile.read_text())["edge_gateway_meter_polls_ok"]["samples"]
                return len(ok) == len(rig.meters) and all(v > 0 for v in ok.values())

            assert wait_until(all_polled, 60), rig.log_text()[-3000:]
            families = parse(textfile.read_text())
            uptime = families["edge_gateway_uptime_seconds"]["samples"][
                ("edge_gateway_uptime_seconds", ("gateway", rig.gateway_id))]

            def same_snapshot() -> dict[str, Any] | None:
                for _topic, message in decoded(observer, rig.topic("health")):
                    if message["stats"]["uptime_s"] == uptime:
                        return message["stats"]  # type: ignore[no-any-return]
                return None

            assert wait_until(lambda: same_snapshot() is not None, 15)
            stats = same_snapshot()
            assert stats is not None
            gw = ("gateway", rig.gateway_id)
            for bus, health in stats["buses"].items():
                assert families["edge_gateway_bus_transactions"]["samples"][
                    ("edge_gateway_bus_transactions_total", ("bus", bus), gw)] == health["transactions"]
                for meter, counts in health["meters"].items():
                    key = (("bus", bus), gw, ("meter", meter))
                    assert families["edge_gateway_meter_polls"]["samples"][
                        ("edge_gateway_meter_polls_total", *key)] == counts[0]
                    assert families["edge_gateway_meter_polls_failed"]["samples"][
                        ("edge_gateway_meter_polls_failed_total", *key)] == counts[2]
            assert families["edge_gateway_outbox_depth"]["samples"][
                ("edge_gateway_outbox_depth", gw)] == stats["outbox_depth"]
            assert families["edge_gateway_mqtt_connected"]["samples"][
                ("edge_gateway_mqtt_connected", gw)] == 1
            # Without the broker the file keeps coming: that is what it is for.
            rig.broker.kill()

            def link_down() -> bool:
                samples = parse(textfile.read_text())["edge_gateway_mqtt_connected"]["samples"]
                return samples[("edge_gateway_mqtt_connected", gw)] == 0

            assert wait_until(link_down, 30), rig.log_text()[-3000:]
            assert rig.stop_daemon() == 0
