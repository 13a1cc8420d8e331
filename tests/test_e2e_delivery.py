"""Delivery guarantees end to end (DESIGN §5): broker outage, silently dead link, daemon crashes.

After each scenario the daemon is stopped cleanly and the consumer's view is compared with the
store: every committed outbox row reached the subscriber (by its stable ``id``), sequence numbers
have no gap, each meter's messages arrive in order, and backlog is flagged ``hist``.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Observer
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until


def _store_rows(rig: GatewayRig) -> list[tuple[int, str, int, int | None]]:
    con = sqlite3.connect(rig.store_path)
    try:
        return con.execute("SELECT seq, topic, created_ms, acked_ms FROM outbox ORDER BY seq").fetchall()
    finally:
        con.close()


def _all_acked(rig: GatewayRig) -> bool:
    try:
        con = sqlite3.connect(rig.store_path, timeout=1)
        try:
            n = con.execute("SELECT count(*) FROM outbox WHERE acked_ms IS NULL").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return int(n) == 0


def _check_delivery(rig: GatewayRig, observer: Observer) -> dict[str, Any]:
    """Every committed row delivered, no seq gap, per-meter order, stable ids; returns figures."""
    rows = _store_rows(rig)
    assert rows, "nothing was committed"
    seqs = [r[0] for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the store's sequence has a gap"
    durable = [m for t, m in decoded(observer, rig.topic("")) if not t.endswith(("/state", "/health"))]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for m in durable:
        by_id.setdefault(m["id"], []).append(m)
    received_seqs = {m["seq"] for m in durable}
    missing = [s for s in seqs if s not in received_seqs]
    assert not missing, f"{len(missing)} committed rows never reached the subscriber: {missing[:20]}"
    for copies in by_id.values():  # a duplicate is the same message: same id, same seq, same reads
        first = {k: v for k, v in copies[0].items() if k != "hist"}
        for other in copies[1:]:
            assert {k: v for k, v in other.items() if k != "hist"} == first
    last_seq: dict[str, int] = {}
    for m in durable:  # first arrival of each message, per meter, in increasing seq
        if "meter" not in m or (len(by_id[m["id"]]) > 1 and m is not by_id[m["id"]][0]):
            continue
        assert m["seq"] > last_seq.get(m["meter"], 0), f"meter {m['meter']} out of order"
        last_seq[m["meter"]] = m["seq"]
    return {"rows": len(rows), "duplicates": sum(len(c) - 1 for c in by_id.values()),
            "hist": sum(1 for m in durable if m.get("hist"))}


def _hist_flags(observer: Observer, rig: GatewayRig) -> dict[int, bool]:
    out: dict[int, bool] = {}
    for _t, m in decoded(observer, rig.topic("reads/")):
        out[m["seq"]] = out.get(m["seq"], False) or bool(m.get("hist"))
    return out


@pytest.mark.parametrize("outage_s", [
    10,  # the default run: reconnect backoff already retries several times within it
    pytest.param(32, marks=pytest.mark.slow),  # the soak: a backlog of over 30 s of polls
])
def test_broker_outage_loses_nothing(tmp_path: Path, outage_s: int) -> None:
    with gateway_rig(tmp_path, dlt645_buses=2, meters_per_bus=4, modbus_meters=2) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="outage-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 10, 30)
            down_ms = time.time_ns() // 1_000_000
            rig.broker.stop()
            time.sleep(outage_s)  # polling and committing go on
            up_ms = time.time_ns() // 1_000_000
            rig.broker.start()
            assert wait_until(lambda: _all_acked(rig), 60), rig.log_text()[-3000:]
            time.sleep(1.5)
            assert rig.stop_daemon() == 0
            time.sleep(0.5)
        figures = _check_delivery(rig, observer)
        flags = _hist_flags(observer, rig)
        offline = [seq for seq, topic, created, _ in _store_rows(rig)
                   if "/reads/" in topic and down_ms + 500 < created < up_ms - 500]
        assert len(offline) >= outage_s - 2, "polling must go on during the outage"
        assert all(flags[s] for s in offline), "backlog committed during the outage must carry hist"
        print(f"outage: {figures}, {len(offline)} reads messages committed while the broker was down")


@pytest.mark.slow  # 70 s: run with `pytest -m slow`; the default run has a 3x-keepalive freeze test
def test_silently_dead_link_60_s_then_broker_killed_loses_nothing(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=4, modbus_meters=0) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="freeze-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 8, 30)
            rig.broker.freeze()  # SIGSTOP: no FIN, no RST — a pulled cable
            time.sleep(62)
            rig.broker.kill()
            rig.broker.start()
            assert wait_until(lambda: _all_acked(rig), 60), rig.log_text()[-3000:]
            time.sleep(1.5)
            assert rig.stop_daemon() == 0
            time.sleep(0.5)
        figures = _check_delivery(rig, observer)
        assert figures["hist"] > 0
        print(f"frozen link: {figures}")


@pytest.mark.parametrize("kills", [
    2,  # the default run; tests/test_store.py kills a committing writer 8 times at random moments
    pytest.param(5, marks=pytest.mark.slow),
])
def test_kill_9_at_random_moments_loses_no_committed_read(tmp_path: Path, kills: int) -> None:
    rng = random.Random(20261122)
    with gateway_rig(tmp_path, dlt645_buses=2, meters_per_bus=3, modbus_meters=1,
                     poll_interval_s=1.0) as rig:
        with Observer(rig.broker, "mtr/v1/#", client_id="crash-observer") as observer:
            for _ in range(kills):
                rig.start_daemon()
                time.sleep(rng.uniform(2.0, 5.0))
                rig.kill_daemon()  # SIGKILL at a random moment of polling and publishing
            rig.start_daemon()
            time.sleep(3)
            assert wait_until(lambda: _all_acked(rig), 60), rig.log_text()[-3000:]
            time.sleep(1.5)
            assert rig.stop_daemon() == 0
            time.sleep(0.5)
        figures = _check_delivery(rig, observer)
        print(f"crashes: {figures}")
