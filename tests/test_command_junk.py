"""Hostile input on the command topic (issue 12 item 6): messages no operator signed are journaled
as one digest record each, within a per-minute budget, and only counted beyond it; authenticated
commands keep full journaling; journals written the old way (every message whole, two records)
still verify.

The flood goes through the real :class:`CommandHandler` (verifier, journal file, result signer,
store outbox), as the daemon drives it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_tools.cli import main as gwtool_main
from firmware_tools.command_tools import verify_journal_file
from gateway.control.commands import CommandVerifier, Journal, JournalEntry, RejectCode
from gateway.control.commands.handler import CommandHandler
from gateway.control.commands.junk import JournalBudget
from gateway.pipeline.committer import Committer, PipelineServices
from gateway.store import Store
from gateway.uplink.mqtt_link import InboundCommand
from protocols.commands import CommandResult, read_result_topic
from protocols.topics import GatewayTopics
from tests.test_command_verifier import GW, NOW, OPERATOR_A, STRANGER, _config, command

MIB = 1024 * 1024


# ------------------------------------------------------------------------ the budget


def test_budget_allows_a_burst_then_refills_evenly() -> None:
    budget = JournalBudget(60)
    assert sum(budget.take(100.0) for _ in range(100)) == 60
    assert not budget.take(100.5)
    assert budget.take(101.0) and not budget.take(101.0)  # one per second at 60/min
    assert sum(budget.take(200.0) for _ in range(100)) == 60  # refills to the burst, no more


def test_budget_survives_a_clock_stepping_back_and_zero_journals_nothing() -> None:
    budget = JournalBudget(2)
    assert budget.take(1000.0) and budget.take(1000.0) and not budget.take(1000.0)
    assert not budget.take(10.0)  # stepped back: nothing refilled ...
    assert budget.take(40.0)  # ... and the bucket is not stuck until 1000 either
    none = JournalBudget(0)
    assert not any(none.take(float(t)) for t in range(0, 600, 10))
    with pytest.raises(ValueError):
        JournalBudget(-1)


def test_over_the_budget_rejections_are_counted_and_the_next_record_says_how_many(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    with Journal.open(tmp_path / "audit.db") as journal:
        verifier = CommandVerifier.from_config(config, journal)
        assert verifier.policy.unauthenticated_journal_per_minute == 60  # the default
        forged = [command(keys=[(STRANGER, "op-a")], ctr=i)[0] for i in range(1, 71)]
        decisions = [verifier.verify(m, NOW) for m in forged]
        assert all(d.code is RejectCode.BAD_SIGNATURE for d in decisions)
        # Every one still has its claimed id (for the signed result), journaled or not.
        assert all(d.command_id is not None for d in decisions)
        assert [d.journal_seq for d in decisions] == list(range(1, 61)) + [None] * 10
        assert (verifier.junk.rejected, verifier.junk.unjournaled) == (70, 10)
        later = verifier.verify(b"\xd2\x84junk", NOW + 2)
        assert later.code is RejectCode.MALFORMED and later.journal_seq == 61
        record = journal.records()[-1]
        assert record.details["unjournaled_before"] == 10 and record.cmd is None
        # An authenticated command is never held back by the junk budget.
        genuine, cmd = command(ctr=1, action="alarm", targets=["m-001"])
        assert verifier.verify(genuine, NOW + 2).accepted
        assert [r.kind for r in journal.commands(cmd)] == ["received", "accepted"]
        assert journal.commands(cmd)[0].details["message"] == genuine
        assert verify_journal_file(tmp_path / "audit.db").ok


def test_configured_budget_and_a_long_reason_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    _config(tmp_path)
    path.write_text(path.read_text().replace(
        "two_person_threshold = 10", "two_person_threshold = 10\n"
        "unauthenticated_journal_per_minute = 1"))
    from gateway.config.loader import load_config

    with Journal.open(tmp_path / "audit.db") as journal:
        verifier = CommandVerifier.from_config(load_config(path), journal)
        long_kid = "k" * 5000  # a sender-chosen key id, quoted by the unknown_key reason
        first = verifier.verify(command(keys=[(STRANGER, long_kid)])[0], NOW)
        assert first.code is RejectCode.UNKNOWN_KEY and first.journal_seq == 1
        assert len(first.reason) < 250 and first.reason.endswith("…")
        assert verifier.verify(b"\x00", NOW).journal_seq is None
        assert len(journal.records()[0].body) < 400


# ------------------------------------------------------------------------ old journals


def test_a_journal_written_the_old_way_still_verifies_with_new_records_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the budget every message was journaled whole: ``received`` (size, sha256, the
    bytes) and ``rejected`` (with the payload's claims) for junk too. Such a journal, continued
    by the new code, is one chain that ``gwtool audit verify`` accepts."""
    path = tmp_path / "audit.db"
    forged, cmd = command(keys=[(STRANGER, "op-a")], ctr=3)
    with Journal.open(path) as journal:
        for i, message in enumerate((forged, b"\xd2\x84garbage", bytes(100))):
            received = {"size": len(message), "sha256": hashlib.sha256(message).digest(),
                        "message": message}
            rejected: dict[str, object] = {"code": "bad_signature" if i == 0 else "malformed",
                                           "reason": "old", "authentic": False,
                                           "counter_spent": False}
            if i == 0:
                rejected["claimed"] = {"aud": GW, "ctr": 3, "action": "trip"}
            claimed = cmd if i == 0 else None
            journal.append([JournalEntry("received", cmd=claimed, details=received),
                            JournalEntry("rejected", cmd=claimed, details=rejected)],
                           now_ms=int(NOW * 1000) + i)
        old_head = journal.head()
        assert old_head.seq == 6
    with Journal.open(path) as journal:
        verifier = CommandVerifier.from_config(_config(tmp_path), journal)
        assert verifier.verify(forged, NOW + 10).journal_seq == 7
        assert verifier.verify(command(ctr=4, action="alarm", targets=["m-001"])[0],
                               NOW + 11).accepted
        assert [r.kind for r in journal.records()][6:] == ["rejected", "received", "accepted"]
    report = verify_journal_file(path, expected_head=(old_head.seq, old_head.hash))
    assert report.ok and report.records == 9
    assert gwtool_main(["audit", "verify", str(path), "--head", old_head.text()]) == 0
    assert "intact, 9 records" in capsys.readouterr().out


