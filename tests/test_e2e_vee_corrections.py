"""Corrections end to end (issue 13): the real daemon, real mosquitto, DL/T 645 meters on ptys.

When VEE's verdict on a read that already went out changes, the daemon publishes a correction:
a new durable reads message for the same (meter, q, t), ``rev`` one higher, naming in ``sup``
the message id and record index it supersedes (docs/payloads.md, "The reads contract"). Checked
here on what reached the broker — the consumer's view:

* a silent meter's estimates re-scaled when it answers again (what the engine on main does);
* a meter that serves one spiked register read (the simulator's ``spike_next_read`` knob): the
  spike is corrected to ``S``/``N`` and the reads after it stay ``A``. That needs the VEE engine
  to judge a read with the reads on both sides (issue 13's algorithm change); slow-marked.

Both check the guard on the published stream: no current ``S``/``E`` value lies above a later
actual read. The grid and the history are those of tests/test_e2e_vee.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.pipeline.vee_stage import GRID_QUANTITY
from tests.broker import Observer
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, reads_by_meter, wait_until
from tests.test_e2e_vee import (
    SIM_SECONDS_PER_SECOND,
    VEE,
    _records,
    _seed_history,
    check_estimated_then_superseded,
)


@contextmanager
def running_meters(rig: GatewayRig) -> Iterator[None]:
    """The meters' load model runs 300x, so registers move every 2 s interval."""
    running = threading.Event()
    running.set()

    def advance() -> None:
        while running.is_set():
            rig.clock.advance(0.05 * SIM_SECONDS_PER_SECOND)
            time.sleep(0.05)

    ticker = threading.Thread(target=advance, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        running.clear()
        ticker.join(2)


def messages_by_id(observer: Observer, rig: GatewayRig) -> dict[str, dict[str, Any]]:
    """Every reads message that reached the broker, by its id (a re-send has the same id)."""
    return {m["id"]: m for _, m in decoded(observer, rig.topic("reads/"))}


def grid_versions(messages: dict[str, dict[str, Any]], meter: str
                  ) -> dict[int, list[tuple[int, str, int, dict[str, Any]]]]:
    """t -> every version of (meter, import total, t): (rev, message id, index, record)."""
    out: dict[int, list[tuple[int, str, int, dict[str, Any]]]] = {}
    for mid, message in messages.items():
        if message["meter"] != meter:
            continue
        for index, record in enumerate(message["reads"]):
            if record["q"] == GRID_QUANTITY:
                out.setdefault(record["t"], []).append((record.get("rev", 0), mid, index, record))
    for versions in out.values():
        versions.sort(key=lambda v: v[0])
    return out


def check_corrections_name_what_they_supersede(messages: dict[str, dict[str, Any]]) -> int:
    """Every record with rev n >= 1 names in ``sup`` a record that reached the broker, of the
    same (meter, q, t), with rev n - 1."""
    checked = 0
    for mid, message in messages.items():
        for record in message["reads"]:
            rev = record.get("rev", 0)
            if not rev:
                continue
            assert "sup" in record, (mid, record)
            named_id, index = record["sup"]
            named_message = messages[named_id]
            named = named_message["reads"][index]
            assert named_message["meter"] == message["meter"] and named_id != mid
            assert (named["q"], named["t"], named.get("rev", 0)) == (
                record["q"], record["t"], rev - 1), (record, named)
            checked += 1
    return checked


def check_no_current_substitute_above_a_later_actual(
        versions: dict[int, list[tuple[int, str, int, dict[str, Any]]]]) -> None:
    """The register is monotone: the current ``S``/``E`` value of an interval is never above
    the current actual read of a later interval."""
    current = {t: v[-1][3] for t, v in versions.items()}
    actual = sorted((t, r["val"]) for t, r in current.items() if r["quality"] == "A")
    for t, record in current.items():
        if record["quality"] in ("S", "E"):
            later = [v for at, v in actual if at > t]
            assert not later or record["val"] <= min(later), (record, min(later))


def test_re_scaled_estimates_are_corrections_naming_the_estimates_they_supersede(
        tmp_path: Path) -> None:
    """A meter silent for a few intervals, then answering again: its estimates are re-published
    (re-scaled to the register delta, or replaced by actual reads) and every re-publication
    names the exact earlier record (message id, index) it supersedes."""
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=1.0, timeout_ms=200) as rig:
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + VEE)
        _seed_history(rig.config_path, rig.store_path, interval_kwh=0.15)
        line = rig.lines["rs485-1"]
        silent = sorted(line.meters)[1]
        silent_id = f"m-{silent[-4:]}"
        with running_meters(rig), Observer(rig.broker, "mtr/v1/#", client_id="e2e-corr") as obs:
            rig.start_daemon()
            assert wait_until(lambda: set(reads_by_meter(obs, rig)) >= set(rig.meters), 20), \
                rig.log_text()[-3000:]
            time.sleep(3)
            line.set_faults(silent, no_reply=True)
            silenced_ms = time.time_ns() // 1_000_000

            def estimated() -> set[int]:
                return {t for t, v in grid_versions(messages_by_id(obs, rig), silent_id).items()
                        if t > silenced_ms and v[0][3]["quality"] == "E"}

            assert wait_until(lambda: len(estimated()) >= 4, 25), rig.log_text()[-3000:]
            line.set_faults(silent)
            answered_ms = time.time_ns() // 1_000_000
            gap = estimated()
            first = {r["t"]: r for _, r in _records(obs, rig, silent_id)
                     if r["quality"] == "E" and r["t"] > silenced_ms and r.get("rev", 0) == 0}

            def corrected() -> bool:
                versions = grid_versions(messages_by_id(obs, rig), silent_id)
                return all(len(versions[t]) >= 2 for t in gap)

            assert wait_until(corrected, 25), rig.log_text()[-3000:]
            time.sleep(1)
            assert rig.stop_daemon() == 0
        # What tests/test_e2e_vee.py checks of the same scenario (estimates, their supersession,
        # the saved state; the log), then what is particular to corrections.
        check_estimated_then_superseded(obs, rig, silent_id, first, silenced_ms, answered_ms)
        messages = messages_by_id(obs, rig)
        versions = grid_versions(messages, silent_id)
        assert check_corrections_name_what_they_supersede(messages) >= len(gap)
        for t in gap:  # each estimate superseded; the correction names it
            rev, _mid, _index, newest = versions[t][-1]
            assert rev >= 1 and newest["sup"][0] in messages
            assert newest["quality"] in ("A", "E"), newest
        check_no_current_substitute_above_a_later_actual(versions)


