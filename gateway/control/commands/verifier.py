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

This module runs the checks in order and decides what is journaled when; the checks that need
neither the journal nor the daemon (signatures, freshness) are :mod:`.checks`, the policy, codes
and verdict types :mod:`.verdicts`, and the journal records of a verdict :mod:`.verdict_records`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import TYPE_CHECKING, Final

from gateway.control.commands.checks import check_freshness, check_signatures
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
from gateway.control.commands.verdict_records import (
    Seen,
    accepted_entry,
    claimed,
    received_entry,
)
from gateway.control.commands.verdicts import (
    Decision,
    ParamsCheck,
    Reject,
    RejectCode,
    RelayCheck,
    VerifiedCommand,
    VerifierPolicy,
)
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
        seen = Seen(sha256=hashlib.sha256(message).digest(), size=len(message))
        now_ms = math.floor(now * 1000)
        try:
            command = self._check(message, now, seen)
        except Reject as rejection:
            if not seen.signers:
                return self._journal_unauthenticated(seen, rejection, now)
            return self._journal_rejection(message, seen, rejection, now_ms)
        try:
            records = self.journal.append(
                [received_entry(message, seen), accepted_entry(command)],
                now_ms=now_ms,
                replay=seen.spend,
            )
        except ReplayConflictError as exc:
            seen.spend = None
            return self._journal_rejection(
                message, seen, Reject(RejectCode.REPLAYED, str(exc)), now_ms
            )
        return Decision("accepted", None, "", command.id, command, records[-1].seq)

    def _check(self, message: bytes, now: float, seen: Seen) -> VerifiedCommand:
        p = self.policy
        # 1. size
        if not message:
            raise Reject(RejectCode.TOO_LARGE, "empty message")
        if len(message) > p.max_message_bytes:
            raise Reject(
                RejectCode.TOO_LARGE,
                f"{len(message)} bytes, over the {p.max_message_bytes}-byte limit",
            )
        # 2. decode limits: the COSE structure, then the payload it carries
        try:
            cose_message = cose.decode(message, self._limits)
        except cose.CoseDecodeError as exc:
            raise Reject(RejectCode.MALFORMED, str(exc)) from None
        try:
            envelope = parse_envelope(cose_message.payload)
        except EnvelopeError as exc:
            # Still answered when its id can be read, and journaled in full when its signature
            # holds: an authentic but malformed command is an operator's (or a tool's) mistake.
            seen.claimed_id = claimed_command_id(cose_message.payload)
            with contextlib.suppress(Reject):
                seen.signers = check_signatures(cose_message, self.keys)
            raise Reject(RejectCode.MALFORMED, str(exc)) from None
        seen.envelope = envelope
        seen.claimed_id = envelope.id
        # 3. algorithm and key id; 4. signature
        signers = check_signatures(cose_message, self.keys)
        seen.signers = signers
        issuer = signers[0]
        # 5. audience
        if envelope.aud != p.gateway_id:
            raise Reject(
                RejectCode.WRONG_AUDIENCE,
                f"command is for {envelope.aud!r}, this gateway is {p.gateway_id!r}",
            )
        # 6. freshness
        freshness_checked = check_freshness(envelope, now, p, self.clock)
        # 7. counter and replay window
        if self.journal.seen(envelope.id):
            raise Reject(
                RejectCode.REPLAYED, f"command id {envelope.id.hex()} was already received"
            )
        last = self.journal.last_counter(issuer.kid)
        if last is not None and envelope.ctr <= last:
            raise Reject(
                RejectCode.STALE_COUNTER,
                f"counter {envelope.ctr} of key {issuer.kid!r} is not above the last one "
                f"used ({last}); sign with --ctr {last + 1} or higher",
            )
        seen.spend = ReplayMark(kid=issuer.kid, ctr=envelope.ctr, cmd=envelope.id)
        # 8. role
        for signer in signers:
            if envelope.role not in signer.roles:
                raise Reject(
                    RejectCode.INSUFFICIENT_ROLE,
                    f"key {signer.kid!r} may not claim role {envelope.role} "
                    f"(it holds {', '.join(sorted(signer.roles))})",
                )
        if envelope.action not in allowed_actions(envelope.role):
            may = " or ".join(sorted(roles_for(envelope.action)))
            why = "" if envelope.action in ACTION_ROLES else " (IEC 62351-8: it lacks the CONTROL right)"
            raise Reject(
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
                raise Reject(RejectCode.UNKNOWN_TARGET, str(exc)) from None
            if planned:
                problem = check_planned_params(envelope.params, now, self.planned.windows)
            elif self.params_check is not None:
                problem = self.params_check(envelope.action, envelope.params)
            else:
                problem = None
            if problem is not None:
                raise Reject(RejectCode.BAD_PARAMS, problem)
        protected = [m for m in meters if m in self.keys.protected_meters]
        if envelope.action == "trip" and protected:
            raise Reject(
                RejectCode.PROTECTED_METER,
                f"meter(s) {', '.join(protected[:5])} are protected and are never tripped",
            )
        if self.relay_check is not None:
            problem = self.relay_check(envelope.action, meters)
            if problem is not None:
                raise Reject(RejectCode.NO_RELAY, problem)
        # A planned outage switches nothing: a whole area (hundreds of meters) is its usual size.
        if len(meters) > p.max_meters_per_command and not planned:
            raise Reject(
                RejectCode.TOO_MANY_METERS,
                f"{len(meters)} meters, over max_meters_per_command = {p.max_meters_per_command}",
            )
        trippable = tuple(m for m in meters if m not in self.keys.protected_meters)
        mass_trip = envelope.action in TRIPPING_ACTIONS and len(trippable) >= p.two_person_threshold
        if mass_trip and len(signers) < 2:
            raise Reject(
                RejectCode.TWO_PERSON_REQUIRED,
                f"{envelope.action} of {len(trippable)} meters (two_person_threshold = "
                f"{p.two_person_threshold}) needs two operators' signatures (COSE_Sign); "
                "it has one",
            )
        since_ms = math.floor((now - p.rate_limit_window_s) * 1000)
        issued = self.journal.accepted_count(signers[0].kid, since_ms)
        if issued >= p.rate_limit_count:
            raise Reject(
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
            raise Reject(RejectCode.UNKNOWN_TARGET, problem)
        problem = check_replay_params(envelope.params, p.replay_max_messages)
        if problem is not None:
            raise Reject(RejectCode.BAD_PARAMS, problem)
        since_ms = math.floor((now - p.rate_limit_window_s) * 1000)
        replays = self.journal.accepted_action_count(REPLAY, since_ms)
        if replays >= p.replay_per_minute:
            raise Reject(
                RejectCode.RATE_LIMITED,
                f"{replays} replays already accepted in the last {p.rate_limit_window_s:g} s "
                f"(replay_per_minute = {p.replay_per_minute}); ask again later",
            )

    # ---------------------------------------------------------------- journaling

    def _journal_rejection(
        self, message: bytes, seen: Seen, rejection: Reject, now_ms: int
    ) -> Decision:
        env = seen.envelope
        issuer = seen.signers[0].kid if seen.signers else None
        details: dict[str, object] = {"code": str(rejection.code), "reason": rejection.detail}
        if env is not None:
            details["claimed"] = claimed(env)
        # Signers are recorded once every signature has verified: then the claims are authentic.
        details["authentic"] = bool(seen.signers)
        if seen.signers:
            details["signers"] = [s.kid for s in seen.signers]
        details["counter_spent"] = seen.spend is not None
        entry = JournalEntry("rejected", cmd=seen.claimed_id, kid=issuer, details=details)
        entries = [received_entry(message, seen), entry]
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

    def _journal_unauthenticated(self, seen: Seen, rejection: Reject, now: float) -> Decision:
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
