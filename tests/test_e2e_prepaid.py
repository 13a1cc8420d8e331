"""Prepaid customers end to end (issue 17): the real daemon, a real mosquitto, DL/T 645 meters on
a pty and a Modbus prepaid meter, each with a prepayment account in the load model whose balance
falls as its import register rises (the test moves the meters' simulated clock) and rises on a
recharge.

What must happen, per [load_control.prepaid] (alarm 40, trip 0, trip delay 8 s):
``prepaid.low`` with the customer id at the alarm threshold; ``prepaid.exhausted`` and, after the
delay, the trip; a recharge within the delay calls the trip off (no frame); a recharge after the
trip *allows* closing (1B / the allow-close register value) and never closes; a protected prepaid
customer gets the alarms for the CRM but never a control frame. The balance DIs are read at their
profile cadence (``every_s``) and at once when the purchase counter moves (``refresh_on``).
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.broker import Observer
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until
from tests.test_payload_cddl import CDDL, Validator, parse_rules

PREPAID_PROFILE = """\
kind = "dlt645"
version = "2007"
description = "test profile: a money-prepaid meter"

[[reads]]
di = "0001FF00"

[[reads]]
di = "0203FF00"

[[reads]]
di = "04000503"

[[reads]]
di = "03330201"      # purchase counter: every poll, cheap

[[reads]]
di = "009002FF"      # remaining money + overdraft: every 2 s, and at once after a purchase
every_s = 2
refresh_on = ["prepaid.purchase.money.count"]
"""

SETTINGS = """
[commands]
clock_trusted = true

[theft]
enabled = false   # the test's simulated time runs ahead of the power the meters show

[load_control]
power_up_protect_s = 0

