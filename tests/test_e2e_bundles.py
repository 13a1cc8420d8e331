"""Signed update bundles against the real daemon (docs/bundles.md): a good bundle switches the
configuration through the reload path, refusals of every kind are journaled and change nothing,
a configuration that fails validation never runs, and one that fails health is rolled back by
the daemon itself within ``[update] health_timeout_s``."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from protocols.bundle import build_bundle, sign_bundle
from protocols.commands import raw_public_key
from protocols.ed25519 import SigningKey
from tests.broker import Observer
from tests.gateway_rig import GatewayRig, gateway_rig, reads_by_meter, wait_until

HEALTH_TIMEOUT_S = 8.0
ENGINEER = SigningKey.generate()
OPERATOR = SigningKey.generate()


def _journal(rig: GatewayRig) -> list[dict[str, Any]]:
    path = rig.workdir / "var" / "audit.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT kind, kid, ts_ms, body FROM journal ORDER BY seq").fetchall()
    finally:
        conn.close()
    out = []
    for kind, kid, ts_ms, body in rows:
        details = cbor2.loads(body)
        if details.get("what") == "bundle":
            out.append({"kind": kind, "kid": kid, "ts_ms": ts_ms, **details})
    return out


def _drop(rig: GatewayRig, name: str, data: bytes) -> None:
    inbox = rig.workdir / "inbox"
    (inbox / f"{name}.part").write_bytes(data)
    (inbox / f"{name}.part").rename(inbox / f"{name}.bundle")  # as docs/bundles.md says


def _bundle(seq: int, config: bytes, *, key: SigningKey = ENGINEER, kid: str = "eng-1",
            gateway: str = "gw-test") -> bytes:
    bundle = build_bundle(seq, [gateway], int(time.time() * 1000),
                          [("gateway.toml", "config", config)])
    return sign_bundle(bundle, key, kid).to_cbor()


def _reads_in(observer: Observer, rig: GatewayRig, meter_id: str, seconds: float) -> int:
    before = len(reads_by_meter(observer, rig).get(meter_id, []))
    time.sleep(seconds)
    return len(reads_by_meter(observer, rig).get(meter_id, [])) - before


def _configure(rig: GatewayRig, health_timeout_s: float) -> str:
    """Add the ENGINEER and OPERATOR keys and the [update] inbox to the rig's config."""
    assert rig.config_path is not None
    (rig.workdir / "inbox").mkdir()
    extra = (
        "\n[[operators]]\nkid = \"eng-1\"\n"
        f"public_key = \"{raw_public_key(ENGINEER).hex()}\"\nroles = [\"ENGINEER\"]\n"
        "\n[[operators]]\nkid = \"op-1\"\n"
        f"public_key = \"{raw_public_key(OPERATOR).hex()}\"\nroles = [\"OPERATOR\"]\n"
        f"\n[update]\ninbox_dir = \"inbox\"\nscan_interval_s = 0.5\n"
        f"health_timeout_s = {health_timeout_s}\n")
    original = rig.config_path.read_text() + extra
    rig.config_path.write_text(original)
    return original


def _broken(rig: GatewayRig, config: bytes) -> bytes:
    """``config`` with its DL/T 645 bus pointed at a port that does not exist (valid, unhealthy)."""
    port = next(line.device for line in rig.lines.values())
    broken = config.replace(f'"{port}"'.encode(), b'"/dev/ttyNOPE-bundle-test"')
    assert broken != config
    return broken


