"""Command verification cost: what one signed command costs the gateway before it can act.

    python bench/bench_command_verify.py [--count 300] [--dir DIR]

Measures, per command:

* **checks only** — COSE decode, payload parse, Ed25519 verify (no journal): the CPU cost;
* **verify()** — the whole :meth:`CommandVerifier.verify`, accepted path: all checks plus the
  journal transaction (received + accepted records, counter and id) committed with
  ``synchronous=FULL``, i.e. including the fsync that makes the verdict durable;
* the same for a two-signature COSE_Sign and for a rejected (bad signature) command;
* ``verify_chain`` throughput (what ``gwtool audit verify`` does), records per second.

The journal lives in ``--dir`` (default: a temporary directory under the system temp dir); put it
on the gateway's data_dir filesystem to measure what the gateway will see — fsync dominates.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from firmware_tools.command_tools import verify_journal_file
from gateway.control.commands import (
    CommandVerifier,
    Journal,
    KeyTable,
    OperatorKey,
    TrustedClock,
    VerifierPolicy,
)
from protocols import cose
from protocols.commands import build_envelope, parse_envelope, raw_public_key
from protocols.ed25519 import SigningKey

GW = "gw-bench"
METERS = [f"m-{i:03d}" for i in range(1, 41)]


def _command(
    keys: list[tuple[SigningKey, str]], ctr: int, now: int, targets: list[str]
) -> bytes:
    env = build_envelope(aud=GW, action="trip", targets=targets, ctr=ctr, iat=now, ttl_s=60)
    payload = env.to_cbor()
    if len(keys) == 1:
        return cose.sign1(
            payload, keys[0][0], protected=cose.ed25519_protected(keys[0][1].encode())
        )
    return cose.sign(payload, [cose.Signer(k, kid=kid.encode()) for k, kid in keys])


def _summary(name: str, samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return (
        f"{name:<44} n={len(ms):<5} mean {statistics.fmean(ms):7.3f} ms  "
        f"p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  max {ms[-1]:7.3f} ms"
    )


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="where the journal file goes")
    args = parser.parse_args()

    a, b, stranger = (
        SigningKey.generate(),
        SigningKey.generate(),
        SigningKey.generate(),
    )
    table = KeyTable.build(
        [
            OperatorKey("op-a", raw_public_key(a), frozenset({"OPERATOR"})),
            OperatorKey("op-b", raw_public_key(b), frozenset({"OPERATOR"})),
        ],
        meters=METERS,
    )
    # Rate limit lifted: this measures the checks, not the policy.
    policy = VerifierPolicy(gateway_id=GW, rate_limit_count=10**9, two_person_threshold=20)
    now = int(time.time())

    # checks only
    sample = _command([(a, "op-a")], 1, now, METERS[:2])
    public = raw_public_key(a)

    def checks() -> None:
        message = cose.decode(sample)
        parse_envelope(message.payload)
        assert isinstance(message, cose.Sign1Message)
        message.verify(public)

    for _ in range(50):
        checks()
    print(
        _summary(
            "checks only (decode, parse, Ed25519)", [_timed(checks) for _ in range(args.count * 5)]
        )
    )

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "audit.db"
        with Journal.open(path) as journal:
            verifier = CommandVerifier(policy, table, journal, TrustedClock(True))
            ctr = 0

            def run(make: Callable[[int], bytes], expect: bool) -> list[float]:
                nonlocal ctr
                samples = []
                for _ in range(args.count):
                    ctr += 1
                    message = make(ctr)
                    start = time.perf_counter()
                    decision = verifier.verify(message, time.time())
                    samples.append(time.perf_counter() - start)
                    assert decision.accepted is expect, decision.reason
                return samples

            print(
                _summary(
                    "verify(), accepted, COSE_Sign1, 2 meters",
                    run(lambda c: _command([(a, "op-a")], c, now, METERS[:2]), True),
                )
            )
            print(
                _summary(
                    "verify(), accepted, COSE_Sign x2, 30 meters",
                    run(lambda c: _command([(a, "op-a"), (b, "op-b")], c, now, METERS[:30]), True),
                )
            )
            print(
                _summary(
                    "verify(), rejected (bad signature)",
                    run(lambda c: _command([(stranger, "op-a")], c, now, METERS[:2]), False),
                )
            )
            head = journal.head()
        start = time.perf_counter()
        report = verify_journal_file(path)
        elapsed = time.perf_counter() - start
        assert report.ok and report.head == head
        print(
            f"{'verify_journal_file (gwtool audit verify)':<44} {report.records} records in "
            f"{elapsed * 1000:.1f} ms = {report.records / elapsed:,.0f} records/s; "
            f"journal {path.stat().st_size / 1024:.0f} KiB + WAL"
        )


if __name__ == "__main__":
    main()
