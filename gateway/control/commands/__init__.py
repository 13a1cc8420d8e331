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
See docs/commands.md for the envelope, the checks and the journal format. The wire formats
themselves (command envelope, signed results, the journal's hash chain, key bytes) are sans-IO
and live in :mod:`protocols.commands`, shared with ``gwtool``; ``ChainHead`` is re-exported here
because :meth:`Journal.head` returns it.
"""

from gateway.control.commands.clock import KernelTimeState, TrustedClock, read_kernel_time_state
from gateway.control.commands.journal import (
    Journal,
    JournalEntry,
    JournalError,
    JournalRecord,
    PendingCommand,
)
from gateway.control.commands.keys import KeyTable, OperatorKey, allowed_actions
from gateway.control.commands.results import ResultSigner
from gateway.control.commands.verdicts import (
    Decision,
    ParamsCheck,
    RejectCode,
    RelayCheck,
    VerifiedCommand,
    VerifierPolicy,
)
from gateway.control.commands.verifier import CommandVerifier
from protocols.commands.audit_chain import ChainHead

__all__ = [
    "ChainHead",
    "CommandVerifier",
    "Decision",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalRecord",
    "KernelTimeState",
    "KeyTable",
    "OperatorKey",
    "ParamsCheck",
    "PendingCommand",
    "RejectCode",
    "RelayCheck",
    "ResultSigner",
    "TrustedClock",
    "VerifiedCommand",
    "VerifierPolicy",
    "allowed_actions",
    "read_kernel_time_state",
]
