"""gateway/commands: the verifier's checks in order, each rejection journaled with its reason,
the accepted path, replay state that survives a reopen and a kill -9, the clock, and signed
results.

Everything is real: a config file loaded by the gateway's loader, Ed25519 keys, COSE messages
built the way `gwtool sign-command` builds them, and the SQLite journal in tmp_path.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest

from firmware_tools.command_tools import verify_journal_file
from gateway.config.loader import load_config
from gateway.config.model import GatewayConfig
from gateway.control.commands import (
    CommandVerifier,
    Decision,
    Journal,
    KeyTable,
    RejectCode,
    ResultSigner,
    TrustedClock,
    VerifierPolicy,
)
from gateway.control.commands.clock import (
    STA_UNSYNC,
    TIME_ERROR,
    KernelTimeState,
    read_kernel_time_state,
)
from gateway.control.commands.keys import allowed_actions
from gateway.store import Store
from protocols import cose
from protocols.commands import (
    AuditHeadMessage,
    ResultError,
    build_envelope,
    raw_public_key,
    read_result,
    read_result_topic,
)
from protocols.ed25519 import SigningKey
from protocols.payload import Envelope, decode_message

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
GW = "gw-0001"
SYNCED = KernelTimeState(state=0, status=0x2001, maxerror_us=12_000, esterror_us=300)
UNSYNCED = KernelTimeState(
    state=TIME_ERROR, status=STA_UNSYNC, maxerror_us=16_000_000, esterror_us=16_000_000
)


def _key(seed: int) -> SigningKey:
    return SigningKey(bytes([seed]) * 32)


OPERATOR_A = _key(1)
OPERATOR_B = _key(2)
ENGINEER = _key(3)
STRANGER = _key(9)


def _config(tmp_path: Path, *, clock_trusted: bool = True) -> GatewayConfig:
    meters = "\n".join(
        textwrap.dedent(
            f"""
            [[meters]]
            id = "m-{i:03d}"
            bus = "rs485-1"
            address = "{i:012d}"
            profile = "dlt645-2007"
            protected = {"true" if i == 3 else "false"}
            """
        )
        for i in range(1, 16)
    )
    members = ", ".join(f'{{ meter = "m-{i:03d}" }}' for i in range(4, 16))
    text = f"""
[gateway]
id = "{GW}"
data_dir = "var"

[mqtt]
host = "127.0.0.1"

[[buses]]
name = "rs485-1"
protocol = "dlt645"
port = "/dev/null"

{meters}

[[groups]]
id = "feeder-a"
members = [{members}]

[[groups]]
id = "with-protected"
members = [{{ meter = "m-002" }}, {{ meter = "m-003" }}]

[[operators]]
kid = "op-a"
public_key = "{raw_public_key(OPERATOR_A).hex()}"
roles = ["OPERATOR"]

[[operators]]
kid = "op-b"
public_key = "{raw_public_key(OPERATOR_B).hex()}"
roles = ["OPERATOR", "VIEWER"]

[[operators]]
kid = "eng-1"
public_key = "{raw_public_key(ENGINEER).hex()}"
roles = ["ENGINEER"]

