"""The issue's bound measured at the issue's poll interval (issue 14, "Must show"): a single-meter
outage at **60 s polling** reaches MQTT as ``outage.meter`` (suspected) at most 75 s after the cut,
is confirmed with its duration after restore, and a meter that only stops answering ends as
``comm_loss`` with its suspicion withdrawn. The daemon as a real subprocess, mosquitto, six
DL/T 645 meters on one pty, two per phase.

The cuts are placed on purpose in the 60 s grid (every meter is polled at the wall-clock minute):

* a1's supply is cut right after the grid round (a1's poll answered, then the others') — the
  worst case: the first poll that can miss is a whole interval later;
* b1 is muted (``Dlt645Rig.mute``: silent, no power-down record) at the same moment;
* c1's supply is cut 30 s later — mid-interval.

The latencies (cut → the ``outage.meter`` raise received by a subscriber) are printed; run with
``-s`` to see them:
``pytest -m slow -s -n 0 tests/test_e2e_meter_outage_60s.py`` (about 2.5–3.5 minutes: up to one
minute waiting for the grid, two intervals of outage and restore). ``comm_loss_after = 2`` so
b1's ``comm_loss`` is raised (and held) by its probe and its next grid poll already answers; with
3 it would come one interval later and the backoff would add two more.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, wait_until, write_config
from tests.test_payload_cddl import CDDL, Validator, parse_rules

INTERVAL_S = 60.0
BOUND_S = 75.0  # the bound for the suspected outage.meter
PHASES = {"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "c2": "c"}
READS_PER_POLL = 3  # the test-dlt645 profile


@pytest.mark.slow
def test_meter_outage_latency_at_60s_polling(tmp_path: Path) -> None:
    epoch = float(int(time.time()))
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=6, modbus_meters=0,
                     poll_interval_s=INTERVAL_S, start_epoch=epoch) as rig:
        line = rig.lines["rs485-1"]
        ids = sorted(rig.meters)
        name = dict(zip(ids, PHASES, strict=True))
        by_name = {v: k for k, v in name.items()}
        address = {n: rig.meters[by_name[n]].address for n in PHASES}

        def sync_meter_clocks() -> None:
            rig.clock.advance(max(0.0, time.time() - epoch - rig.clock()))

        meters = [{"id": m, "bus": "rs485-1", "address": rig.meters[m].address,
                   "profile": "test-dlt645", "poll_interval_s": INTERVAL_S,
                   "phase": PHASES[name[m]], "customer": f"C-{name[m]}"} for m in ids]
        bus = {"name": "rs485-1", "protocol": "dlt645", "port": line.device, "baudrate": 9600,
               "parity": "N", "timeout_ms": 200, "retries": 1, "comm_loss_after": 2}
        write_config(rig, [bus], meters)
        validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
        seen: dict[str, float] = {}  # alarm key/state -> wall time the subscriber received it

        with Observer(rig.broker, "mtr/v1/#", client_id="meter-outage-60s") as observer:
            rig.start_daemon()

            def alarms(kind: str, key: str | None = None) -> list[dict[str, Any]]:
                out = [m for _t, m in decoded(observer, rig.topic("alarms"))
                       if m.get("kind") == kind and (key is None or m["key"] == key)]
                now = time.time()
                for m in out:
                    seen.setdefault(f"{m['key']}/{m['state']}", now)
                return out

            def replies(n: str) -> int:
                return line.stats[address[n]].replies_sent

            # the start-up poll, then a1's poll on the minute grid (the grid is aligned to
            # wall-clock multiples of the interval): counted from just before the boundary
            assert wait_until(lambda: decoded(observer, rig.topic("reads/")), 30), rig.log_text()
            boundary = (time.time() // INTERVAL_S + 1) * INTERVAL_S
            if boundary - time.time() < 10:  # too close to the start-up poll's traffic
                boundary += INTERVAL_S
            time.sleep(boundary - 2 - time.time())
            before = {n: replies(n) for n in PHASES}
            # the whole round, not only a1's poll: a miss of b1 in this round would re-probe a1
            # (a witness of phase a) at once, and a1 would be found out early
            assert wait_until(lambda: all(replies(n) >= before[n] + READS_PER_POLL
                                          for n in PHASES), 20, step=0.01), \
                rig.log_text()[-3000:]
            sync_meter_clocks()
            cut = {"a1": time.time()}
            line.cut_power(address["a1"])
            line.mute(address["b1"])
            cut["b1"] = cut["a1"]
            keys = {n: f"outage.meter/{by_name[n]}" for n in ("a1", "b1", "c1")}

            def raised(n: str) -> bool:
                return bool(alarms("outage.meter", keys[n]))

            time.sleep(INTERVAL_S / 2)
            assert not raised("a1") and not raised("b1"), \
                (f"raised before a grid poll could miss: cut {cut['a1'] - boundary:.2f} s after "
                 f"the boundary", alarms("outage.meter"), rig.log_text()[-5000:])
            sync_meter_clocks()
            cut["c1"] = time.time()
            line.cut_power(address["c1"])

            assert wait_until(lambda: all(raised(n) for n in ("a1", "b1", "c1")),
                              BOUND_S - INTERVAL_S / 2 + 5, step=0.05), rig.log_text()[-3000:]
            latency = {n: seen[f"{keys[n]}/raised"] - cut[n] for n in ("a1", "b1", "c1")}
            for n in ("a1", "b1", "c1"):
                print(f"60 s polling: {n} cut {(cut[n] % INTERVAL_S):.1f} s past the minute "
                      f"(the grid poll) -> outage.meter suspected on MQTT after "
                      f"{latency[n]:.1f} s")
            for n in ("a1", "b1", "c1"):
                details = alarms("outage.meter", keys[n])[0]["details"]
                assert details["confirmed"] is False and details["customers"] == [f"C-{n}"]
                assert latency[n] <= BOUND_S, (n, latency[n])
            # the worst case really is one interval late, not an earlier poll's luck
            assert latency["a1"] >= INTERVAL_S - 5, latency
            assert not alarms("comm_loss"), "b1's comm_loss must be held while suspected"

            sync_meter_clocks()
            restore = time.time()
            line.restore_power(address["a1"], address["c1"])
            line.mute(address["b1"], muted=False)

            def cleared(n: str) -> list[dict[str, Any]]:
                return [m for m in alarms("outage.meter", keys[n]) if m["state"] == "cleared"]

            # they answer at the next grid poll (≤ 60 s), then the record is read
            assert wait_until(lambda: all(cleared(n) for n in ("a1", "b1", "c1")),
                              INTERVAL_S + 20), rig.log_text()[-3000:]
            for n in ("a1", "c1"):
                confirmed = cleared(n)[0]["details"]
                assert confirmed["confirmed"] is True, confirmed
                assert abs(confirmed["duration_s"] - (restore - cut[n])) <= 2, confirmed
                print(f"60 s polling: {n} confirmed {seen[f'{keys[n]}/cleared'] - restore:.1f} s "
                      f"after restore, duration_s {confirmed['duration_s']} "
                      f"(cut lasted {restore - cut[n]:.1f} s)")
            withdrawn = cleared("b1")[0]["details"]
            assert withdrawn["withdrawn"] is True and withdrawn["confirmed"] is False
            assert wait_until(lambda: len(alarms("comm_loss")) >= 2, 5), rig.log_text()[-3000:]
            assert {m["key"] for m in alarms("comm_loss")} == {f"comm_loss/{by_name['b1']}"}
            assert [m["state"] for m in alarms("comm_loss")] == ["raised", "cleared"]
            b1_back = seen[keys["b1"] + "/cleared"] - restore
            print(f"60 s polling: b1 withdrawn {b1_back:.1f} s after restore (its next grid "
                  "poll); comm_loss raised + cleared")
            assert not alarms("outage.phase") and not alarms("outage.area")

            for message in [*alarms("outage.meter"), *alarms("comm_loss")]:
                validator.check("alarm-message", message, message["key"])
                kind = message["kind"].replace(".", "-").replace("_", "-")
                validator.check(f"{kind}-{message['state']}-details", message["details"],
                                message["key"])
        assert rig.stop_daemon() == 0
