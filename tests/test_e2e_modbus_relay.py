"""Signed relay commands on Modbus meters, through the real daemon, a real mosquitto and the
Modbus TCP simulator (issue 6, build item 4): the relay coil from the meter's profile is written
on the bus priority lane and read back; a meter whose profile has no relay, or a protected one,
is rejected before any write reaches the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.control.commands import Journal
from tests.broker import Observer
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until
from tests.test_e2e_commands import _printed_verdict, _send, gwtool


def _setup(rig: GatewayRig, tmp: Path, protected: str) -> Path:
    assert gwtool("keygen", "--out", str(tmp / "op1")).returncode == 0
    assert rig.config_path is not None
    text = rig.config_path.read_text().replace(f'id = "{protected}"',
                                               f'id = "{protected}"\nprotected = true')
    text += (f'\n[commands]\nclock_trusted = true\n\n[[operators]]\nkid = "op-1"\n'
             f'public_key = "{tmp / "op1.pub"}"\nroles = ["OPERATOR"]\n')
    rig.config_path.write_text(text)
    return tmp / "op1.key"


def _published_power(observer: Observer, rig: GatewayRig, meter: str) -> list[float]:
    return [float(r["val"]) for _t, m in decoded(observer, rig.topic(f"reads/{meter}"))
            for r in m["reads"] if r["q"] == "power.active.total"]


def test_signed_trip_and_close_move_the_modbus_relay_and_rejections_write_nothing(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=0, modbus_meters=3, poll_interval_s=1.0,
                     modbus_profiles=["modbus-relay-meter", "modbus-relay-meter", "sdm630"]) as rig:
        sim = rig.modbus
        assert sim is not None
        relay_meter, protected, no_relay = "mb-1", "mb-2", "mb-3"
        key = _setup(rig, tmp_path, protected)
        load = rig.meters[relay_meter].sim
        with Observer(rig.broker, "mtr/v1/#", client_id="modbus-relay-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: _published_power(observer, rig, relay_meter), 30), \
                rig.log_text()[-3000:]
            assert _published_power(observer, rig, relay_meter)[-1] > 0

            # Rejections first: nothing may be written to any unit.
            rejected = {
                "protected_meter": _send(rig, key, tmp_path, "p", "--action", "trip",
                                         "--targets", protected, "--ctr", "1"),
                "no_relay": _send(rig, key, tmp_path, "n", "--action", "trip", "--targets",
                                  no_relay, "--ctr", "2"),
            }
            allow = _send(rig, key, tmp_path, "a", "--action", "allow_close", "--targets",
                          relay_meter, "--ctr", "3")
            for code, result in rejected.items():
                assert result["code"] == 1, (code, result)
                _cmd, status, reason = _printed_verdict(result)
                assert (status, reason.split(":")[0]) == ("rejected", code), reason
            _cmd, status, reason = _printed_verdict(allow)
            assert status == "rejected" and "no allow-close value" in reason, reason
            _cmd, _status, reason = _printed_verdict(rejected["no_relay"])
            assert "profile 'sdm630'" in reason and "modbus-relay-meter.toml" in reason, reason
            assert [sim.relay_writes(u) for u in (1, 2, 3)] == [0, 0, 0]

            trip = _send(rig, key, tmp_path, "t", "--action", "trip", "--targets", relay_meter,
                         "--ctr", "10")
            _cmd, status, reason = _printed_verdict(trip)
            assert (trip["code"], status) == (0, "executed"), trip
            assert "relay open" in reason, reason
            assert load.sample().status.relay_open
            assert [sim.relay_writes(u) for u in (1, 2, 3)] == [1, 0, 0]
            # The load is gone, and the next poll publishes it.
            seen = len(_published_power(observer, rig, relay_meter))
            assert wait_until(lambda: len(_published_power(observer, rig, relay_meter)) > seen, 10)
            assert _published_power(observer, rig, relay_meter)[-1] == 0

            close = _send(rig, key, tmp_path, "c", "--action", "close", "--targets", relay_meter,
                          "--ctr", "11")
            _cmd, status, reason = _printed_verdict(close)
            assert (close["code"], status) == (0, "executed"), close
            assert "relay closed" in reason, reason
            assert not load.sample().status.relay_open
            assert [sim.relay_writes(u) for u in (1, 2, 3)] == [2, 0, 0]
            seen = len(_published_power(observer, rig, relay_meter))
            assert wait_until(lambda: len(_published_power(observer, rig, relay_meter)) > seen, 10)
            assert _published_power(observer, rig, relay_meter)[-1] > 0

            # The CRM hears of the trip before and after, and of the restore, as for DL/T 645.
            events = [(m["kind"], m["state"]) for _t, m in decoded(observer, rig.topic("alarms"))
                      if str(m.get("kind", "")).startswith("load_control.")]
            assert events == [("load_control.trip_pending", "raised"),
                              ("load_control.trip_pending", "cleared"),
                              ("load_control.tripped", "raised"),
                              ("load_control.tripped", "cleared")], events
            assert rig.stop_daemon() == 0

        with Journal.open(rig.workdir / "var" / "audit.db") as journal:
            cmd, _s, _r = _printed_verdict(rejected["no_relay"])
            kinds = [(r.kind, r.details.get("code")) for r in journal.commands(cmd)]
            assert ("rejected", "no_relay") in kinds, kinds
            assert not any(k == "executed" or k == "accepted" for k, _c in kinds), kinds


# `make slow`: limit rounds and relay actuation are one code path for both protocols (the
# one relay actuation, docs/architecture.md). The default run guards the rounds with
# tests/test_e2e_commands.py::test_signed_group_limit_alarms_then_trips_rounds_and_restores
# (DL/T 645) and the Modbus relay write and read-back with the trip/close test above.
@pytest.mark.slow
def test_group_limit_rounds_trip_and_restore_modbus_relays(tmp_path: Path) -> None:
    """The load-control engine's rounds reach Modbus meters the same way: the relay write on
    the priority lane, verified by the read-back, restored on cancel."""
    with gateway_rig(tmp_path, dlt645_buses=0, modbus_meters=2, poll_interval_s=1.0,
                     modbus_profiles=["modbus-relay-meter", "modbus-relay-meter"]) as rig:
        sim = rig.modbus
        assert sim is not None
        key = _setup(rig, tmp_path, protected="none")
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + """
[[groups]]
id = "g1"
members = [{ meter = "mb-1" }, { meter = "mb-2" }]

