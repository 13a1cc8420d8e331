"""The central consumer end to end: real daemon and simulated meters, real mosquitto, the
``edge-central`` workers as subprocesses, SQLite and a real PostgreSQL.

The oracle is the simulated meters' own record of what they served (:mod:`tests.central.served`),
independent of the gateway: ``current_reads`` must hold every value a meter answered, once, with
the same decimal, and nothing a meter never said. The gateway's outbox (kept after
acknowledgement for the retention period) is a second oracle for what the gateway committed:
its seqs, the latest version of each read record, its alarm events.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from central.decoding import value_text
from central.storage import open_database
from gateway.store.aliases import load_bindings
from protocols.commands import raw_public_key
from protocols.ed25519 import SigningKey
from protocols.payload import AliasBook, decode_message, parse_reads
from tests.central.served import Served, compare, served_reads
from tests.central.support import fresh_pg
from tests.gateway_rig import REPO, GatewayRig, gateway_rig, wait_until

pytestmark = pytest.mark.timeout(600)


def _committed_reads(rig: GatewayRig) -> tuple[dict[tuple[str, str, int], tuple[str | None, str, str]], list[int]]:
    """(meter, quantity, t) → (value text, quality, message id) of the highest rev, from the
    gateway's outbox; and every durable seq the gateway committed."""
    con = sqlite3.connect(rig.store_path)
    try:
        rows = con.execute("SELECT seq, topic, payload FROM outbox ORDER BY seq").fetchall()
        bindings = list(load_bindings(con).values())  # what the store's births declare
    finally:
        con.close()
    book = AliasBook()
    latest: dict[tuple[str, str, int], tuple[int, tuple[str | None, str, str]]] = {}
    for _seq, topic, payload in rows:
        if "/reads/" not in topic:
            continue
        envelope = decode_message(bytes(payload))
        if envelope["v"] == 2:
            book.add(str(envelope["gw"]), int(envelope["epoch"]), bindings)  # type: ignore[call-overload]
        message = parse_reads(bytes(payload), book)
        for r in message.reads:
            key = (message.meter, r.q, r.t)
            if key not in latest or r.rev > latest[key][0]:
                latest[key] = (r.rev, (value_text(r.val), r.quality, message.id))
    return {k: v for k, (_rev, v) in latest.items()}, [int(r[0]) for r in rows]


def _outbox_payloads(rig: GatewayRig) -> list[tuple[str, bytes]]:
    con = sqlite3.connect(rig.store_path)
    try:
        return [(str(t), bytes(p)) for t, p in
                con.execute("SELECT topic, payload FROM outbox ORDER BY seq").fetchall()]
    finally:
        con.close()


def _alarm_ids(rig: GatewayRig) -> set[str]:
    """Message ids of the alarm events the gateway committed."""
    con = sqlite3.connect(rig.store_path)
    try:
        rows = con.execute("SELECT payload FROM outbox WHERE topic LIKE '%/alarms'").fetchall()
    finally:
        con.close()
    return {str(decode_message(bytes(p))["id"]) for (p,) in rows}


def _stored_reads(url: str) -> dict[tuple[str, str, int], tuple[str | None, str, str]]:
    db = open_database(url)
    try:
        rows = db.execute("SELECT meter, quantity, t_ms, value, quality, message_id FROM "
                          "current_reads")
    finally:
        db.close()
    return {(m, q, int(t)): (None if v is None else format(Decimal(str(v)), "f"), qual, mid)
            for m, q, t, v, qual, mid in rows}


def _stored_values(url: str) -> dict[tuple[str, str, int], str | None]:
    return {k: v for k, (v, _q, _m) in _stored_reads(url).items()}


def _settled(url: str, rig: GatewayRig, margin: int = 0) -> bool:
    """The consumer holds one contiguous seq range from the gateway's first seq to within
    ``margin`` of its last committed one, and no gap is open."""
    con = sqlite3.connect(f"file:{rig.store_path}?mode=ro", uri=True, timeout=5)
    try:
        first, last = con.execute("SELECT min(seq), max(seq) FROM outbox").fetchone()
    finally:
        con.close()
    db = open_database(url)
    try:
        ranges = [(int(lo), int(hi)) for lo, hi in db.execute("SELECT lo, hi FROM seq_ranges")]
        open_gaps = db.scalar("SELECT count(*) FROM gaps WHERE filled_ms IS NULL")
    finally:
        db.close()
    return (len(ranges) == 1 and ranges[0][0] == first and ranges[0][1] >= last - margin
            and open_gaps == 0)


