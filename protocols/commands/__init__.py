"""Signed commands on the wire (DESIGN.md §6), sans-IO: what the gateway and ``gwtool`` both speak.

* :mod:`.envelope` — the command payload inside a COSE message: build and parse, by one set of
  rules, so a tool cannot make a command the gateway would reject as malformed.
* :mod:`.results` — signed results and audit chain heads on ``P/G/cmd/result``: sign and read.
* :mod:`.audit_chain` — the audit journal's record hashes, chain heads and chain verification.
* :mod:`.keys` — Ed25519 private keys from PEM bytes, public keys in any accepted spelling.
* :mod:`.signing` — a command envelope signed by one or two keys (``gwtool``, ``edge-central``).

No files, sockets or clocks: callers read key files and journal databases, pass the current time,
and publish the bytes (the h11 model, as for :mod:`protocols.dlt645`). The COSE layer itself is
:mod:`protocols.cose`.
"""

from .audit_chain import (
    AUDIT_APPLICATION_ID,
    CHAIN_COLUMNS,
    GENESIS_HASH,
    ChainHead,
    ChainProblem,
    ChainReport,
    encode_details,
    parse_head,
    record_hash,
    verify_chain,
)
from .envelope import (
    ACTIONS,
    ROLES,
    TRIPPING_ACTIONS,
    CommandEnvelope,
    EnvelopeError,
    GroupTarget,
    MeterTargets,
    build_envelope,
    new_command_id,
    parse_envelope,
)
from .keys import PublicKeyError, parse_private_key, parse_public_key, raw_public_key
from .results import (
    RESULT_QOS,
    AuditHeadMessage,
    CommandResult,
    ResultError,
    read_result,
    read_result_topic,
    sign_audit_head,
    sign_result,
)
from .signing import sign_command

__all__ = [
    "ACTIONS",
    "AUDIT_APPLICATION_ID",
    "CHAIN_COLUMNS",
    "GENESIS_HASH",
    "RESULT_QOS",
    "ROLES",
    "TRIPPING_ACTIONS",
    "AuditHeadMessage",
    "ChainHead",
    "ChainProblem",
    "ChainReport",
    "CommandEnvelope",
    "CommandResult",
    "EnvelopeError",
    "GroupTarget",
    "MeterTargets",
    "PublicKeyError",
    "ResultError",
    "build_envelope",
    "encode_details",
    "new_command_id",
    "parse_envelope",
    "parse_head",
    "parse_private_key",
    "parse_public_key",
    "raw_public_key",
    "read_result",
    "read_result_topic",
    "record_hash",
    "sign_audit_head",
    "sign_command",
    "sign_result",
    "verify_chain",
]
