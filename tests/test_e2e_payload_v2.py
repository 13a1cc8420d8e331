"""Payload v2 against the real daemon: a profile change on SIGHUP is safe for consumers.

The daemon publishes schema-2 reads naming alias bindings that its retained birth declares. When
a reload changes a meter's profile, the store allocates a new binding (never reusing an index)
and the daemon publishes a new birth before any message names it. The test plays a consumer that
knows only what arrived before each message: every reads message must resolve through the
births received before it, and give the values the simulated meters hold.
"""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path

from protocols.payload import AliasBook, decode_message, parse_reads
from tests.broker import Observer
from tests.gateway_rig import gateway_rig, simulator_registers, wait_until


def test_a_profile_change_on_sighup_gets_a_new_binding_declared_before_use(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        meters = sorted(rig.meters)
        with Observer(rig.broker, "mtr/v1/#", client_id="v2-reload") as observer:
            rig.start_daemon()

            def reads_with(quantity: str) -> int:
                book = AliasBook()
                count = 0
                for topic, payload, _r in observer.messages(rig.topic("")):
                    if topic.endswith("/state") and payload:
                        book.learn(decode_message(payload))
                    elif "/reads/" in topic and any(
                            r.q == quantity for r in parse_reads(payload, book).reads):
                        count += 1
                return count

            assert wait_until(lambda: reads_with("voltage.a") >= 4, 40), rig.log_text()[-3000:]
            profile = tmp_path / "profiles" / "test-dlt645.toml"
            profile.write_text(profile.read_text() + '\n[[reads]]\ndi = "0202FF00"\n')
            assert rig.process is not None
            rig.process.send_signal(signal.SIGHUP)
            assert wait_until(lambda: reads_with("current.a") >= 4, 40), rig.log_text()[-3000:]
            assert rig.stop_daemon() == 0
            messages = [(t, p) for t, p, _r in observer.messages(rig.topic("")) if p]

    book = AliasBook()
    births: list[dict[str, object]] = []
    used: list[int] = []
    for topic, payload in messages:
        if topic.endswith("/state"):
            message = decode_message(payload)
            if message.get("online"):
                births.append(message)
                book.learn(message)
        elif "/reads/" in topic:
            # Resolvable with what had arrived before it: nothing else may be needed.
            reads = parse_reads(payload, book)
            assert topic.endswith(f"/reads/{reads.meter}")
            used.append(int(decode_message(payload)["binding"]))  # type: ignore[call-overload]
            registers = simulator_registers(rig.meters[reads.meter])
            for record in reads.reads:
                if record.q in registers and record.quality == "A":
                    assert record.val == registers[record.q], record
                    assert isinstance(record.val, Decimal)
    assert len(births) >= 2, "the reload published no new birth"
    declared = births[-1]["aliases"]["bindings"]  # type: ignore[index]
    old = {m: i for i, m, _table in births[0]["aliases"]["bindings"]}  # type: ignore[index]
    new = {m: i for i, m, _table in declared if i not in old.values()}
    assert set(old) == set(new) == set(meters)
    # New indexes, never a reused one; the old ones still declared (backlog may name them).
    assert min(new.values()) > max(old.values())
    assert len(declared) == len(old) + len(new)
    assert set(used) == set(old.values()) | set(new.values())