def _outbox_last(rig: GatewayRig) -> int:
    """The newest seq the gateway committed (0 before any)."""
    con = sqlite3.connect(f"file:{rig.store_path}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0])
    finally:
        con.close()


def _all_acked(rig: GatewayRig) -> bool:
    try:
        con = sqlite3.connect(rig.store_path, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM outbox WHERE acked_ms IS NULL").fetchone()[0] == 0
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _central_config(rig: GatewayRig, url: str, *, session_expiry_s: int = 3600,
                    replay_key: Path | None = None, result_key: Path | None = None) -> Path:
    text = (f'[mqtt]\nhost = "127.0.0.1"\nport = {rig.broker.port}\ntopic_prefix = "{rig.prefix}"\n'
            f'share_group = "billing"\nkeepalive_s = 5\nsession_expiry_s = {session_expiry_s}\n'
            f'[database]\nurl = "{url}"\n[gaps]\ngrace_s = 3\nscan_interval_s = 0.5\n'
            f'[ingest]\nbatch_max = 200\nbatch_wait_ms = 50\n')
    if replay_key is not None:
        text += (f'[replay]\nkid = "central-1"\nprivate_key = "{replay_key}"\n'
                 'min_interval_s = 1\nretry_s = 10\n')
    if result_key is not None:
        text += f'[[gateways]]\nid = "{rig.gateway_id}"\nresult_key = "{result_key}"\n'
    path = rig.workdir / "central.toml"
    path.write_text(text)
    return path


def _start_worker(config: Path, name: str) -> subprocess.Popen[bytes]:
    log = open(config.parent / f"worker-{name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "central.cli", "run", "--config",
                                 str(config), "--worker", name], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def _subscribed(config: Path, name: str, times: int = 1, timeout: float = 30) -> None:
    """Wait for the worker's ``times``-th connection (its log accumulates across restarts)."""
    log = config.parent / f"worker-{name}.log"
    assert wait_until(lambda: log.exists() and log.read_text().count(" connected (") >= times,
                      timeout), log.read_text() if log.exists() else "no worker log"


def _trust_replay_key(rig: GatewayRig, tmp_path: Path, replay_key: SigningKey,
                      gateway_key: SigningKey) -> None:
    """The gateway's config: the consumer's key as a VIEWER operator, a known result key."""
    assert rig.config_path is not None
    (tmp_path / "central-1.pub").write_text(raw_public_key(replay_key).hex())
    (tmp_path / "gw.pub").write_text(raw_public_key(gateway_key).hex())
    rig.config_path.write_text(
        rig.config_path.read_text()
        + f'\n[commands]\nclock_trusted = true\ngateway_key = "{_pem(gateway_key, tmp_path / "gw.key")}"\n'
        + f'\n[[operators]]\nkid = "central-1"\npublic_key = "{tmp_path / "central-1.pub"}"\n'
        + 'roles = ["VIEWER"]\n')


def _pem(key: SigningKey, path: Path) -> Path:
    path.write_bytes(key.to_pkcs8_pem())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_three_workers_one_killed_store_every_read_exactly_once(
        engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'central.sqlite'}" if engine == "sqlite"
           else fresh_pg(request.getfixturevalue("pg_server")))
    with gateway_rig(tmp_path, dlt645_buses=2, meters_per_bus=3, modbus_meters=2,
                     poll_interval_s=1.0) as rig:
        config = _central_config(rig, url)
        workers = {n: _start_worker(config, n) for n in ("w1", "w2", "w3")}
        for n in workers:
            _subscribed(config, n)
        rig.start_daemon()
        try:
            time.sleep(10)
            workers["w2"].kill()  # mid-run, mid-batch perhaps: nothing of it acknowledged
            workers["w2"].wait(10)
            time.sleep(8)
            workers["w2"] = _start_worker(config, "w2")  # systemd restarts it: same session
            time.sleep(6)
            stop_ms = time.time_ns() // 1_000_000
            assert rig.stop_daemon() == 0
            stopped_ms = time.time_ns() // 1_000_000
            assert _all_acked(rig)
            expected, seqs = _committed_reads(rig)
            assert len(expected) > 100
            assert wait_until(lambda: _stored_reads(url) == expected, 60), (
                f"{len(set(expected) - set(_stored_reads(url)))} reads missing")
            result = compare(served_reads(rig), _stored_values(url),
                             lambda s: stop_ms - 5000 <= s.at_ms <= stopped_ms)
            assert result.exact, result.describe()
            print(f"{engine}: {result.describe()}")
        finally:
            for proc in workers.values():
                if proc.poll() is None:
                    _stop(proc)
        db = open_database(url)
        try:
            # every durable seq arrived: one contiguous range. What the killed worker held came
            # late (after its restart), long past the grace period: gaps, all filled since.
            assert [tuple(map(int, r)) for r in db.execute("SELECT lo, hi FROM seq_ranges")] \
                == [(seqs[0], seqs[-1])]
            assert db.scalar("SELECT count(*) FROM gaps WHERE filled_ms IS NULL") == 0
            alarms = [m for (m,) in db.execute("SELECT message_id FROM alarms")]
            assert sorted(alarms) == sorted(_alarm_ids(rig))  # each event once
            print(f"{engine}: {len(expected)} reads from {len(seqs)} messages, "
                  f"{db.scalar('SELECT count(*) FROM gaps')} gaps seen and filled")
        finally:
            db.close()
        shares = [(tmp_path / f"worker-{n}.log").read_text() for n in ("w1", "w3")]
        assert all("stored=" in s and "stored=0," not in s for s in shares), shares


def test_messages_missed_without_a_session_are_detected_as_a_gap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        config = _central_config(rig, url, session_expiry_s=0)
        worker = _start_worker(config, "w1")
        _subscribed(config, "w1")
        rig.start_daemon()
        try:
            time.sleep(6)  # the daemon's start, then polls stored by the worker
            _stop(worker)  # no session kept: what is published now never reaches the share
            time.sleep(3)  # three meters polled every second: some nine messages missed
            worker = _start_worker(config, "w1")
            _subscribed(config, "w1", times=2)
            time.sleep(3)  # and as many stored after it, above the gap
            assert rig.stop_daemon() == 0
            _expected, seqs = _committed_reads(rig)
            db = open_database(url)
            arrived = set()
            try:
                def gaps() -> list[tuple[int, int]]:
                    return [(int(a), int(b)) for a, b in db.execute(
                        "SELECT from_seq, to_seq FROM gaps WHERE filled_ms IS NULL ORDER BY 1")]

                def settled() -> bool:
                    """Everything the worker will get is stored, and every hole below the
                    newest seq has aged into a recorded gap (a loaded machine takes a while)."""
                    arrived.clear()
                    for lo, hi in db.execute("SELECT lo, hi FROM seq_ranges"):
                        arrived.update(range(int(lo), int(hi) + 1))
                    if not arrived or max(arrived) != seqs[-1]:
                        return False
                    recorded = sorted(s for lo, hi in gaps() for s in range(lo, hi + 1))
                    return recorded == sorted(set(seqs) - arrived)

                assert wait_until(settled, 60), (gaps(), sorted(set(seqs) - arrived))
                recorded = sorted(set(seqs) - arrived)
                assert recorded, "the worker's downtime must have cost messages"
            finally:
                db.close()
            status = subprocess.run([sys.executable, "-m", "central.cli", "status", "--config",
                                     str(config)], cwd=REPO, capture_output=True, text=True,
                                    timeout=60)
            line = json.loads(status.stdout.splitlines()[0])
            assert line["gw"] == rig.gateway_id and line["open_gaps"] >= 1
            assert line["missing_seqs"] == len(recorded)
        finally:
            if worker.poll() is None:
                _stop(worker)


@pytest.mark.slow
@pytest.mark.parametrize("payload_version", [2, 1])
def test_gap_is_filled_by_a_signed_replay(tmp_path: Path, payload_version: int) -> None:
    """Also the one run with the daemon publishing schema v1 (``[mqtt] payload_version = 1``,
    for consumers that predate v2): both schemas are stored the same, exactly."""
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    replay_key, gateway_key = SigningKey.generate(), SigningKey.generate()
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=3, modbus_meters=1,
                     poll_interval_s=1.0) as rig:
        assert rig.config_path is not None
        text = rig.config_path.read_text()
        rig.config_path.write_text(text.replace("[mqtt]\n", f"[mqtt]\npayload_version = "
                                                             f"{payload_version}\n", 1))
        _trust_replay_key(rig, tmp_path, replay_key, gateway_key)
        config = _central_config(rig, url, session_expiry_s=0,
                                 replay_key=_pem(replay_key, tmp_path / "central-1.key"),
                                 result_key=tmp_path / "gw.pub")
        worker = _start_worker(config, "w1")
        _subscribed(config, "w1")
        rig.start_daemon()
        try:
            assert wait_until(lambda: bool(_stored_values(url)), 60)
            _stop(worker)
            missed_from = _outbox_last(rig)
            assert wait_until(lambda: _outbox_last(rig) >= missed_from + 10, 60)
            worker = _start_worker(config, "w1")
            db = open_database(url)
            try:
                assert wait_until(lambda: db.scalar("SELECT count(*) FROM gaps") > 0, 60)
                assert wait_until(lambda: db.scalar(
                    "SELECT count(*) FROM gaps WHERE filled_ms IS NULL") == 0, 60), \
                    db.execute("SELECT * FROM gaps")
                assert db.scalar("SELECT count(*) FROM replay_requests WHERE status = "
                                 "'executed'") >= 1
            finally:
                db.close()
            stop_ms = time.time_ns() // 1_000_000
            assert rig.stop_daemon() == 0
            stopped_ms = time.time_ns() // 1_000_000
            assert wait_until(lambda: _settled(url, rig), 30)
            expected, _seqs = _committed_reads(rig)
            assert _stored_reads(url) == expected
            result = compare(served_reads(rig), _stored_values(url),
                             lambda s: stop_ms - 5000 <= s.at_ms <= stopped_ms)
            assert result.exact, result.describe()
            print(f"replay (v{payload_version}): {result.describe()}")
            versions = {decode_message(p)["v"] for t, p in _outbox_payloads(rig) if "/reads/" in t}
            assert versions == {payload_version}
        finally:
            if worker.poll() is None:
                _stop(worker)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_broker_outage_daemon_crash_and_broker_loss_leave_nothing_missing(
        engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The issue's scenario: broker stopped 30 s with a daemon kill -9 inside it, then the broker
    frozen 40 s and kill -9ed (losing what it had queued for the consumer). Afterwards
    ``current_reads`` holds every read the simulated meters served, exactly once and with the
    value they served, and every gap the consumer saw was filled by a replay."""
    url = (f"sqlite:///{tmp_path / 'central.sqlite'}" if engine == "sqlite"
           else fresh_pg(request.getfixturevalue("pg_server")))
    replay_key, gateway_key = SigningKey.generate(), SigningKey.generate()
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=4, modbus_meters=1,
                     poll_interval_s=1.0) as rig:
        _trust_replay_key(rig, tmp_path, replay_key, gateway_key)
        config = _central_config(rig, url, replay_key=_pem(replay_key, tmp_path / "central-1.key"),
                                 result_key=tmp_path / "gw.pub")
        workers = [_start_worker(config, n) for n in ("w1", "w2")]
        for n in ("w1", "w2"):
            _subscribed(config, n)
        rig.start_daemon()
        try:
            time.sleep(8)
            rig.broker.stop()
            time.sleep(15)
            killed_ms = time.time_ns() // 1_000_000
            rig.kill_daemon()  # kill -9 inside the outage
            rig.start_daemon()
            time.sleep(15)
            rig.broker.start()
            time.sleep(8)
            rig.broker.freeze()  # SIGSTOP: the gateway's messages are acknowledged, then lost
            time.sleep(40)
            rig.broker.kill()
            rig.broker.start()
            time.sleep(10)
            assert wait_until(lambda: _all_acked(rig), 60)
            # Every hole the broker made has been seen, asked for and filled while the gateway
            # still runs (the newest few seqs may still be on their way).
            assert wait_until(lambda: _settled(url, rig, margin=20), 180), \
                open_database(url).execute("SELECT * FROM gaps")
            stop_ms = time.time_ns() // 1_000_000
            assert rig.stop_daemon() == 0
            stopped_ms = time.time_ns() // 1_000_000
            assert wait_until(lambda: _settled(url, rig), 60)

            def excused(s: Served) -> bool:
                """Answered to a daemon being killed (or stopped) before it committed them."""
                return (killed_ms - 5000 <= s.at_ms <= killed_ms + 1000
                        or stop_ms - 5000 <= s.at_ms <= stopped_ms)

            result = compare(served_reads(rig), _stored_values(url), excused)
            assert result.exact, result.describe()
            assert result.matched > 1000
            at_kill = sum(1 for s in result.excused if s.at_ms <= killed_ms + 1000)
            # At most the poll each bus had in flight: 12 DL/T 645 values, 29 Modbus values.
            assert at_kill <= 41 and len(result.excused) - at_kill <= 41, result.excused
            expected, seqs = _committed_reads(rig)
            assert _stored_reads(url) == expected  # and what the gateway committed, exactly
            db = open_database(url)
            try:
                gaps = db.scalar("SELECT count(*) FROM gaps")
                replays = db.scalar("SELECT count(*) FROM replay_requests WHERE status = "
                                    "'executed'")
                assert gaps >= 1 and replays >= 1  # the killed broker lost messages: replayed
                assert sorted(m for (m,) in db.execute("SELECT message_id FROM alarms")) \
                    == sorted(_alarm_ids(rig))
            finally:
                db.close()
            print(f"{engine}: {result.matched} served reads stored exactly once, "
                  f"{at_kill} answered to the daemon in the 5 s before its kill -9 and "
                  f"{len(result.excused) - at_kill} before its stop were never committed by it; "
                  f"{len(seqs)} messages, {gaps} gaps filled by {replays} executed replays")
        finally:
            for proc in workers:
                if proc.poll() is None:
                    _stop(proc)
