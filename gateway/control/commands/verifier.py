"""The command verifier: every check between bytes off MQTT and a relay, in the contract's order,
failing closed (DESIGN.md §6).

1. **size** — over the limit, or empty: rejected before any parsing.
2. **decode limits** — one tagged COSE_Sign1/COSE_Sign within the limits of
   :mod:`protocols.cose`, carrying a well-formed command payload (:mod:`.envelope`). A payload
   refused here still has its id read alone (``claimed_command_id``) so that it is answered,
   and its signatures checked so that an authentic one is journaled in full.
3. **algorithm and key** — protected EdDSA, a kid the key table knows, each signer once.
4. **signature** — every signature, over the bytes as received, external AAD empty.
5. **audience** — ``aud`` is this gateway's id.
6. **freshness** — ``exp − iat`` within ``max_age_s``; with trusted time, ``iat`` not in the
   future (beyond a small skew) and ``exp`` not passed. Without trusted time ``trip`` and
   ``limit`` are refused and other actions are journaled as "freshness unchecked".
7. **counter and replay** — the command id was never spent, and the issuing key's counter is
   above the last one spent.
8. **role** — every signer holds the claimed role, and the role may carry the action
   (IEC 62351-8, :mod:`.keys`).
9. **interlocks** — targets exist (for ``planned_outage`` a ``{"group": id}`` may name an area;
   ``replay`` targets the gateway itself and has its own checks, :mod:`.replay`);
   params pass the engine's check (``planned_outage``: :mod:`.planned`'s); no protected meter is tripped;
   every meter can carry the action out (the daemon's ``relay_check``: a Modbus meter whose
   profile declares no relay cannot be tripped or closed); at most ``max_meters_per_command`` meters; a trip or limit reaching ``two_person_threshold``
   meters carries two distinct operators' signatures; the issuing key is within its rate limit.

The first failing check decides, and its code and reason are journaled with the received message
in one transaction — in full (two records, ``received`` with the bytes and ``rejected``) once
every signature has verified. A message rejected *before* that (steps 1–4: anyone who may publish
on the topic can send it) is journaled as one ``rejected`` record holding its SHA-256, size and
reason, and only within ``[commands] unauthenticated_journal_per_minute``; beyond that budget it
is counted, not journaled (:mod:`.junk`), so junk cannot fill the disk. A command that passed step 7 spends its counter and id whether it is then
accepted or rejected (same transaction as the verdict): an authentic command refused by a role or
an interlock must not become acceptable later by being sent again.

Nothing in a rejected command is acted on, and :meth:`CommandVerifier.verify` only returns after
the verdict is durable. If the journal cannot be written it raises :class:`JournalError`, and the
caller must not act.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from gateway.control.commands.clock import TrustedClock
from gateway.control.commands.journal import (
    Journal,
    JournalEntry,
    ReplayConflictError,
    ReplayMark,
)
from gateway.control.commands.junk import JournalBudget, JunkStats
from gateway.control.commands.keys import (
    ACTION_ROLES,
    KeyTable,
    OperatorKey,
    UnknownTargetError,
    allowed_actions,
    roles_for,
)
from gateway.control.commands.planned import ACTION as PLANNED_OUTAGE
from gateway.control.commands.planned import PlannedOutages
from gateway.control.commands.planned import check_params as check_planned_params
from gateway.control.commands.replay import ACTION as REPLAY
from gateway.control.commands.replay import check_params as check_replay_params
from gateway.control.commands.replay import check_targets as check_replay_targets
from protocols import cose
from protocols.commands.envelope import (
    TRIPPING_ACTIONS,
    CommandEnvelope,
    EnvelopeError,
    GroupTarget,
    claimed_command_id,
    parse_envelope,
)

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig


class RejectCode(enum.StrEnum):
    """Why a command was rejected; the code starts the result's ``reason`` text."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    BAD_ALGORITHM = "bad_algorithm"
    UNKNOWN_KEY = "unknown_key"
    DUPLICATE_SIGNER = "duplicate_signer"
    BAD_SIGNATURE = "bad_signature"
    WRONG_AUDIENCE = "wrong_audience"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    UNTRUSTED_CLOCK = "untrusted_clock"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    STALE_COUNTER = "stale_counter"
    INSUFFICIENT_ROLE = "insufficient_role"
    UNKNOWN_TARGET = "unknown_target"
    BAD_PARAMS = "bad_params"
    PROTECTED_METER = "protected_meter"
    TOO_MANY_METERS = "too_many_meters"
    TWO_PERSON_REQUIRED = "two_person_required"
    RATE_LIMITED = "rate_limited"
    NO_RELAY = "no_relay"


