"""Signed commands: verification, the audit journal and signed results (DESIGN.md §6).

How the daemon uses it, per message taken from ``link.commands``::

    decision = verifier.verify(inbound.payload, time.time())     # journaled before it returns
    commit result(decision.status, decision.reason)               # ResultSigner.outbox_message
    if decision.accepted:
        act on decision.command                                   # the load-control engine
        journal.record_outcome(cmd, "executed" | "failed", reason)
        commit result("executed" | "failed", reason)

and once at start-up, before taking new commands, ``journal.pending()``: commands accepted but
never finished (the process died in between) — report them, do not act on them again.
See docs/commands.md for the envelope, the checks and the journal format.
"""

from gateway.control.commands.clock import KernelTimeState, TrustedClock, read_kernel_time_state
from gateway.control.commands.envelope import (
    ACTIONS,
    ROLES,
    CommandEnvelope,
    EnvelopeError,
    GroupTarget,
    MeterTargets,
    build_envelope,
    parse_envelope,
)
from gateway.control.commands.journal import (
    ChainHead,
    ChainReport,
    Journal,
    JournalEntry,
    JournalError,
    JournalRecord,
    PendingCommand,
    verify_chain,
)
from gateway.control.commands.keys import KeyTable, OperatorKey, allowed_actions, load_private_key
from gateway.control.commands.results import (
    AuditHeadMessage,
    CommandResult,
    ResultError,
    ResultSigner,
    command_topic,
    read_result,
    read_result_topic,
    result_topic,
)
from gateway.control.commands.verifier import (
    CommandVerifier,
    Decision,
    ParamsCheck,
    RejectCode,
    RelayCheck,
    VerifiedCommand,
    VerifierPolicy,
)

__all__ = [
    "ACTIONS",
    "ROLES",
    "AuditHeadMessage",
    "ChainHead",
    "ChainReport",
    "CommandEnvelope",
    "CommandResult",
    "CommandVerifier",
    "Decision",
    "EnvelopeError",
    "GroupTarget",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalRecord",
    "KernelTimeState",
    "KeyTable",
    "MeterTargets",
    "OperatorKey",
    "ParamsCheck",
    "PendingCommand",
    "RejectCode",
    "RelayCheck",
    "ResultError",
    "ResultSigner",
    "TrustedClock",
    "VerifiedCommand",
    "VerifierPolicy",
    "allowed_actions",
    "build_envelope",
    "command_topic",
    "load_private_key",
    "parse_envelope",
    "read_kernel_time_state",
    "read_result",
    "read_result_topic",
    "result_topic",
    "verify_chain",
]
