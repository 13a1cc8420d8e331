"""What the command verifier takes and gives: its policy (the limits, from the config), the
reject codes, the hooks the engine and the daemon plug in, and the verdict it returns.

Split from :mod:`.verifier` so that the engine, the handler and the tests can name a verdict
without reading the checks, and so the checks (:mod:`.checks`, :mod:`.verifier`) share one
vocabulary of rejections.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

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


class Reject(Exception):
    """The first failing check: its code and the detail that becomes the reason text."""

    def __init__(self, code: RejectCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
