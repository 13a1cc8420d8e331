"""The journal records of a verdict: what the verifier saw of a message (:class:`Seen`) and the
``received``, ``accepted`` and claimed-fields records built from it.

Split from :mod:`.verifier`: these say *what* is journaled, while the verifier decides *when*
(in full once a signature holds, within a budget before that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.control.commands.journal import JournalEntry, ReplayMark
from gateway.control.commands.keys import OperatorKey
from gateway.control.commands.verdicts import VerifiedCommand
from protocols.commands.envelope import CommandEnvelope


@dataclass(slots=True)
class Seen:
    """What is known about the message so far, for the journal and the result."""

    sha256: bytes
    size: int
    envelope: CommandEnvelope | None = None
    #: The command id the payload carries (the envelope's, or read alone from a malformed one).
    claimed_id: bytes | None = None
    signers: tuple[OperatorKey, ...] = ()
    spend: ReplayMark | None = None


#: Largest message whose bytes the received record keeps (the size limit allows no larger one by
#: default; a policy raising it keeps only digest and size beyond this).
_RECEIVED_BYTES_KEPT: Final = 64 * 1024


def received_entry(message: bytes, seen: Seen) -> JournalEntry:
    """The ``received`` record: digest and size, and the bytes themselves unless too large."""
    details: dict[str, object] = {"size": seen.size, "sha256": seen.sha256}
    if seen.size <= _RECEIVED_BYTES_KEPT:
        # The signed bytes themselves: an auditor can re-verify every signature later.
        details["message"] = message
    return JournalEntry("received", cmd=seen.claimed_id, details=details)


def accepted_entry(command: VerifiedCommand) -> JournalEntry:
    """The ``accepted`` record: everything the command was accepted as, for the auditor."""
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


def claimed(env: CommandEnvelope) -> dict[str, object]:
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