[load_control.prepaid]
alarm_threshold = 40
trip_threshold = 0
trip_delay_s = 8
"""


def _configure(rig: GatewayRig, protected: str) -> None:
    assert rig.config_path is not None
    (rig.workdir / "profiles" / "test-prepaid.toml").write_text(PREPAID_PROFILE)
    text = rig.config_path.read_text().replace('"test-dlt645"', '"test-prepaid"')
    for meter_id, ref in rig.meters.items():
        address = f'"{ref.address}"' if isinstance(ref.address, str) else str(ref.address)
        extra = f'\ncustomer = "C-{meter_id}"' + ("\nprotected = true" if meter_id == protected
                                                  else "")
        text = text.replace(f"address = {address}\n", f"address = {address}{extra}\n", 1)
    rig.config_path.write_text(text + SETTINGS)


def _alarms(observer: Observer, rig: GatewayRig, kind: str,
            state: str = "raised") -> dict[str, dict[str, Any]]:
    return {m["meter"]: m for _t, m in decoded(observer, rig.topic("alarms"))
            if m.get("kind") == kind and m.get("state") == state}


def _drain(rig: GatewayRig, below: Decimal, sims: list[Any]) -> None:
    """Let the customers consume (simulated time, 30 s a step) until every balance is at or
    below ``below``; the daemon polls meanwhile in real time."""
    for _ in range(400):
        if all(s.sample().prepaid.balance - s.sample().prepaid.overdraft <= below for s in sims):
            return
        rig.clock.advance(30)
        time.sleep(0.1)
    raise AssertionError(f"balances did not fall below {below}: "
                         f"{[s.sample().prepaid for s in sims]}")


def _recharge(sim: Any) -> None:
    """Top the account up to 100 whatever it had overdrawn (meters drain at different rates)."""
    account = sim.sample().prepaid
    sim.recharge(Decimal(100) - account.balance + account.overdraft)


def test_prepaid_low_exhausted_trip_recharge_and_protected_customer(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=1,
                     modbus_profiles=["modbus-prepaid-meter"], poll_interval_s=1.0) as rig:
        line = rig.lines["rs485-1"]
        tripped, protected, saved = (f"m-{a[-4:]}" for a in sorted(line.meters))
        modbus = "mb-1"
        _configure(rig, protected)
        sims = {m: rig.meters[m].sim for m in (tripped, protected, saved, modbus)}
        for sim in sims.values():
            sim.set_prepaid(Decimal("60"), price=Decimal("300"))
        with Observer(rig.broker, "mtr/v1/#", client_id="prepaid-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 8, 30), \
                rig.log_text()[-3000:]

            # Low: at the alarm threshold, for every customer (protected ones too: CRM calls).
            _drain(rig, Decimal(40), list(sims.values()))
            assert wait_until(lambda: set(_alarms(observer, rig, "prepaid.low")) == set(sims),
                              20), (_alarms(observer, rig, "prepaid.low"), rig.log_text()[-3000:])
            low = _alarms(observer, rig, "prepaid.low")
            assert {m: a["details"]["customer"] for m, a in low.items()} == \
                {m: f"C-{m}" for m in sims}
            assert all(a["severity"] == "warning" for a in low.values())

            # Exhausted: one customer recharges within the trip delay, the others do not.
            _drain(rig, Decimal(0), list(sims.values()))
            # The saved customer recharges as soon as the gateway has seen it exhausted: well
            # within the 8 s trip delay (the purchase counter makes the balance read at once).
            assert wait_until(lambda: saved in _alarms(observer, rig, "prepaid.exhausted"), 20), \
                rig.log_text()[-3000:]
            _recharge(sims[saved])
            assert wait_until(lambda: set(_alarms(observer, rig, "prepaid.exhausted")) ==
                              set(sims), 20), rig.log_text()[-3000:]
            exhausted = _alarms(observer, rig, "prepaid.exhausted")
            assert exhausted[protected]["details"]["protected"] is True
            assert exhausted[tripped]["details"]["customer"] == f"C-{tripped}"
            assert exhausted[tripped]["severity"] == "major"

            # After the delay: tripped (DL/T 645 1A frame, Modbus relay register), verified.
            assert wait_until(lambda: sims[tripped].sample().status.relay_open
                              and sims[modbus].sample().status.relay_open, 30), \
                rig.log_text()[-3000:]
            assert wait_until(lambda: {tripped, modbus} <=
                              set(_alarms(observer, rig, "customer.trip")), 10)
            assert not sims[saved].sample().status.relay_open
            assert wait_until(lambda: saved in _alarms(observer, rig, "prepaid.exhausted",
                                                       "cleared"), 10), rig.log_text()[-3000:]
            assert saved in _alarms(observer, rig, "prepaid.low", "cleared")

            # Recharge after the trip: allow close, never a direct close.
            _recharge(sims[tripped])
            _recharge(sims[modbus])
            assert wait_until(lambda: sims[tripped].sample().status.close_allowed
                              and sims[modbus].sample().status.close_allowed, 20), \
                rig.log_text()[-3000:]
            assert sims[tripped].sample().status.relay_open  # the customer closes it, not us
            assert wait_until(lambda: {tripped, modbus} <=
                              set(_alarms(observer, rig, "prepaid.exhausted", "cleared")), 10)
            cleared = _alarms(observer, rig, "customer.trip", "cleared")
            assert cleared[tripped]["details"]["restore"] == "allow_close", cleared
            assert sims[tripped].customer_close().name == "EXECUTED"

            # The protected customer's trip delay ran out with the others' (before the recharge
            # above): still never a frame.
            stats = line.stats
            address = {f"m-{a[-4:]}": a for a in line.meters}
            assert stats[address[protected]].control_frames == 0
            assert sims[protected].sample().relay_trips.count == 0
            assert sims[saved].sample().relay_trips.count == 0
            # The saved customer got its pre-trip alarm frame and its release, never a trip.
            assert stats[address[saved]].control_frames == 2
            assert _alarms(observer, rig, "load.protected_trip_blocked") == {}
            assert rig.stop_daemon() == 0
            validator = Validator(parse_rules(CDDL.read_text(encoding="utf-8")))
            for _t, message in decoded(observer, rig.topic("alarms")):
                validator.check("alarm-message", message, message["key"])
                if str(message["kind"]).startswith("prepaid."):
                    validator.check(f"prepaid-{message['state']}-details", message["details"],
                                    message["key"])

        # Cadence: the balance block was read less often than the purchase counter.
        reads = [m for _t, m in decoded(observer, rig.topic(f"reads/{tripped}"))]
        counters = sum(1 for m in reads for r in m["reads"]
                       if r["q"] == "prepaid.purchase.money.count")
        balances = sum(1 for m in reads for r in m["reads"] if r["q"] == "prepaid.balance.money")
        assert 0 < balances < counters, (balances, counters)