[commands]
clock_trusted = {"true" if clock_trusted else "false"}
max_age_s = 120
max_meters_per_command = 14
two_person_threshold = 10
"""
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_config(path)


def command(
    *,
    keys: Sequence[tuple[SigningKey, str]] = ((OPERATOR_A, "op-a"),),
    action: str = "trip",
    targets: Sequence[str] | Mapping[str, str] = ("m-001", "m-002"),
    ctr: int = 1,
    iat: int = int(NOW),
    ttl_s: int = 60,
    role: str = "OPERATOR",
    aud: str = GW,
    params: Mapping[str, object] | None = None,
    command_id: bytes | None = None,
) -> tuple[bytes, bytes]:
    """A signed command as `gwtool sign-command` makes it; returns (message, command id)."""
    envelope = build_envelope(
        aud=aud,
        action=action,
        targets=targets,
        ctr=ctr,
        iat=iat,
        ttl_s=ttl_s,
        role=role,
        params=params,
        command_id=command_id,
    )
    payload = envelope.to_cbor()
    if len(keys) == 1:
        key, kid = keys[0]
        message = cose.sign1(payload, key, protected=cose.ed25519_protected(kid.encode()))
    else:
        message = cose.sign(payload, [cose.Signer(k, kid=kid.encode()) for k, kid in keys])
    return message, envelope.id


@dataclass
class Rig:
    config: GatewayConfig
    journal: Journal
    verifier: CommandVerifier
    path: Path

    def verify(self, message: bytes, now: float = NOW) -> Decision:
        return self.verifier.verify(message, now)

    def last_two(self) -> tuple[str, str]:
        records = self.journal.records()
        return records[-2].kind, records[-1].kind


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    config = _config(tmp_path)
    path = tmp_path / "audit.db"
    with Journal.open(path) as journal:
        verifier = CommandVerifier.from_config(config, journal)
        yield Rig(config, journal, verifier, path)


# ------------------------------------------------------------------------ the accepted path


def test_accepted_command_is_journaled_with_its_counter_and_is_pending(rig: Rig) -> None:
    message, cmd = command(targets=["m-001", "m-002"], ctr=5)
    decision = rig.verify(message)
    assert decision.accepted, decision.reason
    assert decision.code is None and decision.reason == ""
    verified = decision.command
    assert verified is not None
    assert verified.id == cmd == decision.command_id
    assert verified.issuer == "op-a" and verified.signers == ("op-a",)
    assert verified.action == "trip" and verified.meters == ("m-001", "m-002")
    assert verified.trippable == ("m-001", "m-002")
    assert verified.freshness_checked is True
    assert rig.last_two() == ("received", "accepted")
    received, accepted = rig.journal.records()[-2:]
    assert received.details["message"] == message
    assert accepted.seq == decision.journal_seq and accepted.cmd == cmd and accepted.kid == "op-a"
    assert rig.journal.last_counter("op-a") == 5
    assert rig.journal.seen(cmd)
    [pending] = rig.journal.pending()
    assert pending.cmd == cmd and pending.details["meters"] == ["m-001", "m-002"]
    rig.journal.record_outcome(cmd, "executed", "2 relays open", now_ms=int(NOW * 1000) + 900)
    assert rig.journal.pending() == []
    with pytest.raises(ValueError, match="already has its final outcome"):
        rig.journal.record_outcome(cmd, "failed", "again", now_ms=int(NOW * 1000) + 901)
    assert verify_journal_file(rig.path).ok


def test_group_target_expands_and_a_limit_never_trips_a_protected_member(rig: Rig) -> None:
    message, _ = command(action="limit", targets={"group": "with-protected"},
                         params={"limit_kw": 120})  # fmt: skip
    decision = rig.verify(message)
    assert decision.accepted, decision.reason
    assert decision.command is not None
    assert decision.command.group == "with-protected"
    assert decision.command.meters == ("m-002", "m-003")
    assert decision.command.trippable == ("m-002",)
    assert dict(decision.command.params) == {"limit_kw": 120}


def test_mass_trip_with_two_distinct_operators_is_accepted(rig: Rig) -> None:
    message, _ = command(
        keys=[(OPERATOR_A, "op-a"), (OPERATOR_B, "op-b")], targets={"group": "feeder-a"}
    )
    decision = rig.verify(message)
    assert decision.accepted, decision.reason
    assert decision.command is not None
    assert decision.command.signers == ("op-a", "op-b")
    assert len(decision.command.meters) == 12
    assert rig.journal.last_counter("op-a") == 1
    assert rig.journal.last_counter("op-b") is None  # the counter is the issuer's


def test_without_trusted_time_non_tripping_actions_pass_unchecked_and_say_so(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, clock_trusted=False)
    with Journal.open(tmp_path / "audit.db") as journal:
        verifier = CommandVerifier.from_config(
            config, journal, clock=TrustedClock(False, probe=lambda: UNSYNCED)
        )
        # Ten years off: with an untrusted clock that cannot be judged, and is not.
        message, _ = command(action="allow_close", iat=int(NOW) - 315_360_000)
        decision = verifier.verify(message, NOW)
        assert decision.accepted, decision.reason
        assert decision.command is not None and decision.command.freshness_checked is False
        assert journal.records()[-1].details["freshness_checked"] is False


# ------------------------------------------------------------------------ each rejection


def _bad_signature() -> bytes:
    # op-a's kid, signed by a stranger's key.
    return command(keys=[(STRANGER, "op-a")])[0]


def _tampered() -> bytes:
    message = bytearray(command()[0])
    # Retarget the trip: flip the last meter id's final character ("m-002" -> "m-003").
    index = message.rindex(b"m-002") + 4
    message[index] ^= 0x01
    return bytes(message)


REJECTIONS = [
    ("bad signature", _bad_signature, RejectCode.BAD_SIGNATURE),
    ("tampered payload", _tampered, RejectCode.BAD_SIGNATURE),
    ("unknown key", lambda: command(keys=[(STRANGER, "op-9")])[0], RejectCode.UNKNOWN_KEY),
    ("wrong audience", lambda: command(aud="gw-0002")[0], RejectCode.WRONG_AUDIENCE),
    ("expired", lambda: command(iat=int(NOW) - 100, ttl_s=60)[0], RejectCode.EXPIRED),
    ("not yet valid", lambda: command(iat=int(NOW) + 60)[0], RejectCode.NOT_YET_VALID),
    ("lifetime too long", lambda: command(ttl_s=121)[0], RejectCode.LIFETIME_TOO_LONG),
    ("engineer claims ENGINEER", lambda: command(keys=[(ENGINEER, "eng-1")], role="ENGINEER")[0],
     RejectCode.INSUFFICIENT_ROLE),
    ("engineer claims OPERATOR", lambda: command(keys=[(ENGINEER, "eng-1")])[0],
     RejectCode.INSUFFICIENT_ROLE),
    ("viewer role may not trip", lambda: command(keys=[(OPERATOR_B, "op-b")], role="VIEWER")[0],
     RejectCode.INSUFFICIENT_ROLE),
    ("protected meter", lambda: command(targets=["m-001", "m-003"])[0],
     RejectCode.PROTECTED_METER),
    ("mass trip with one signature", lambda: command(targets={"group": "feeder-a"})[0],
     RejectCode.TWO_PERSON_REQUIRED),
    ("mass limit with one signature",
     lambda: command(action="limit", targets={"group": "feeder-a"})[0],
     RejectCode.TWO_PERSON_REQUIRED),
    ("too many meters",
     lambda: command(action="alarm", targets=[f"m-{i:03d}" for i in range(1, 16)])[0],
     RejectCode.TOO_MANY_METERS),
    ("unknown meter", lambda: command(targets=["m-001", "m-999"])[0], RejectCode.UNKNOWN_TARGET),
    ("unknown group", lambda: command(targets={"group": "nope"})[0], RejectCode.UNKNOWN_TARGET),
    ("same operator signs twice",
     lambda: command(keys=[(OPERATOR_A, "op-a"), (OPERATOR_A, "op-a")],
                     targets={"group": "feeder-a"})[0],
     RejectCode.DUPLICATE_SIGNER),
    ("one valid, one bad co-signature",
     lambda: command(keys=[(OPERATOR_A, "op-a"), (STRANGER, "op-b")],
                     targets={"group": "feeder-a"})[0],
     RejectCode.BAD_SIGNATURE),
    ("garbage", lambda: b"\xd2\x84garbage", RejectCode.MALFORMED),
    ("not a command payload",
     lambda: cose.sign1(cbor2.dumps({"v": 1}), OPERATOR_A, protected=cose.ed25519_protected(b"op-a")),
     RejectCode.MALFORMED),
    ("unknown payload field",
     lambda: cose.sign1(cbor2.dumps({**cbor2.loads(cose.decode(command()[0]).payload), "x": 1}),
                        OPERATOR_A, protected=cose.ed25519_protected(b"op-a")),
     RejectCode.MALFORMED),
    ("ES256 algorithm", lambda: _with_protected({1: -7, 4: b"op-a"}), RejectCode.BAD_ALGORITHM),
    ("too large", lambda: b"\xd2" + bytes(70_000), RejectCode.TOO_LARGE),
    ("empty", lambda: b"", RejectCode.TOO_LARGE),
]  # fmt: skip


def _with_protected(protected: dict[int, object]) -> bytes:
    payload = cose.decode(command()[0]).payload
    prot = cbor2.dumps(protected)
    signature = OPERATOR_A.sign(cbor2.dumps(["Signature1", prot, b"", payload]))
    return cbor2.dumps(cbor2.CBORTag(18, [prot, {}, payload, signature]))


#: Rejected before every signature verified: journaled as a digest, within a budget.
UNAUTHENTICATED = frozenset({RejectCode.TOO_LARGE, RejectCode.MALFORMED, RejectCode.BAD_ALGORITHM,
                             RejectCode.UNKNOWN_KEY, RejectCode.DUPLICATE_SIGNER,
                             RejectCode.BAD_SIGNATURE})


#: Malformed payloads under a signature that holds: journaled in full, like any authentic command.
SIGNED_BUT_MALFORMED = frozenset({"not a command payload", "unknown payload field"})


@pytest.mark.parametrize(("name", "make", "code"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_each_rejection_is_journaled_with_its_reason(
    rig: Rig, name: str, make: object, code: RejectCode
) -> None:
    assert callable(make)
    message = make()
    decision = rig.verify(message)
    assert decision.status == "rejected" and decision.code is code, decision.reason
    assert decision.command is None
    assert decision.reason.startswith(f"{code}: ") and len(decision.reason) > len(code) + 5
    rejected = rig.journal.records()[-1]
    assert rejected.seq == decision.journal_seq
    assert rejected.details["code"] == str(code)
    assert rejected.details["reason"] == decision.reason.removeprefix(f"{code}: ")
    if code in UNAUTHENTICATED and name not in SIGNED_BUT_MALFORMED:
        # Nobody's signature vouches for it: one record, its digest and size, not its bytes.
        assert [r.kind for r in rig.journal.records()] == ["rejected"]
        assert rejected.details["sha256"] == hashlib.sha256(message).digest()
        assert rejected.details["size"] == len(message)
        assert rejected.details["authentic"] is False and "claimed" not in rejected.details
        assert len(rejected.body) < 400
    else:
        assert rig.last_two() == ("received", "rejected")
        assert rig.journal.records()[-2].details["message"] == message
        assert rejected.details["authentic"] is True
        # A payload that cannot be parsed has no claims to record, only its bytes.
        assert ("claimed" in rejected.details) is (code is not RejectCode.MALFORMED)
    assert rig.journal.pending() == []
    assert verify_journal_file(rig.path).ok


def test_replayed_command_id_is_rejected(rig: Rig) -> None:
    message, cmd = command(ctr=1)
    assert rig.verify(message).accepted
    again = rig.verify(message, NOW + 1)
    assert again.code is RejectCode.REPLAYED and cmd.hex() in again.reason
    # Same id, even with a fresh counter and a fresh signature: still a replay.
    reissued, _ = command(ctr=2, command_id=cmd)
    assert rig.verify(reissued, NOW + 2).code is RejectCode.REPLAYED
    assert [r.kind for r in rig.journal.records()] == [
        "received", "accepted", "received", "rejected", "received", "rejected",
    ]  # fmt: skip


def test_stale_counter_is_rejected_and_names_the_next_counter(rig: Rig) -> None:
    assert rig.verify(command(ctr=7)[0]).accepted
    for stale in (7, 3, 0):
        decision = rig.verify(command(ctr=stale)[0])
        assert decision.code is RejectCode.STALE_COUNTER
        assert "--ctr 8" in decision.reason
    assert rig.verify(command(ctr=8)[0]).accepted


def test_untrusted_clock_rejects_trip_and_limit(tmp_path: Path) -> None:
    config = _config(tmp_path, clock_trusted=False)
    with Journal.open(tmp_path / "audit.db") as journal:
        verifier = CommandVerifier.from_config(
            config, journal, clock=TrustedClock(False, probe=lambda: UNSYNCED)
        )
        for ctr, action in enumerate(("trip", "limit"), start=1):
            decision = verifier.verify(command(action=action, ctr=ctr)[0], NOW)
            assert decision.code is RejectCode.UNTRUSTED_CLOCK
            assert "STA_UNSYNC" in decision.reason and "clock_trusted" in decision.reason
            assert journal.records()[-1].details["code"] == "untrusted_clock"
        # No counter was spent: once the clock is trusted the operator's next command works.
        assert journal.last_counter("op-a") is None
        verifier.clock = TrustedClock(False, probe=lambda: SYNCED)
        assert verifier.verify(command(ctr=1)[0], NOW).accepted


def test_rejection_after_the_counter_check_spends_the_counter(rig: Rig) -> None:
    """An authentic command refused by an interlock must not become acceptable when re-sent
    (say, after a rate limit window passes): its id and counter are spent with the rejection."""
    refused, cmd = command(targets=["m-003"], ctr=4)
    decision = rig.verify(refused)
    assert decision.code is RejectCode.PROTECTED_METER
    assert rig.journal.records()[-1].details["counter_spent"] is True
    assert rig.journal.last_counter("op-a") == 4 and rig.journal.seen(cmd)
    assert rig.verify(refused, NOW + 1).code is RejectCode.REPLAYED
    assert rig.verify(command(targets=["m-001"], ctr=4)[0]).code is RejectCode.STALE_COUNTER


def test_rejection_before_the_signature_spends_nothing(rig: Rig) -> None:
    forged, cmd = command(keys=[(STRANGER, "op-a")], ctr=50)
    assert rig.verify(forged).code is RejectCode.BAD_SIGNATURE
    assert rig.journal.last_counter("op-a") is None and not rig.journal.seen(cmd)
    details = rig.journal.records()[-1].details
    assert details["authentic"] is False and details["counter_spent"] is False
    # A forger cannot burn the operator's command id or counter.
    genuine, _ = command(ctr=50, command_id=cmd)
    assert rig.verify(genuine).accepted


def test_rate_limit_per_issuing_key(rig: Rig) -> None:
    policy = VerifierPolicy.from_config(rig.config, rate_limit_count=2, rate_limit_window_s=60)
    verifier = CommandVerifier(policy, rig.verifier.keys, rig.journal, rig.verifier.clock)
    assert verifier.verify(command(ctr=1, action="alarm")[0], NOW).accepted
    assert verifier.verify(command(ctr=2, action="alarm")[0], NOW + 1).accepted
    third = verifier.verify(command(ctr=3, action="alarm", iat=int(NOW) + 2)[0], NOW + 2)
    assert third.code is RejectCode.RATE_LIMITED
    # Another operator is not affected; and the window moves on.
    other = command(keys=[(OPERATOR_B, "op-b")], ctr=1, action="alarm", iat=int(NOW) + 2)[0]
    assert verifier.verify(other, NOW + 2).accepted
    later = command(ctr=4, action="alarm", iat=int(NOW) + 61)[0]
    assert verifier.verify(later, NOW + 61).accepted


def test_rate_limit_comes_from_the_commands_section(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert VerifierPolicy.from_config(config).rate_limit_count == 30  # the documented default
    path = tmp_path / "gateway.toml"
    path.write_text(path.read_text().replace("two_person_threshold = 10",
                                             "two_person_threshold = 10\nrate_limit_per_minute = 1"))
    limited = load_config(path)
    assert VerifierPolicy.from_config(limited).rate_limit_count == 1
    with Journal.open(tmp_path / "audit.db") as journal:
        verifier = CommandVerifier.from_config(limited, journal)
        assert verifier.verify(command(ctr=1, action="alarm")[0], NOW).accepted
        second = verifier.verify(command(ctr=2, action="alarm")[0], NOW + 1)
        assert second.code is RejectCode.RATE_LIMITED and "(limit 1)" in second.reason


def test_relay_check_rejects_before_acceptance_and_journals_the_reason(rig: Rig) -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []

    def relay_check(action: str, meters: tuple[str, ...]) -> str | None:
        asked.append((action, meters))
        return "meter m-001 has no relay in its profile" if action == "trip" else None

    verifier = CommandVerifier(rig.verifier.policy, rig.verifier.keys, rig.journal,
                               rig.verifier.clock, relay_check=relay_check)
    decision = verifier.verify(command(ctr=1, action="trip", targets=["m-001"])[0], NOW)
    assert decision.code is RejectCode.NO_RELAY and "no relay" in decision.reason
    assert rig.last_two() == ("received", "rejected")
    assert verifier.verify(command(ctr=2, action="alarm", targets=["m-001"])[0], NOW).accepted
    assert asked == [("trip", ("m-001",)), ("alarm", ("m-001",))]


def test_params_check_of_the_engine_runs_before_acceptance(rig: Rig) -> None:
    def engine_check(action: str, params: Mapping[str, object]) -> str | None:
        limit = params.get("limit_kw")
        if action == "limit" and not (isinstance(limit, int | float) and limit > 0):
            return f"limit needs params.limit_kw > 0, got {limit!r}"
        return None

    verifier = CommandVerifier(
        rig.verifier.policy, rig.verifier.keys, rig.journal, rig.verifier.clock,
        params_check=engine_check,
    )  # fmt: skip
    bad = verifier.verify(command(action="limit", params={"limit_kw": -1})[0], NOW)
    assert bad.code is RejectCode.BAD_PARAMS and "limit_kw" in bad.reason
    good = verifier.verify(command(action="limit", params={"limit_kw": 80}, ctr=2)[0], NOW)
    assert good.accepted


def test_checks_run_in_the_contract_order(rig: Rig) -> None:
    """A command that breaks several rules is rejected for the earliest one."""
    everything_wrong = command(
        keys=[(STRANGER, "op-a")], aud="gw-9", iat=int(NOW) - 1000, targets=["m-003"]
    )[0]
    assert rig.verify(everything_wrong).code is RejectCode.BAD_SIGNATURE
    wrong_aud_and_expired = command(aud="gw-9", iat=int(NOW) - 1000)[0]
    assert rig.verify(wrong_aud_and_expired).code is RejectCode.WRONG_AUDIENCE
    expired_and_protected = command(iat=int(NOW) - 1000, targets=["m-003"])[0]
    assert rig.verify(expired_and_protected).code is RejectCode.EXPIRED
    assert rig.verify(command(ctr=3)[0]).accepted
    stale_and_protected = command(ctr=2, targets=["m-003"])[0]
    assert rig.verify(stale_and_protected).code is RejectCode.STALE_COUNTER
    role_and_protected = command(ctr=4, role="VIEWER", keys=[(OPERATOR_B, "op-b")],
                                 targets=["m-003"])[0]  # fmt: skip
    assert rig.verify(role_and_protected).code is RejectCode.INSUFFICIENT_ROLE


# ------------------------------------------------------------------------ durability


def test_persisted_counter_and_seen_ids_survive_reopen(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = tmp_path / "audit.db"
    first, cmd = command(ctr=41)
    with Journal.open(path) as journal:
        assert CommandVerifier.from_config(config, journal).verify(first, NOW).accepted
    with Journal.open(path) as journal:
        verifier = CommandVerifier.from_config(config, journal)
        assert journal.last_counter("op-a") == 41
        assert verifier.verify(first, NOW + 1).code is RejectCode.REPLAYED
        assert verifier.verify(command(ctr=41)[0], NOW + 1).code is RejectCode.STALE_COUNTER
        assert verifier.verify(command(ctr=42)[0], NOW + 1).accepted
        pending = journal.pending()
        assert len(pending) == 2 and pending[0].cmd == cmd  # oldest first
    assert verify_journal_file(path).ok


_KILLED_AFTER_ACCEPT = """
import os, signal, sys, time
from gateway.control.commands import CommandVerifier, Journal
from gateway.config.loader import load_config
config = load_config(sys.argv[1])
journal = Journal.open(sys.argv[2])
decision = CommandVerifier.from_config(config, journal).verify(
    open(sys.argv[3], "rb").read(), float(sys.argv[4])
)
assert decision.accepted, decision.reason
# The relay would be switched now; the process dies first, with no chance to clean up.
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_between_accepted_and_action_leaves_a_pending_command_not_a_second_action(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    path = tmp_path / "audit.db"
    message, cmd = command(ctr=1)
    (tmp_path / "cmd.cose").write_bytes(message)
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_ACCEPT, str(config.source_file), str(path),
         str(tmp_path / "cmd.cose"), str(NOW)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    with Journal.open(path) as journal:
        [pending] = journal.pending()
        assert pending.cmd == cmd and pending.kid == "op-a" and pending.outcomes == 0
        assert pending.details["action"] == "trip"
        # The broker redelivers the same message after the restart: it must not act again.
        verifier = CommandVerifier.from_config(config, journal)
        assert verifier.verify(message, NOW + 5).code is RejectCode.REPLAYED
        # The daemon reports the interrupted command instead.
        journal.record_outcome(
            cmd, "failed", "interrupted by a restart before acting; not re-executed",
            now_ms=int(NOW * 1000) + 6000,
        )  # fmt: skip
        assert journal.pending() == []
    assert verify_journal_file(path).ok


def test_journal_refuses_to_rewrite_history(rig: Rig) -> None:
    assert rig.verify(command()[0]).accepted
    conn = rig.journal._connection()
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE journal SET kind = 'rejected' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM journal WHERE seq = 1")


def test_outcome_for_a_command_never_accepted_is_refused(rig: Rig) -> None:
    message, cmd = command(targets=["m-003"])
    rig.verify(message)
    with pytest.raises(ValueError, match="never accepted"):
        rig.journal.record_outcome(cmd, "executed", "x", now_ms=0)


# ------------------------------------------------------------------------ keys and roles


def test_only_operator_holds_control() -> None:
    assert allowed_actions("OPERATOR") >= {"trip", "close", "limit", "protect", "planned_outage"}
    # An ENGINEER switches nothing; planning an outage and asking for a replay are granted by
    # role. A VIEWER may only ask for messages again; SECADM administers keys, nothing else.
    assert allowed_actions("ENGINEER") == frozenset({"planned_outage", "replay"})
    assert allowed_actions("VIEWER") == frozenset({"replay"})
    assert allowed_actions("SECADM") == frozenset()


def test_key_table_from_config(tmp_path: Path) -> None:
    table = KeyTable.from_config(_config(tmp_path))
    assert set(table.operators) == {b"op-a", b"op-b", b"eng-1"}
    assert table.protected_meters == frozenset({"m-003"})
    assert len(table.groups["feeder-a"]) == 12


# ------------------------------------------------------------------------ the clock


def test_kernel_time_state_is_read_from_the_real_kernel() -> None:
    state = read_kernel_time_state()
    if sys.platform.startswith("linux"):
        assert state is not None
        assert state.maxerror_us >= 0 and 0 <= state.state <= 5
        assert state.synchronised() == (
            state.state != TIME_ERROR and not state.status & STA_UNSYNC and
            state.maxerror_us <= 500_000 and not state.status & 0x1000
        )  # fmt: skip
    else:  # pragma: no cover
        assert state is None


@pytest.mark.parametrize(
    ("state", "trusted"),
    [
        (SYNCED, True),
        (UNSYNCED, False),
        (KernelTimeState(0, STA_UNSYNC, 10, 10), False),  # flag set, small error: not trusted
        (KernelTimeState(0, 0, 2_000_000, 10), False),  # synced long ago, error has grown
        (KernelTimeState(TIME_ERROR, 0, 10, 10), False),
        (None, False),  # no adjtimex at all
    ],
)
def test_trusted_clock_decision(state: KernelTimeState | None, trusted: bool) -> None:
    assert TrustedClock(False, probe=lambda: state).trusted() is trusted
    assert TrustedClock(True, probe=lambda: state).trusted() is True


def test_kernel_probe_is_cached_for_a_second() -> None:
    calls: list[int] = []
    ticks = iter([0.0, 0.5, 1.2])

    def probe() -> KernelTimeState:
        calls.append(1)
        return SYNCED

    clock = TrustedClock(False, probe=probe, monotonic=lambda: next(ticks))
    clock.trusted()
    clock.trusted()
    clock.trusted()
    assert len(calls) == 2


# ------------------------------------------------------------------------ signed results


def test_signed_result_round_trip_through_the_store(tmp_path: Path) -> None:
    key = _key(20)
    signer = ResultSigner(key, GW)
    cmd = bytes(range(16))
    with Store.open(tmp_path / "store.db") as store:
        seq = store.enqueue(
            signer.outbox_message(
                topic_prefix="mtr/v1", epoch=store.epoch, ts=1_767_225_600_123, cmd=cmd,
                status="rejected", reason="protected_meter: m-003 is protected",
            )
        )  # fmt: skip
        [row] = store.pending(10)
    assert row.topic == f"mtr/v1/{GW}/cmd/result" and row.qos == 1 and row.seq == seq
    result = read_result(row.payload, raw_public_key(key))
    assert result.cmd == cmd and result.status == "rejected"
    assert result.reason.startswith("protected_meter:") and result.signed_by == GW
    assert result.payload["seq"] == seq and result.payload["gw"] == GW
    # Deterministic: a re-send is byte-identical.
    again = signer.sign(Envelope(GW, store.epoch, seq, 1_767_225_600_123), cmd, "rejected",
                        "protected_meter: m-003 is protected")  # fmt: skip
    assert again == row.payload
    with pytest.raises(ResultError, match="signature invalid"):
        read_result(row.payload, raw_public_key(_key(21)))
    message = cose.decode(row.payload)
    assert isinstance(message, cose.Sign1Message)
    assert decode_message(message.payload)["cmd"] == cmd


def test_audit_head_is_signed_on_the_result_topic_and_not_taken_for_a_result(
    rig: Rig, tmp_path: Path
) -> None:
    for ctr in range(1, 4):
        rig.verify(command(ctr=ctr, action="alarm")[0], NOW + ctr)
    head, records = rig.journal.head(), rig.journal.record_count()
    assert records == head.seq == 6  # received + verdict per command
    key = _key(20)
    with Store.open(tmp_path / "store.db") as store:
        store.enqueue(ResultSigner(key, GW).audit_head_message(
            topic_prefix="mtr/v1", epoch=store.epoch, ts=1_767_225_600_123, head=head,
            records=records))  # fmt: skip
        [row] = store.pending(10)
    assert row.topic == f"mtr/v1/{GW}/cmd/result" and row.qos == 1
    published = read_result_topic(row.payload, raw_public_key(key))
    assert isinstance(published, AuditHeadMessage)
    assert (published.head, published.records, published.signed_by) == (head, records, GW)
    assert verify_journal_file(rig.path, (published.head.seq, published.head.hash)).ok
    with pytest.raises(ResultError, match="not a command result"):
        read_result(row.payload, raw_public_key(key))
    with pytest.raises(ResultError, match="signature invalid"):
        read_result_topic(row.payload, raw_public_key(_key(21)))


def test_verify_chain_passes_on_a_busy_journal(rig: Rig) -> None:
    for ctr in range(1, 30):
        rig.verify(command(ctr=ctr, action="alarm")[0], NOW + ctr)
        rig.verify(b"\xd2junk", NOW + ctr)
    report = verify_journal_file(rig.path)
    assert report.ok and report.records == len(rig.journal.records())
    assert report.head == rig.journal.head()
    assert os.path.getsize(rig.path) > 0


def _spoiled(key: SigningKey, kid: bytes, **changes: object) -> tuple[bytes, bytes]:
    """A signed command whose payload fields are changed after building (so that it breaks the
    envelope's rules) and signed again: (message, its id)."""
    message, cmd = command(ctr=7)
    payload = {**cbor2.loads(cose.decode(message).payload), **changes}
    return cose.sign1(cbor2.dumps(payload), key, protected=cose.ed25519_protected(kid)), cmd


@pytest.mark.parametrize(("changes", "said"), [
    ({"exp": int(NOW) - 10}, "'exp'"),
    ({"action": "self_destruct"}, "'action'"),
    ({"targets": "m-001"}, "'targets'"),
], ids=["exp before iat", "unknown action", "targets not a list"])
def test_a_malformed_command_with_a_readable_id_is_answered(
        rig: Rig, changes: dict[str, object], said: str) -> None:
    """Issue 17: whatever makes a payload malformed, a readable id gets a rejection naming it
    (the daemon signs and publishes the result for every decision with a command id)."""
    message, cmd = _spoiled(OPERATOR_A, b"op-a", **changes)
    decision = rig.verify(message)
    assert (decision.status, decision.code, decision.command_id) == (
        "rejected", RejectCode.MALFORMED, cmd)
    assert said in decision.reason
    # The signature held: journaled in full (bytes and verdict), under the command's id.
    assert rig.last_two() == ("received", "rejected")
    assert all(r.cmd == cmd for r in rig.journal.records())
    assert rig.journal.records()[-1].details["authentic"] is True
    # Nothing was spent: the same counter is still usable by a correct command.
    assert rig.verify(command(ctr=7)[0]).accepted


def test_an_unsigned_malformed_command_is_answered_but_journaled_as_junk(rig: Rig) -> None:
    message, cmd = _spoiled(STRANGER, b"op-a", action="self_destruct")
    decision = rig.verify(message)
    assert (decision.code, decision.command_id) == (RejectCode.MALFORMED, cmd)
    [record] = rig.journal.records()
    assert record.details["authentic"] is False and record.cmd == cmd


def test_a_payload_without_a_readable_id_gets_no_answer(rig: Rig) -> None:
    for payload in ({"v": 1, "id": b"short"}, [1, 2], {"v": 1}):
        message = cose.sign1(cbor2.dumps(payload), OPERATOR_A,
                             protected=cose.ed25519_protected(b"op-a"))
        decision = rig.verify(message)
        assert (decision.code, decision.command_id) == (RejectCode.MALFORMED, None)


# ------------------------------------------------------------------------------ replay


def _replay(ctr: int, params: Mapping[str, object] | None = None, *,
            targets: Sequence[str] | Mapping[str, str] = (GW,), role: str = "VIEWER",
            keys: Sequence[tuple[SigningKey, str]] = ((OPERATOR_B, "op-b"),),
            iat: int = int(NOW)) -> bytes:
    wanted = {"epoch": 7, "from_seq": 10, "to_seq": 19} if params is None else params
    return command(keys=keys, action="replay", targets=targets, ctr=ctr, role=role,
                   params=wanted, iat=iat)[0]


def test_a_viewer_operator_or_engineer_may_ask_for_a_replay(rig: Rig) -> None:
    for i, (keys, role) in enumerate([((OPERATOR_B, "op-b"), "VIEWER"),
                                      ((OPERATOR_A, "op-a"), "OPERATOR"),
                                      ((ENGINEER, "eng-1"), "ENGINEER")], start=1):
        decision = rig.verify(_replay(i, keys=[keys], role=role))
        assert decision.accepted, decision.reason
        assert decision.command is not None and decision.command.meters == ()
        assert dict(decision.command.params) == {"epoch": 7, "from_seq": 10, "to_seq": 19}


@pytest.mark.parametrize(("params", "targets", "code", "said"), [
    ({"epoch": 7, "from_seq": 10}, [GW], RejectCode.BAD_PARAMS, "'to_seq'"),
    ({"epoch": 7, "from_seq": 10, "to_seq": 9}, [GW], RejectCode.BAD_PARAMS, "empty"),
    ({"epoch": 7, "from_seq": 0, "to_seq": 9}, [GW], RejectCode.BAD_PARAMS, "empty"),
    ({"epoch": -1, "from_seq": 1, "to_seq": 9}, [GW], RejectCode.BAD_PARAMS, "'epoch'"),
    ({"epoch": 7, "from_seq": 1, "to_seq": True}, [GW], RejectCode.BAD_PARAMS, "'to_seq'"),
    ({"epoch": 7, "from_seq": 1, "to_seq": 9, "meter": "m-001"}, [GW], RejectCode.BAD_PARAMS,
     "unknown"),
    ({"epoch": 7, "from_seq": 2, "to_seq": 10_002}, [GW], RejectCode.BAD_PARAMS,
     "replay_max_messages = 10000"),
    (None, ["m-001"], RejectCode.UNKNOWN_TARGET, f"targets = [{GW!r}]"),
    (None, {"group": "feeder-a"}, RejectCode.UNKNOWN_TARGET, "the gateway itself"),
], ids=["no to_seq", "backwards", "seq 0", "negative epoch", "bool", "unknown param",
        "too many", "a meter", "a group"])
def test_a_replay_out_of_shape_is_rejected_with_the_reason(
        rig: Rig, params: Mapping[str, object] | None, targets: Sequence[str] | Mapping[str, str],
        code: RejectCode, said: str) -> None:
    decision = rig.verify(_replay(1, params, targets=targets))
    assert decision.code is code and said in decision.reason, decision.reason


def test_replays_are_rate_limited_for_the_whole_gateway(rig: Rig) -> None:
    """replay_per_minute (default 6) counts accepted replays of every key together."""
    for ctr in range(1, 4):
        assert rig.verify(_replay(ctr), NOW + ctr).accepted
    for ctr in range(1, 4):
        assert rig.verify(_replay(ctr, keys=[(ENGINEER, "eng-1")], role="ENGINEER"),
                          NOW + 3 + ctr).accepted
    refused = rig.verify(_replay(10), NOW + 10)
    assert refused.code is RejectCode.RATE_LIMITED and "replay_per_minute = 6" in refused.reason
    # Other commands are not counted against replays, nor replays against the key's own limit.
    assert rig.verify(command(ctr=11, action="alarm", targets=["m-001"])[0], NOW + 11).accepted
    assert rig.verify(_replay(12, iat=int(NOW) + 62), NOW + 62).accepted  # the window moved on

