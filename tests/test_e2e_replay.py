"""Replay through the real daemon and mosquitto (issue 15, the gateway's side).

A consumer's VIEWER key signs ``replay`` commands (tests/independent_cose.py, no gateway code in
the signature): reads the broker already acknowledged come again on their own topics, flagged
``hist`` and otherwise identical; a range the store no longer holds (pruned by retention) and a
range of another epoch are answered ``failed``, naming the oldest seq still held; one over
``replay_max_messages`` is ``rejected``. Every answer is checked against the gateway's result
key."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cbor2

from gateway.store import Store
from protocols.commands import build_envelope, parse_private_key
from protocols.payload import decode_message
from tests import independent_cose
from tests.broker import Observer, publish_once
from tests.gateway_rig import GatewayRig, decoded, gateway_rig, wait_until

REPO = Path(__file__).resolve().parent.parent


def _gwtool(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


class Consumer:
    """The consumer's side: its VIEWER key, the gateway's result key, what it received."""

    def __init__(self, rig: GatewayRig, tmp: Path, observer: Observer) -> None:
        self.rig = rig
        self.observer = observer
        self.key = independent_cose.load_key((tmp / "central.key").read_bytes())
        gateway_key = parse_private_key((tmp / "gw.key").read_bytes(), "gw.key")
        self.gateway_public = gateway_key.public_bytes()
        self.ctr = 0

    def replay(self, epoch: int, from_seq: int, to_seq: int) -> tuple[bytes, str]:
        """Send a replay, wait for its final result: (command id, status) — reason in
        :attr:`reason`."""
        self.ctr += 1
        envelope = build_envelope(aud=self.rig.gateway_id, action="replay",
                                  targets=[self.rig.gateway_id], ctr=self.ctr,
                                  iat=int(time.time()), ttl_s=60, role="VIEWER",
                                  params={"epoch": epoch, "from_seq": from_seq,
                                          "to_seq": to_seq})
        message = independent_cose.sign1(cbor2.loads(envelope.to_cbor()), self.key,
                                          b"central-1")
        publish_once(self.rig.broker, self.rig.topic("cmd"), message)
        results: list[dict[str, object]] = []

        def final() -> bool:
            results[:] = [r for r in self.results() if r.get("cmd") == envelope.id]
            return any(r["status"] in ("executed", "failed", "rejected") for r in results)

        assert wait_until(final, 30), self.rig.log_text()[-3000:]
        statuses = [r["status"] for r in results]
        last = results[-1]
        self.reason = str(last["reason"])
        assert statuses[-1] == "rejected" or statuses[0] == "accepted", statuses
        return envelope.id, str(last["status"])

    def results(self) -> list[dict[str, object]]:
        out = []
        for _t, payload, _r in self.observer.messages(self.rig.topic("cmd/result")):
            result = independent_cose.open_sign1(payload, self.gateway_public)
            if "cmd" in result:
                out.append(result)
        return out

    def durable(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        """Every durable message received on reads topics: (topic, bytes, decoded)."""
        out = []
        for topic, payload, _r in self.observer.messages(self.rig.topic("reads/")):
            out.append((topic, payload, decode_message(payload)))
        return out


def _acked(store_path: Path, from_seq: int, to_seq: int) -> bool:
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as conn:
        count = conn.execute("SELECT count(*) FROM outbox WHERE seq BETWEEN ? AND ? "
                             "AND acked_ms IS NOT NULL", (from_seq, to_seq)).fetchone()[0]
    return bool(count == to_seq - from_seq + 1)


def test_replay_resends_acknowledged_reads_with_hist_and_fails_past_retention(
        tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        _gwtool("keygen", "--out", str(tmp_path / "central"))
        _gwtool("keygen", "--out", str(tmp_path / "gw"))
        assert rig.config_path is not None
        rig.config_path.write_text(rig.config_path.read_text() + (
            f'\n[commands]\nclock_trusted = true\ngateway_key = "{tmp_path / "gw.key"}"\n'
            f'\n[[operators]]\nkid = "central-1"\npublic_key = "{tmp_path / "central.pub"}"\n'
            'roles = ["VIEWER"]\n'))
        with Observer(rig.broker, "mtr/v1/#", client_id="central") as observer:
            consumer = Consumer(rig, tmp_path, observer)
            rig.start_daemon()
            assert wait_until(lambda: len(decoded(observer, rig.topic("reads/"))) >= 8, 60)
            first = consumer.durable()
            assert not any(m.get("hist") for _t, _p, m in first)
            epoch = int(str(first[0][2]["id"]).split(":")[1], 16)
            by_seq = {m["seq"]: (topic, payload, m) for topic, payload, m in first}
            # Four consecutive reads messages the broker has acknowledged.
            seqs = sorted(by_seq)
            start = next(s for s in seqs if all(s + i in by_seq for i in range(4)))
            wanted = range(start, start + 4)
            assert wait_until(lambda: _acked(rig.store_path, wanted[0], wanted[-1]), 20)

            _cmd, status = consumer.replay(epoch, wanted[0], wanted[-1])
            assert status == "executed", consumer.reason
            assert "4 messages re-sent with hist" in consumer.reason, consumer.reason

            def again() -> list[tuple[str, bytes, dict[str, Any]]]:
                return [(t, p, m) for t, p, m in consumer.durable()
                        if m.get("hist") and m["seq"] in wanted]

            assert wait_until(lambda: len(again()) >= 4, 30), rig.log_text()[-3000:]
            resent = again()
            assert sorted(m["seq"] for _t, _p, m in resent) == list(wanted)  # each once
            for topic, payload, message in resent:
                original_topic, original_bytes, original = by_seq[message["seq"]]
                assert topic == original_topic
                assert message["hist"] is True
                assert {k: v for k, v in message.items() if k != "hist"} == original
                # Byte for byte the stored message with the one entry appended.
                assert payload[1:].startswith(original_bytes[1:])
            # Acknowledged again, nothing left over.
            assert wait_until(lambda: _acked(rig.store_path, wanted[0], wanted[-1]), 20)

            # Over the size limit: rejected before anything is queued, with the reason.
            _cmd, status = consumer.replay(epoch, 1, 10_001)
            assert status == "rejected" and consumer.reason.startswith("bad_params: "), \
                consumer.reason
            assert "replay_max_messages = 10000" in consumer.reason

            # Another epoch (a store since replaced): failed, naming what is held.
            _cmd, status = consumer.replay(epoch ^ 1, wanted[0], wanted[-1])
            assert status == "failed" and "not this store's epoch" in consumer.reason
            assert "oldest held seq 1" in consumer.reason, consumer.reason
            assert rig.stop_daemon() == 0

            # Retention: every acknowledged row older than now goes (as [store] retention_days
            # does hourly, here with 0 days, through the store's own prune).
            with Store.open(rig.store_path) as store:
                assert store.prune(time.time_ns() // 1_000_000 + 1, retention_days=0) > 0
                last_before = store.last_seq
            rig.start_daemon()
            assert wait_until(lambda: len(consumer.durable()) >= len(first) + 8, 60)
            _cmd, status = consumer.replay(epoch, wanted[0], wanted[-1])
            assert status == "failed", consumer.reason
            with sqlite3.connect(f"file:{rig.store_path}?mode=ro", uri=True) as conn:
                oldest = conn.execute("SELECT min(seq) FROM outbox").fetchone()[0]
            assert oldest > last_before - 1
            assert f"oldest held seq {oldest}" in consumer.reason, consumer.reason
            assert "not held whole" in consumer.reason
            assert rig.stop_daemon() == 0