[load_control]
power_step_s = 1
power_window_s = 2
alarm_delay_s = 1
settle_s = 2
after_record_s = 1
after_record_grace_s = 2
power_up_protect_s = 0
restore_delay_min_s = 0
restore_delay_max_s = 1

[load_control.groups.g1]
rounds = [["mb-1"], ["mb-2"]]
""")
        loads = [rig.meters["mb-1"].sim, rig.meters["mb-2"].sim]
        with Observer(rig.broker, "mtr/v1/#", client_id="modbus-limit-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 4, 30), \
                rig.log_text()[-3000:]
            limit = _send(rig, key, tmp_path, "limit", "--action", "limit", "--targets",
                          "group:g1", "--params",
                          '{"kind": "business_suspension", "limit_kw": 0.001}', "--ctr", "20",
                          timeout=30)
            assert limit["code"] == 0, limit
            assert wait_until(lambda: all(m.sample().status.relay_open for m in loads), 40), \
                rig.log_text()[-3000:]
            assert [sim.relay_writes(u) for u in (1, 2)] == [1, 1]
            kinds = [(m["kind"], m["state"]) for _t, m in decoded(observer, rig.topic("alarms"))]
            assert kinds.index(("customer.pre_trip", "raised")) < \
                kinds.index(("customer.trip", "raised")), kinds
            cancel = _send(rig, key, tmp_path, "cancel", "--action", "cancel", "--targets",
                           "group:g1", "--ctr", "21", timeout=30)
            assert cancel["code"] == 0, cancel
            assert wait_until(lambda: not any(m.sample().status.relay_open for m in loads), 20), \
                rig.log_text()[-3000:]
            assert [sim.relay_writes(u) for u in (1, 2)] == [2, 2]
            assert rig.stop_daemon() == 0