#: A check the load-control engine plugs in: (action, params) → None if acceptable, else a
#: sentence saying what is wrong. Runs before acceptance, so bad params never spend a command.
ParamsCheck = Callable[[str, Mapping[str, object]], str | None]

#: What the daemon knows about the meters' relays: (action, meters) → None if every meter can
#: carry the action out, else a sentence naming the meter and what to fix. Runs with the
#: interlocks, so a trip of a meter that has no relay is *rejected* (journaled as such) and
#: never journaled as accepted, let alone executed.
RelayCheck = Callable[[str, tuple[str, ...]], str | None]


@dataclass(frozen=True, slots=True)
class VerifierPolicy:
    """The limits the verifier applies. ``from_config`` takes them from ``[gateway]`` and
    ``[commands]`` (``rate_limit_per_minute`` → ``rate_limit_count``); the rest are defaults
    until the config grows keys for them.

    ``clock_skew_s``: how far ``iat`` may lie in the future (clocks of two NTP-synchronised hosts
    still differ by milliseconds; seconds cover a slow signing laptop). ``rate_limit_count``
    accepted commands per issuing key per ``rate_limit_window_s``.
    """

    gateway_id: str
    max_message_bytes: int = 64 * 1024
    max_age_s: int = 120
    clock_skew_s: int = 5
    max_meters_per_command: int = 50
    two_person_threshold: int = 10
    rate_limit_count: int = 30
    rate_limit_window_s: float = 60.0
    max_signatures: int = 4
    unauthenticated_journal_per_minute: int = 60
    replay_per_minute: int = 6
    replay_max_messages: int = 10000

    @classmethod
    def from_config(cls, config: GatewayConfig, **overrides: object) -> VerifierPolicy:
        c = config.commands
        values: dict[str, object] = {
            "gateway_id": config.gateway.id,
            "max_age_s": c.max_age_s,
            "max_meters_per_command": c.max_meters_per_command,
            "two_person_threshold": c.two_person_threshold,
            "rate_limit_count": c.rate_limit_per_minute,
            "unauthenticated_journal_per_minute": c.unauthenticated_journal_per_minute,
            "replay_per_minute": c.replay_per_minute,
            "replay_max_messages": c.replay_max_messages,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """An accepted command, with everything the engine needs and nothing it must re-check.

    ``id``; ``issuer`` (kid of the first signer, whose counter ``ctr`` is); ``signers`` (all
    kids, distinct); ``role``; ``action``; ``group`` (when targeted by group); ``meters`` (the
    targets expanded, in order); ``trippable`` (``meters`` minus protected ones — a limit never
    trips a protected meter); ``params``; ``iat``/``exp``; ``freshness_checked`` (False when
    accepted without trusted time — never for trip or limit); ``message_sha256``.
    """

    id: bytes
    issuer: str
    signers: tuple[str, ...]
    role: str
    action: str
    group: str | None
    meters: tuple[str, ...]
    trippable: tuple[str, ...]
    params: Mapping[str, object]
    iat: int
    exp: int
    ctr: int
    freshness_checked: bool
    message_sha256: bytes


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one message, already journaled.

    ``status`` ``accepted`` | ``rejected``; ``code`` (None when accepted); ``reason`` (the
    result's reason text: ``"code: detail"``, empty when accepted); ``command_id`` (from the
    payload when it could be read — for a rejection before the signature check it is *claimed*,
    not proven); ``command`` (only when accepted); ``journal_seq`` (the verdict record; None for
    an unauthenticated rejection over the journal budget, which was only counted).
    """

    status: Literal["accepted", "rejected"]
    code: RejectCode | None
    reason: str
    command_id: bytes | None
    command: VerifiedCommand | None
    journal_seq: int | None

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


class _Reject(Exception):
    def __init__(self, code: RejectCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(slots=True)
class _Seen:
    """What is known about the message so far, for the journal and the result."""

    sha256: bytes
    size: int
    envelope: CommandEnvelope | None = None
    #: The command id the payload carries (the envelope's, or read alone from a malformed one).
    claimed_id: bytes | None = None
    signers: tuple[OperatorKey, ...] = ()
    spend: ReplayMark | None = None


_RECEIVED_BYTES_KEPT: Final = 64 * 1024
#: Longest reason kept for an unauthenticated rejection: its detail may quote what the sender
#: chose (a key id), and neither the journal nor the signed result should carry that at length.
_UNAUTHENTICATED_REASON_CHARS: Final = 200


class CommandVerifier:
    """Verifies commands against a key table and journals every verdict.

    ``params_check`` is the load-control engine's validation of ``params`` (see
    :data:`ParamsCheck`); without it params are only checked for shape. ``relay_check`` is the
    daemon's knowledge of the meters' relays (:data:`RelayCheck`). ``planned`` holds the planned
    outages in force, so that a ``planned_outage`` cancel can only name one that exists.
    """

    def __init__(
        self,
        policy: VerifierPolicy,
        keys: KeyTable,
        journal: Journal,
        clock: TrustedClock,
        *,
        params_check: ParamsCheck | None = None,
        relay_check: RelayCheck | None = None,
        planned: PlannedOutages | None = None,
    ) -> None:
        self.policy = policy
        self.planned = planned if planned is not None else PlannedOutages(None)
        self.relay_check = relay_check
        self.keys = keys
        self.journal = journal
        self.clock = clock
        self.params_check = params_check
        self._limits = cose.DecodeLimits(
            max_message_bytes=policy.max_message_bytes, max_signatures=policy.max_signatures
        )
        self._junk_budget = JournalBudget(policy.unauthenticated_journal_per_minute)
        #: Unauthenticated rejections since start (published in the health message).
        self.junk = JunkStats()
        self._skipped_since_journaled = 0

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        journal: Journal,
        *,
        clock: TrustedClock | None = None,
        params_check: ParamsCheck | None = None,
        relay_check: RelayCheck | None = None,
        planned: PlannedOutages | None = None,
    ) -> CommandVerifier:
        return cls(
            VerifierPolicy.from_config(config),
            KeyTable.from_config(config),
            journal,
            clock
            if clock is not None
            else TrustedClock.from_config(config.commands),
            params_check=params_check,
            relay_check=relay_check,
            planned=planned,
        )

    # ---------------------------------------------------------------- the checks

    def verify(self, message: bytes, now: float) -> Decision:
        """Check ``message`` (the MQTT payload as received) at UTC time ``now`` (seconds), journal
        the verdict, and return it. Raises :class:`JournalError` only if the journal cannot be
        written — then nothing may be acted on."""
        message = bytes(message)
        seen = _Seen(sha256=hashlib.sha256(message).digest(), size=len(message))
        now_ms = math.floor(now * 1000)
        try:
            command = self._check(message, now, seen)
        except _Reject as rejection:
            if not seen.signers:
                return self._journal_unauthenticated(seen, rejection, now)
            return self._journal_rejection(message, seen, rejection, now_ms)
        try:
            records = self.journal.append(
                [self._received(message, seen), self._accepted(command)],
                now_ms=now_ms,
                replay=seen.spend,
            )
        except ReplayConflictError as exc:
            seen.spend = None
            return self._journal_rejection(
                message, seen, _Reject(RejectCode.REPLAYED, str(exc)), now_ms
            )
        return Decision("accepted", None, "", command.id, command, records[-1].seq)

    def _check(self, message: bytes, now: float, seen: _Seen) -> VerifiedCommand:
        p = self.policy
        # 1. size
        if not message:
            raise _Reject(RejectCode.TOO_LARGE, "empty message")
        if len(message) > p.max_message_bytes:
            raise _Reject(
                RejectCode.TOO_LARGE,
                f"{len(message)} bytes, over the {p.max_message_bytes}-byte limit",
            )
        # 2. decode limits: the COSE structure, then the payload it carries
        try:
            cose_message = cose.decode(message, self._limits)
        except cose.CoseDecodeError as exc:
            raise _Reject(RejectCode.MALFORMED, str(exc)) from None
        try:
            envelope = parse_envelope(cose_message.payload)
        except EnvelopeError as exc:
            # Still answered when its id can be read, and journaled in full when its signature
            # holds: an authentic but malformed command is an operator's (or a tool's) mistake.
            seen.claimed_id = claimed_command_id(cose_message.payload)
            with contextlib.suppress(_Reject):
                seen.signers = self._check_signatures(cose_message)
            raise _Reject(RejectCode.MALFORMED, str(exc)) from None
        seen.envelope = envelope
        seen.claimed_id = envelope.id
        # 3. algorithm and key id; 4. signature
        signers = self._check_signatures(cose_message)
        seen.signers = signers
        issuer = signers[0]
        # 5. audience
        if envelope.aud != p.gateway_id:
            raise _Reject(
                RejectCode.WRONG_AUDIENCE,
                f"command is for {envelope.aud!r}, this gateway is {p.gateway_id!r}",
            )
        # 6. freshness
        freshness_checked = self._check_freshness(envelope, now)
        # 7. counter and replay window
        if self.journal.seen(envelope.id):
            raise _Reject(
                RejectCode.REPLAYED, f"command id {envelope.id.hex()} was already received"
            )
        last = self.journal.last_counter(issuer.kid)
        if last is not None and envelope.ctr <= last:
            raise _Reject(
                RejectCode.STALE_COUNTER,
                f"counter {envelope.ctr} of key {issuer.kid!r} is not above the last one "
                f"used ({last}); sign with --ctr {last + 1} or higher",
            )
        seen.spend = ReplayMark(kid=issuer.kid, ctr=envelope.ctr, cmd=envelope.id)
        # 8. role
        for signer in signers:
            if envelope.role not in signer.roles:
                raise _Reject(
                    RejectCode.INSUFFICIENT_ROLE,
                    f"key {signer.kid!r} may not claim role {envelope.role} "
                    f"(it holds {', '.join(sorted(signer.roles))})",
                )
        if envelope.action not in allowed_actions(envelope.role):
            may = " or ".join(sorted(roles_for(envelope.action)))
            why = "" if envelope.action in ACTION_ROLES else " (IEC 62351-8: it lacks the CONTROL right)"
            raise _Reject(
                RejectCode.INSUFFICIENT_ROLE,
                f"role {envelope.role} may not {envelope.action}{why}; sign as {may}",
            )
        # 9. interlocks
        meters, trippable = self._check_interlocks(envelope, signers, now)
        return VerifiedCommand(
            id=envelope.id,
            issuer=issuer.kid,
            signers=tuple(s.kid for s in signers),
            role=envelope.role,
            action=envelope.action,
            group=envelope.targets.group if isinstance(envelope.targets, GroupTarget) else None,
            meters=meters,
            trippable=trippable,
            params=envelope.params,
            iat=envelope.iat,
            exp=envelope.exp,
            ctr=envelope.ctr,
            freshness_checked=freshness_checked,
            message_sha256=seen.sha256,
        )

    def _check_signatures(self, message: cose.CoseMessage) -> tuple[OperatorKey, ...]:
        layers: list[cose.Headers]
        if isinstance(message, cose.Sign1Message):
            layers = [message.headers]
        else:
            layers = [s.headers for s in message.signatures]
            body = message.headers
            if cose.HEADER_CRIT in body.protected or cose.HEADER_CRIT in body.unprotected:
                raise _Reject(RejectCode.BAD_ALGORITHM, "message body has a 'crit' header")
        signers: list[OperatorKey] = []
        for i, headers in enumerate(layers):
            try:
                headers.require_eddsa()
            except cose.CoseAlgorithmError as exc:
                raise _Reject(RejectCode.BAD_ALGORITHM, str(exc)) from None
            kid = headers.kid
            if kid is None:
                raise _Reject(RejectCode.UNKNOWN_KEY, f"signature {i} carries no key id (kid)")
            key = self.keys.key(kid)
            if key is None:
                raise _Reject(
                    RejectCode.UNKNOWN_KEY,
                    f"key id {_show_kid(kid)} is not in [[operators]] of this gateway",
                )
            for other in signers:
                if other.kid == key.kid or other.public_key == key.public_key:
                    raise _Reject(
                        RejectCode.DUPLICATE_SIGNER,
                        f"key {key.kid!r} signs twice (or shares its public key with "
                        f"{other.kid!r}); two signatures must come from two operators",
                    )
            signers.append(key)
        for i, key in enumerate(signers):
            try:
                if isinstance(message, cose.Sign1Message):
                    message.verify(key.public_key)
                else:
                    message.verify_signature(i, key.public_key)
            except cose.CoseError as exc:
                raise _Reject(
                    RejectCode.BAD_SIGNATURE, f"signature of key {key.kid!r}: {exc}"
                ) from None
        return tuple(signers)

    def _check_freshness(self, envelope: CommandEnvelope, now: float) -> bool:
        p = self.policy
        lifetime = envelope.exp - envelope.iat
        if lifetime > p.max_age_s:
            raise _Reject(
                RejectCode.LIFETIME_TOO_LONG,
                f"exp - iat is {lifetime} s, over max_age_s = {p.max_age_s} s",
            )
        if not self.clock.trusted():
            if envelope.action in TRIPPING_ACTIONS:
                raise _Reject(
                    RejectCode.UNTRUSTED_CLOCK,
                    f"{envelope.action} needs trusted time: {self.clock.why_untrusted()}",
                )
            return False
        if envelope.iat > now + p.clock_skew_s:
            raise _Reject(
                RejectCode.NOT_YET_VALID,
                f"iat {envelope.iat} is {envelope.iat - now:.0f} s in the future; check the "
                "signing host's clock",
            )
        if now >= envelope.exp:
            raise _Reject(
                RejectCode.EXPIRED,
                f"expired {now - envelope.exp:.0f} s ago (exp {envelope.exp})",
            )
        return True

    def _check_interlocks(
        self, envelope: CommandEnvelope, signers: tuple[OperatorKey, ...], now: float
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        p = self.policy
        planned = envelope.action == PLANNED_OUTAGE
        if envelope.action == REPLAY:  # the gateway itself: no meter is touched
            meters: tuple[str, ...] = ()
            self._check_replay(envelope, now)
        else:
            try:
                meters = self.keys.expand(envelope.targets, areas=planned)
            except UnknownTargetError as exc:
                raise _Reject(RejectCode.UNKNOWN_TARGET, str(exc)) from None
            if planned:
                problem = check_planned_params(envelope.params, now, self.planned.windows)
            elif self.params_check is not None:
                problem = self.params_check(envelope.action, envelope.params)
            else:
                problem = None
            if problem is not None:
                raise _Reject(RejectCode.BAD_PARAMS, problem)
        protected = [m for m in meters if m in self.keys.protected_meters]
        if envelope.action == "trip" and protected:
            raise _Reject(
                RejectCode.PROTECTED_METER,
                f"meter(s) {', '.join(protected[:5])} are protected and are never tripped",
            )
        if self.relay_check is not None:
            problem = self.relay_check(envelope.action, meters)
            if problem is not None:
                raise _Reject(RejectCode.NO_RELAY, problem)
        # A planned outage switches nothing: a whole area (hundreds of meters) is its usual size.
        if len(meters) > p.max_meters_per_command and not planned:
            raise _Reject(
                RejectCode.TOO_MANY_METERS,
                f"{len(meters)} meters, over max_meters_per_command = {p.max_meters_per_command}",
            )
        trippable = tuple(m for m in meters if m not in self.keys.protected_meters)
        mass_trip = envelope.action in TRIPPING_ACTIONS and len(trippable) >= p.two_person_threshold
        if mass_trip and len(signers) < 2:
            raise _Reject(
                RejectCode.TWO_PERSON_REQUIRED,
                f"{envelope.action} of {len(trippable)} meters (two_person_threshold = "
                f"{p.two_person_threshold}) needs two operators' signatures (COSE_Sign); "
                "it has one",
            )
        since_ms = math.floor((now - p.rate_limit_window_s) * 1000)
        issued = self.journal.accepted_count(signers[0].kid, since_ms)
        if issued >= p.rate_limit_count:
            raise _Reject(
                RejectCode.RATE_LIMITED,
                f"key {signers[0].kid!r} already issued {issued} accepted commands in the last "
                f"{p.rate_limit_window_s:g} s (limit {p.rate_limit_count})",
            )
        return meters, trippable

    def _check_replay(self, envelope: CommandEnvelope, now: float) -> None:
        """A replay's own interlocks (:mod:`.replay`): it targets this gateway, asks for a range
        within ``replay_max_messages``, and the gateway is within ``replay_per_minute``."""
        p = self.policy
        problem = check_replay_targets(envelope.targets, p.gateway_id)
        if problem is not None:
            raise _Reject(RejectCode.UNKNOWN_TARGET, problem)
        problem = check_replay_params(envelope.params, p.replay_max_messages)
        if problem is not None:
            raise _Reject(RejectCode.BAD_PARAMS, problem)
        since_ms = math.floor((now - p.rate_limit_window_s) * 1000)
        replays = self.journal.accepted_action_count(REPLAY, since_ms)
        if replays >= p.replay_per_minute:
            raise _Reject(
                RejectCode.RATE_LIMITED,
                f"{replays} replays already accepted in the last {p.rate_limit_window_s:g} s "
                f"(replay_per_minute = {p.replay_per_minute}); ask again later",
            )

    # ---------------------------------------------------------------- journaling

    def _journal_rejection(
        self, message: bytes, seen: _Seen, rejection: _Reject, now_ms: int
    ) -> Decision:
        env = seen.envelope
        issuer = seen.signers[0].kid if seen.signers else None
        details: dict[str, object] = {"code": str(rejection.code), "reason": rejection.detail}
        if env is not None:
            details["claimed"] = _claimed(env)
        # Signers are recorded once every signature has verified: then the claims are authentic.
        details["authentic"] = bool(seen.signers)
        if seen.signers:
            details["signers"] = [s.kid for s in seen.signers]
        details["counter_spent"] = seen.spend is not None
        entry = JournalEntry("rejected", cmd=seen.claimed_id, kid=issuer, details=details)
        entries = [self._received(message, seen), entry]
        try:
            records = self.journal.append(entries, now_ms=now_ms, replay=seen.spend)
        except ReplayConflictError:
            # Spent meanwhile by another writer: the rejection still goes on record.
            details["counter_spent"] = False
            records = self.journal.append(entries, now_ms=now_ms)
        return Decision(
            "rejected",
            rejection.code,
            f"{rejection.code}: {rejection.detail}",
            seen.claimed_id,
            None,
            records[-1].seq,
        )

    def _journal_unauthenticated(self, seen: _Seen, rejection: _Reject, now: float) -> Decision:
        """A message no operator's signature vouches for: one record of its digest, size and
        reason, within the budget; over it, only counted. No replay state is spent, and the
        claimed command id is kept (the signed result names it) but nothing else it claims."""
        detail = rejection.detail
        if len(detail) > _UNAUTHENTICATED_REASON_CHARS:
            detail = detail[: _UNAUTHENTICATED_REASON_CHARS - 1] + "…"
        reason = f"{rejection.code}: {detail}"
        cmd = seen.claimed_id
        self.junk.rejected += 1
        if not self._junk_budget.take(now):
            self.junk.unjournaled += 1
            self._skipped_since_journaled += 1
            return Decision("rejected", rejection.code, reason, cmd, None, None)
        details: dict[str, object] = {
            "code": str(rejection.code),
            "reason": detail,
            "size": seen.size,
            "sha256": seen.sha256,
            "authentic": False,
            "counter_spent": False,
        }
        if self._skipped_since_journaled:
            details["unjournaled_before"] = self._skipped_since_journaled
        entry = JournalEntry("rejected", cmd=cmd, details=details)
        [record] = self.journal.append([entry], now_ms=math.floor(now * 1000))
        self._skipped_since_journaled = 0
        return Decision("rejected", rejection.code, reason, cmd, None, record.seq)

    def _received(self, message: bytes, seen: _Seen) -> JournalEntry:
        details: dict[str, object] = {"size": seen.size, "sha256": seen.sha256}
        if seen.size <= _RECEIVED_BYTES_KEPT:
            # The signed bytes themselves: an auditor can re-verify every signature later.
            details["message"] = message
        return JournalEntry("received", cmd=seen.claimed_id, details=details)

    def _accepted(self, command: VerifiedCommand) -> JournalEntry:
        return JournalEntry(
            "accepted",
            cmd=command.id,
            kid=command.issuer,
            details={
                "signers": list(command.signers),
                "role": command.role,
                "action": command.action,
                "group": command.group,
                "meters": list(command.meters),
                "trippable": list(command.trippable),
                "params": command.params,
                "iat": command.iat,
                "exp": command.exp,
                "ctr": command.ctr,
                "freshness_checked": command.freshness_checked,
            },
        )


def _claimed(env: CommandEnvelope) -> dict[str, object]:
    """The payload's fields as claimed (for a rejection the signature may not have held)."""
    return {
        "aud": env.aud,
        "iat": env.iat,
        "exp": env.exp,
        "ctr": env.ctr,
        "role": env.role,
        "action": env.action,
        "targets": env.targets_value(),
    }


def _show_kid(kid: bytes) -> str:
    try:
        text = kid.decode("utf-8")
    except UnicodeDecodeError:
        return f"h'{kid.hex()}'"
    return repr(text) if text.isprintable() else f"h'{kid.hex()}'"