SPIKE_KWH = Decimal(25)


@pytest.mark.slow
def test_a_spiked_read_is_corrected_and_the_reads_after_it_stay_actual(tmp_path: Path) -> None:
    """The meter serves one register read 25 kWh too high. The stream then holds its
    correction — ``S`` (substitute in ``val``, the spike in ``raw``) or ``N``, naming the
    record that carried the spike — and the reads after it as ``A``; no current ``S``/``E``
    value lies above a later actual read."""
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=2.0, timeout_ms=200) as rig:  # one read per 2 s interval
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + VEE)
        _seed_history(rig.config_path, rig.store_path, interval_kwh=0.15)
        line = rig.lines["rs485-1"]
        spiked = sorted(line.meters)[0]
        spiked_id = f"m-{spiked[-4:]}"
        with running_meters(rig), Observer(rig.broker, "mtr/v1/#", client_id="e2e-spike") as obs:
            rig.start_daemon()
            assert wait_until(lambda: set(reads_by_meter(obs, rig)) >= set(rig.meters), 20), \
                rig.log_text()[-3000:]
            time.sleep(6)  # a few intervals graded
            true_before = line.meters[spiked].sim.snapshot().energy_import.total
            line.meters[spiked].spike_next_read(SPIKE_KWH)

            def spike_t() -> int | None:
                for t, v in grid_versions(messages_by_id(obs, rig), spiked_id).items():
                    if v[0][3]["val"] is not None and v[0][3]["val"] >= true_before + 20:
                        return t
                return None

            assert wait_until(lambda: spike_t() is not None, 20), rig.log_text()[-3000:]
            at = spike_t()
            assert at is not None

            def settled() -> bool:  # the spike corrected, and four graded reads after it
                versions = grid_versions(messages_by_id(obs, rig), spiked_id)
                after = [t for t in versions if t > at]
                return versions[at][-1][3]["quality"] != "A" and len(after) >= 5

            wait_until(settled, 30)
            time.sleep(2)
            assert rig.stop_daemon() == 0
        log = rig.log_text()
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
        messages = messages_by_id(obs, rig)
        versions = grid_versions(messages, spiked_id)
        first = versions[at][0][3]
        rev, _mid, _index, newest = versions[at][-1]
        # the spike went out as read, then its correction: not actual, naming what it replaces
        assert first["quality"] == "A" and first["val"] >= true_before + 20
        assert rev >= 1 and newest["quality"] in ("S", "N"), versions[at]
        assert newest["raw"] == first["val"]
        assert newest["sup"] == [versions[at][-2][1], versions[at][-2][2]]
        # the reads after it are actual (their newest version), bar the last, not yet graded
        after = sorted(t for t in versions if t > at)[:-1]
        assert len(after) >= 3
        assert all(versions[t][-1][3]["quality"] == "A" for t in after), \
            [versions[t][-1][3] for t in after]
        if newest["quality"] == "S":  # the substitute lies between the actual reads around it
            assert newest["val"] <= versions[after[0]][-1][3]["val"]
        assert check_corrections_name_what_they_supersede(messages) >= 1
        check_no_current_substitute_above_a_later_actual(versions)