# ------------------------------------------------------------------------ the flood


def _junk(count: int, seed: int = 12) -> Iterator[tuple[str, bytes]]:
    """(kind, message): random bytes, 1 MiB blobs, truncated COSE and a stranger's signatures,
    interleaved."""
    rng = random.Random(seed)
    template = command(ctr=1)[0]
    big = 0
    for i in range(count):
        if i % 100 == 50 and big < 100:
            big += 1
            yield "1mib", rng.randbytes(MIB)
        elif i % 3 == 0:
            yield "random", rng.randbytes(rng.randint(1, 4000))
        elif i % 3 == 1:
            yield "truncated", template[: rng.randint(1, len(template) - 1)]
        else:
            kid = "op-a" if i % 2 else "op-9"  # a known kid with the wrong key, or unknown
            yield "wrong_key", command(keys=[(STRANGER, kid)], ctr=i, iat=int(time.time()))[0]


def _journal_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("audit.db*"))


def test_ten_thousand_junk_messages_grow_the_journal_by_kilobytes_and_a_real_command_works(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    data_dir = Path(config.gateway.data_dir)
    with Store.open(tmp_path / "store.db") as store:
        committer = Committer(PipelineServices.open(store, GatewayTopics("mtr/v1", GW)),
                              asyncio.Queue())
        handler = CommandHandler(config, committer, [])
        try:
            before = _journal_bytes(data_dir)
            kinds: dict[str, int] = {}
            messages = 0

            async def flood() -> None:
                nonlocal messages
                for kind, message in _junk(10_000):
                    kinds[kind] = kinds.get(kind, 0) + 1
                    messages += 1
                    await handler.handle(InboundCommand("mtr/v1/gw-0001/cmd", message,
                                                        int(time.time() * 1000), False))

            started = time.monotonic()
            asyncio.run(flood())
            elapsed = time.monotonic() - started
            assert messages == 10_000 and kinds["1mib"] == 100, kinds
            assert min(kinds.values()) >= 100
            grown = _journal_bytes(data_dir) - before
            print(f"journal grew {grown} bytes for {kinds} in {elapsed:.1f} s")
            assert grown <= 1_000_000, grown  # was 16.2 MB
            health = handler.health()
            assert health["unauthenticated_rejected"] == 10_000
            records = handler.journal.records()
            assert all(r.kind == "rejected" and r.details["authentic"] is False for r in records)
            assert len(records) + health["unauthenticated_unjournaled"] == 10_000
            assert 60 <= len(records) <= 60 + elapsed + 1  # the burst, then one a second
            # Junk whose (claimed) id can be read was answered, signed, as before.
            public = handler.signer.public_key
            results = [read_result_topic(m.payload, public) for m in store.pending(20_000)]
            assert len(results) == kinds["wrong_key"]
            assert all(isinstance(r, CommandResult) and r.status == "rejected" for r in results)

            # Then an operator's command: journaled in full, answered, acted on.
            message, cmd = command(keys=[(OPERATOR_A, "op-a")], ctr=1, action="alarm",
                                   targets=["m-001"], iat=int(time.time()))
            asyncio.run(handler.handle(InboundCommand("mtr/v1/gw-0001/cmd", message,
                                                      int(time.time() * 1000), False)))
            trail = handler.journal.commands(cmd)
            assert [r.kind for r in trail] == ["received", "accepted", "failed"]
            assert trail[0].details["message"] == message
            answers = [read_result_topic(m.payload, public) for m in store.pending(20_000)]
            mine = [(a.status, a.reason) for a in answers
                    if isinstance(a, CommandResult) and a.cmd == cmd]
            # No bus in this rig: the meter cannot be reached, and the result says so.
            assert [s for s, _ in mine] == ["accepted", "failed"], mine
            assert handler.health()["unauthenticated_rejected"] == 10_000
        finally:
            handler.close()
    assert verify_journal_file(data_dir / "audit.db").ok


# ------------------------------------------------------------------------ through the daemon


@pytest.mark.slow
def test_junk_through_the_daemon_and_mosquitto_is_counted_in_health(tmp_path: Path) -> None:
    """2,000 junk messages (20 of 1 MiB) published on the real broker to the real daemon: the
    health message counts every one, the journal stays small, and a signed trip afterwards is
    executed. Published in paced batches: the link's command queue (64) drops what overflows it,
    which is the link's business, not the journal's."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.broker import Observer
    from tests.gateway_rig import decoded, gateway_rig, wait_until
    from tests.test_e2e_commands import _send, _setup

    count = 2_000
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0) as rig:
        line = rig.lines["rs485-1"]
        target = sorted(line.meters)[0]
        key_path = _setup(rig, tmp_path, protected="none")
        data_dir = rig.workdir / "var"
        with Observer(rig.broker, rig.topic("health"), client_id="junk-health") as observer:
            rig.start_daemon()

            def commands_health() -> dict[str, int] | None:
                found = [m["stats"].get("commands") for _t, m in decoded(observer,
                                                                         rig.topic("health"))]
                return found[-1] if found and found[-1] else None

            assert wait_until(lambda: commands_health() is not None, 30), rig.log_text()[-2000:]
            before = _journal_bytes(data_dir)
            client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            client.connect(rig.broker.host, rig.broker.port, keepalive=30)
            client.loop_start()
            try:
                junk = [m for _kind, m in _junk(count)]  # 20 of them 1 MiB
                assert sum(len(m) == MIB for m in junk) == 20
                for start in range(0, count, 25):
                    infos = [client.publish(rig.topic("cmd"), m, qos=1)
                             for m in junk[start:start + 25]]
                    for info in infos:
                        info.wait_for_publish(10.0)
                    time.sleep(0.2)
            finally:
                client.disconnect()
                client.loop_stop()
            assert "command queue full" not in rig.log_text()
            assert wait_until(lambda: (commands_health() or {}).get(
                "unauthenticated_rejected") == count, 30), (commands_health(),
                                                            rig.log_text()[-2000:])
            health = commands_health()
            assert health is not None and health["unauthenticated_unjournaled"] >= count - 200
            assert _journal_bytes(data_dir) - before <= 1_000_000
            ok = _send(rig, key_path, tmp_path, "t", "--action", "trip", "--targets",
                       f"m-{target[-4:]}", "--ctr", "1")
            assert ok["code"] == 0 and "executed" in str(ok["out"]), ok
            assert line.meters[target].sim.snapshot().status.relay_open
            assert rig.stop_daemon() == 0
        assert verify_journal_file(data_dir / "audit.db").ok