@pytest.mark.slow
def test_bundles_switch_refuse_and_roll_back(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=8.0) as rig:
        assert rig.config_path is not None
        original = _configure(rig, HEALTH_TIMEOUT_S)
        meter = next(iter(rig.meters))
        with Observer(rig.broker, "mtr/v1/#", client_id="bundle-observer") as observer:
            rig.start_daemon()
            assert wait_until(lambda: meter in reads_by_meter(observer, rig), 30), \
                rig.log_text()[-3000:]
            slow_rate = _reads_in(observer, rig, meter, 6.0)

            # 1. A good bundle: the poll interval drops from 8 s to 1 s.
            fast = original.replace("poll_interval_s = 8.0", "poll_interval_s = 1.0").encode()
            assert fast != original.encode()
            _drop(rig, "01-fast", _bundle(1, fast))
            assert wait_until(lambda: any(r.get("step") == "healthy" for r in _journal(rig)),
                              30), rig.log_text()[-3000:]
            assert rig.config_path.read_bytes() == fast
            fast_rate = _reads_in(observer, rig, meter, 6.0)
            assert fast_rate >= 3 > slow_rate + 1 or fast_rate >= slow_rate + 3, \
                (slow_rate, fast_rate)

            # 2. Refusals: each one journaled with its code, nothing switched.
            other = SigningKey.generate()
            _drop(rig, "02-stale", _bundle(1, fast))
            _drop(rig, "03-wrong-gateway", _bundle(10, fast, gateway="gw-other"))
            _drop(rig, "04-bad-signature", _bundle(11, fast, key=other))
            _drop(rig, "05-operator-key", _bundle(12, fast, key=OPERATOR, kid="op-1"))
            tampered = dict(cbor2.loads(_bundle(13, fast)))
            tampered["payloads"] = {"gateway.toml": fast + b"\n# tampered\n"}
            _drop(rig, "06-digest", cbor2.dumps(tampered))
            expected = {"02-stale.bundle": "stale_seq", "03-wrong-gateway.bundle": "wrong_gateway",
                        "04-bad-signature.bundle": "bad_signature",
                        "05-operator-key.bundle": "unknown_key",
                        "06-digest.bundle": "digest_mismatch"}

            def refused() -> dict[str, str]:
                return {r["file"]: r["code"] for r in _journal(rig) if r["kind"] == "rejected"}

            assert wait_until(lambda: len(refused()) == len(expected), 20), refused()
            assert refused() == expected
            assert rig.config_path.read_bytes() == fast

            # 3. A config that fails validation is refused; the running one stays.
            invalid = fast.replace(b"poll_interval_s = 1.0", b"poll_interval_s = -5", 1)
            _drop(rig, "07-invalid", _bundle(20, invalid))
            assert wait_until(lambda: any(r.get("step") == "validate" for r in _journal(rig)),
                              20), rig.log_text()[-3000:]
            assert rig.config_path.read_bytes() == fast
            assert not (rig.config_path.parent / ".bundle-switch").exists()
            assert _reads_in(observer, rig, meter, 4.0) >= 2, "polling stopped"

            # 4. Valid but unhealthy (the bus points at a missing port): rolled back by itself.
            _drop(rig, "08-broken-port", _bundle(21, _broken(rig, fast)))
            assert wait_until(lambda: any(r.get("step") == "rollback" for r in _journal(rig)),
                              HEALTH_TIMEOUT_S + 30), rig.log_text()[-3000:]
            assert rig.config_path.read_bytes() == fast
            assert _reads_in(observer, rig, meter, 4.0) >= 2, "polling did not resume"

            # 4b. A new data_dir would only take effect at a restart: refused as invalid.
            moved = fast.replace(b'data_dir = "var"', b'data_dir = "var2"')
            assert moved != fast
            _drop(rig, "08b-data-dir", _bundle(22, moved))
            assert wait_until(lambda: any(r.get("seq") == 22 and r.get("step") == "validate"
                                          for r in _journal(rig)), 20), rig.log_text()[-3000:]
            assert rig.config_path.read_bytes() == fast

            # 5. A wheel only: verified and recorded for the installer, nothing switched.
            wheel = sign_bundle(build_bundle(30, ["gw-test"], 0, [
                ("edge_gateway-9.9-py3-none-any.whl", "wheel", b"PK\x03\x04 not installed")]),
                ENGINEER, "eng-1").to_cbor()
            _drop(rig, "09-wheel", wheel)
            assert wait_until(lambda: any(r.get("step") == "recorded" for r in _journal(rig)),
                              20), rig.log_text()[-3000:]
            assert rig.config_path.read_bytes() == fast
            assert (tmp_path / "var" / "bundle-staged" / "edge_gateway-9.9-py3-none-any.whl").exists()
            assert rig.stop_daemon() == 0

        records = _journal(rig)
        by_seq: dict[int, list[str]] = {}
        for r in records:
            if "seq" in r:
                by_seq.setdefault(r["seq"], []).append(f"{r['kind']}:{r.get('step', '')}")
        assert by_seq[1] == ["accepted:", "executed:stage", "executed:switch", "executed:healthy"]
        assert by_seq[20] == ["accepted:", "executed:stage", "failed:validate"]
        assert by_seq[21] == ["accepted:", "executed:stage", "executed:switch", "failed:rollback"]
        assert by_seq[22] == ["accepted:", "executed:stage", "failed:validate"]
        assert by_seq[30] == ["accepted:", "executed:stage", "executed:recorded"]
        assert any("data_dir" in r.get("reason", "") for r in records if r.get("seq") == 22)
        switched = next(r["ts_ms"] for r in records if r.get("seq") == 21
                        and r.get("step") == "switch")
        rolled = next(r["ts_ms"] for r in records if r.get("seq") == 21
                      and r.get("step") == "rollback")
        print(f"rolled back {(rolled - switched) / 1000:.1f} s after the switch")
        # Rolled back after the deadline, not long after (a reload is a few seconds at most).
        assert HEALTH_TIMEOUT_S * 1000 <= rolled - switched <= (HEALTH_TIMEOUT_S + 15) * 1000
        processed = {p.name for p in (tmp_path / "inbox" / "processed").iterdir()}
        assert len(processed) == 10
        assert "Traceback" not in rig.log_text(), rig.log_text()[-3000:]


@pytest.mark.slow
def test_a_switch_interrupted_by_kill_is_undone_at_the_next_start(tmp_path: Path) -> None:
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=0,
                     poll_interval_s=1.0) as rig:
        assert rig.config_path is not None
        original = _configure(rig, 300.0).encode()  # the proof never ends before the kill
        meter = next(iter(rig.meters))
        with Observer(rig.broker, "mtr/v1/#", client_id="bundle-observer-kill") as observer:
            rig.start_daemon()
            assert wait_until(lambda: meter in reads_by_meter(observer, rig), 30), \
                rig.log_text()[-3000:]
            broken = _broken(rig, original)
            _drop(rig, "01-broken", _bundle(1, broken))
            assert wait_until(lambda: any(r.get("step") == "switch" for r in _journal(rig)),
                              30), rig.log_text()[-3000:]
            rig.kill_daemon()
            assert rig.config_path.read_bytes() == broken
            assert (tmp_path / ".bundle-switch").exists()

            rig.start_daemon()
            assert wait_until(lambda: any(r.get("step") == "interrupted"
                                          for r in _journal(rig)), 30), rig.log_text()[-3000:]
            assert rig.config_path.read_bytes() == original
            assert not (tmp_path / ".bundle-switch").exists()
            assert _reads_in(observer, rig, meter, 4.0) >= 2, "polling did not resume"
            assert rig.stop_daemon() == 0
        steps = [f"{r['kind']}:{r.get('step', r.get('code', ''))}" for r in _journal(rig)]
        # The file was still in the inbox at the kill: read again, its seq is already spent.
        assert steps == ["accepted:", "executed:stage", "executed:switch", "failed:interrupted",
                         "rejected:stale_seq"]
        assert "were put back" in rig.log_text()
