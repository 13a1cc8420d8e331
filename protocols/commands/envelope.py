"""The command payload: the CBOR map inside a signed command (DESIGN.md §6, contract), sans-IO.

It lives in ``protocols`` because both ends speak it: the daemon's verifier parses it and
``gwtool sign-command`` builds it, by the same rules, without either importing the other.

``v`` (1), ``id`` (16 random bytes), ``aud`` (the gateway id), ``iat`` and ``exp`` (UTC seconds),
``ctr`` (the signing key's counter, strictly increasing), ``role`` (IEC 62351-8 name), ``action``,
``targets`` (a list of meter ids, or ``{"group": id}``) and ``params`` (a map, may be empty).

Parsing is strict and total: an unknown key, a missing one, a wrong type or a value out of range
raises :class:`EnvelopeError` naming the field — a command that cuts power must mean exactly one
thing, so nothing is guessed or defaulted except an absent ``params``.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, get_args

import cbor2

from protocols import cose

Action = Literal[
    "trip",
    "close",
    "allow_close",
    "alarm",
    "limit",
    "cancel",
    "protect",
    "unprotect",
    "planned_outage",
    "replay",
]
Role = Literal["VIEWER", "OPERATOR", "ENGINEER", "SECADM"]

ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
ROLES: Final[tuple[Role, ...]] = get_args(Role)
ENVELOPE_VERSION: Final = 1
COMMAND_ID_BYTES: Final = 16
#: Actions that can open a relay: these need trusted time, count towards the two-person rule and
#: never touch a protected meter.
TRIPPING_ACTIONS: Final = frozenset({"trip", "limit"})

#: Hard bounds of the decoder, below the configurable interlocks: a message this large is not a
#: command (max_meters_per_command tops out at 100000 ids of ≤ 64 characters, far beyond the
#: message size limit anyway).
MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_DEPTH: Final = 8
MAX_ID_LENGTH: Final = 64
_MAX_UINT63: Final = 2**63 - 1  # what SQLite's INTEGER holds; counters and times live there

_KEYS: Final = frozenset(
    {"v", "id", "aud", "iat", "exp", "ctr", "role", "action", "targets", "params"}
)


class EnvelopeError(ValueError):
    """The payload is not a valid command; the message names the field and what it must be."""


@dataclass(frozen=True, slots=True)
class MeterTargets:
    """Targets given as a list of meter ids (``meters``, in the order sent, no duplicates)."""

    meters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """Targets given as one configured group (``group`` id), expanded by the key table."""

    group: str


Targets: TypeAlias = MeterTargets | GroupTarget


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    """A parsed command payload. Fields as in the module docstring; ``params`` is read-only."""

    id: bytes
    aud: str
    iat: int
    exp: int
    ctr: int
    role: Role
    action: Action
    targets: Targets
    params: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    v: int = ENVELOPE_VERSION

    def targets_value(self) -> object:
        """``targets`` as it travels: a list of ids or ``{"group": id}``."""
        if isinstance(self.targets, GroupTarget):
            return {"group": self.targets.group}
        return list(self.targets.meters)

    def to_cbor(self) -> bytes:
        """The payload bytes to sign (field order as in DESIGN.md §6)."""
        return cbor2.dumps(
            {
                "v": self.v,
                "id": self.id,
                "aud": self.aud,
                "iat": self.iat,
                "exp": self.exp,
                "ctr": self.ctr,
                "role": self.role,
                "action": self.action,
                "targets": self.targets_value(),
                "params": _thaw(self.params),
            }
        )


def new_command_id() -> bytes:
    """16 random bytes from the OS CSPRNG: collisions are negligible, guesses useless."""
    return secrets.token_bytes(COMMAND_ID_BYTES)


def build_envelope(
    *,
    aud: str,
    action: str,
    targets: Sequence[str] | Mapping[str, str],
    ctr: int,
    iat: int,
    ttl_s: int,
    role: str = "OPERATOR",
    params: Mapping[str, object] | None = None,
    command_id: bytes | None = None,
) -> CommandEnvelope:
    """A command to sign, checked by the same rules the gateway applies on receipt (so a tool
    cannot produce a command the gateway would reject as malformed)."""
    draft = {
        "v": ENVELOPE_VERSION,
        "id": command_id if command_id is not None else new_command_id(),
        "aud": aud,
        "iat": iat,
        "exp": iat + ttl_s,
        "ctr": ctr,
        "role": role,
        "action": action,
        "targets": dict(targets) if isinstance(targets, Mapping) else list(targets),
        "params": dict(params or {}),
    }
    return parse_envelope(cbor2.dumps(draft))


def claimed_command_id(payload: bytes) -> bytes | None:
    """The ``id`` a payload carries when :func:`parse_envelope` refuses it, or None.

    Why: an operator's console waits for the result naming its command id. A command refused
    for any other field (``exp`` before ``iat``, an unknown action, targets that are not a list)
    must still be answered, so the id is read on its own: a CBOR map within the decoder's limits
    whose ``id`` is :data:`COMMAND_ID_BYTES` bytes. Anything less has no id to answer to."""
    try:
        item = cose.decode_plain(
            payload, max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_DEPTH, what="command payload"
        )
    except cose.CoseDecodeError:
        return None
    if not isinstance(item, Mapping):
        return None
    command_id = item.get("id")
    if isinstance(command_id, bytes) and len(command_id) == COMMAND_ID_BYTES:
        return command_id
    return None


def parse_envelope(payload: bytes) -> CommandEnvelope:
    """The command in ``payload`` (CBOR bytes), or :class:`EnvelopeError`."""
    try:
        item = cose.decode_plain(
            payload, max_bytes=MAX_PAYLOAD_BYTES, max_depth=MAX_DEPTH, what="command payload"
        )
    except cose.CoseDecodeError as exc:
        raise EnvelopeError(str(exc)) from None
    if not isinstance(item, Mapping):
        raise EnvelopeError(f"command payload must be a CBOR map, got {type(item).__name__}")
    for key in item:
        if not isinstance(key, str):
            raise EnvelopeError(f"command payload key {key!r} is not text")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise EnvelopeError(
            f"command payload has unknown field(s) {unknown}; allowed: {sorted(_KEYS)}"
        )
    version = _int(item, "v")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(
            f"command version {version} is not {ENVELOPE_VERSION}; this gateway reads version "
            f"{ENVELOPE_VERSION} commands"
        )
    command_id = _required(item, "id")
    if not isinstance(command_id, bytes) or len(command_id) != COMMAND_ID_BYTES:
        raise EnvelopeError(f"field 'id' must be {COMMAND_ID_BYTES} bytes, got {command_id!r}")
    aud = _text(item, "aud")
    iat = _int(item, "iat")
    exp = _int(item, "exp")
    if exp <= iat:
        raise EnvelopeError(f"field 'exp' ({exp}) must be after 'iat' ({iat})")
    ctr = _int(item, "ctr")
    role = _text(item, "role")
    if role not in ROLES:
        raise EnvelopeError(f"field 'role' is {role!r}; one of {', '.join(ROLES)}")
    action = _text(item, "action")
    if action not in ACTIONS:
        raise EnvelopeError(f"field 'action' is {action!r}; one of {', '.join(ACTIONS)}")
    targets = _targets(_required(item, "targets"))
    params = item.get("params", MappingProxyType({}))
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise EnvelopeError("field 'params' must be a map with text keys")
    return CommandEnvelope(
        v=version,
        id=command_id,
        aud=aud,
        iat=iat,
        exp=exp,
        ctr=ctr,
        role=role,
        action=action,
        targets=targets,
        params=params,
    )


def _required(item: Mapping[str, object], key: str) -> object:
    if key not in item:
        raise EnvelopeError(f"command payload lacks field {key!r}")
    return item[key]


def _int(item: Mapping[str, object], key: str) -> int:
    value = _required(item, key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_UINT63:
        raise EnvelopeError(f"field {key!r} must be an integer 0..2^63-1, got {value!r}")
    return value


def _text(item: Mapping[str, object], key: str) -> str:
    value = _required(item, key)
    if not isinstance(value, str) or not value:
        raise EnvelopeError(f"field {key!r} must be non-empty text, got {value!r}")
    return value


def _target_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise EnvelopeError(
            f"{where} must be an id of 1..{MAX_ID_LENGTH} characters, got {value!r}"
        )
    return value


def _targets(value: object) -> Targets:
    if isinstance(value, Mapping):
        if set(value) != {"group"}:
            raise EnvelopeError(
                f"field 'targets' as a map must be exactly {{'group': id}}, got keys {sorted(map(str, value))}"
            )
        return GroupTarget(_target_id(value["group"], "targets.group"))
    if not isinstance(value, list | tuple) or not value:
        raise EnvelopeError(
            "field 'targets' must be a non-empty list of meter ids or {'group': id}"
        )
    meters = tuple(_target_id(m, f"targets[{i}]") for i, m in enumerate(value))
    if len(set(meters)) != len(meters):
        duplicates = sorted(m for m, n in Counter(meters).items() if n > 1)
        raise EnvelopeError(f"field 'targets' lists meter(s) {duplicates} more than once")
    return MeterTargets(meters)


def _thaw(value: object) -> object:
    """Read-only mappings and tuples from the decoder back into what cbor2 encodes."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return value
