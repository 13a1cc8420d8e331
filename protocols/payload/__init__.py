r"""CBOR payloads published by the gateway (DESIGN.md §4), sans-IO.

Every message is one CBOR map (RFC 8949) that starts with the same envelope:
``v`` (schema version 1), ``gw`` (gateway id), ``id``, ``seq`` and ``ts`` (gateway UTC time, ms).
The full schema, with an example of each message kind, is ``docs/payloads.cddl``.

Two sequences of messages leave a gateway, and they number themselves differently:

* **Durable** messages (reads, groups, alarms, command results) are committed to the store's
  outbox before they are published and are re-sent until the broker acknowledges them. Their
  ``seq`` is the store sequence assigned at commit, so a consumer subscribed to the durable
  topics can detect a gap, and their ``id`` is ``"{gw}:{epoch:016x}:{seq}"`` — identical on every
  re-send, so consumers dedupe on it. A new store (lost or corrupt database) has a new epoch,
  which is why the epoch is part of the id.
* **Ephemeral** messages (state birth and death, health) are never stored or re-sent. Giving them
  numbers from the durable sequence would put holes in it that no consumer could tell apart from
  lost data, so instead their ``seq`` is the *high-water mark* — the last durable seq committed
  when the message was built — which lets a consumer see how far the durable stream had got
  (e.g. that backlog is still on its way). Their ``id`` adds the kind and the timestamp to stay
  unique: ``"{gw}:{epoch:016x}:{seq}:{kind}:{ts}"``.

Register values are exact: a ``decimal.Decimal`` travels as a CBOR decimal fraction, tag 4
``[exponent, mantissa]`` (RFC 8949 §3.4.4), never as a binary float. The tag is built here
explicitly rather than left to cbor2's default encoder, so a library change cannot silently turn
an energy register into a float. Instantaneous quantities (V, A, kW, PF, Hz) may be floats.

Decoding is a trust boundary (``decode-payload`` is pointed at whatever a field engineer
captured): input that is oversized, not a single well-formed CBOR map, uses tags other than
bignums and decimal fractions, or breaks the envelope raises :class:`PayloadDecodeError` and
nothing else.

Schema v2 (``v: 2``, reads messages only; every other kind stays v1) is the compact form:
meter, quantities, units and exponents declared once per meter in the birth's ``aliases``
(:mod:`~protocols.payload.aliases`), records as bare integer mantissas in table order
(:mod:`~protocols.payload.compact`, decoded by :mod:`~protocols.payload.compact_decode`;
:mod:`~protocols.payload.rows` turns them straight into exact decimal text for a database).
A consumer keeps an :class:`AliasBook`, ``learn``\ s every birth into it, and passes it to
:func:`parse_reads` / :func:`decode_payload`, which read both versions.

The package holds one concern a module: :mod:`~protocols.payload.schema` (limits, value sets,
errors and field checks), :mod:`~protocols.payload.records` (the message parts),
:mod:`~protocols.payload.encode` (builders and the ``hist`` mark) and
:mod:`~protocols.payload.decode` (the trust boundary). The public names are re-exported here
because the store, the committer, the uplink, the analytics, the CLI, the benches and the tests
all use them as ``protocols.payload.<name>``.
"""

from __future__ import annotations

from protocols.payload.aliases import AliasBook, AliasEntry, AliasTable, Binding
from protocols.payload.decode import (
    ReadsMessage,
    decode_message,
    decode_payload,
    parse_reads,
    payload_to_json,
    reads_of,
)
from protocols.payload.encode import (
    build_alarm,
    build_audit_head,
    build_birth,
    build_cmd_result,
    build_death,
    build_group,
    build_health,
    build_reads,
    build_reads_v2,
)
from protocols.payload.hist import mark_hist
from protocols.payload.records import (
    AlarmEvent,
    AreaLoss,
    Envelope,
    GroupTotal,
    ReadRecord,
    Suspect,
    durable_id,
    ephemeral_id,
)
from protocols.payload.rows import ReadRow, decimal_text, record_row, rows_v2
from protocols.payload.schema import (
    ALARM_SEVERITIES,
    ALARM_STATES,
    CMD_STATUSES,
    LOSS_STATUSES,
    MAX_PAYLOAD_BYTES,
    QUALITIES,
    SCHEMA_VERSION,
    JsonValue,
    PayloadDecodeError,
    PayloadEncodeError,
    PayloadError,
)

__all__ = [
    "ALARM_SEVERITIES",
    "ALARM_STATES",
    "CMD_STATUSES",
    "LOSS_STATUSES",
    "MAX_PAYLOAD_BYTES",
    "QUALITIES",
    "SCHEMA_VERSION",
    "AlarmEvent",
    "AliasBook",
    "AliasEntry",
    "AliasTable",
    "AreaLoss",
    "Binding",
    "Envelope",
    "GroupTotal",
    "JsonValue",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "ReadRecord",
    "ReadRow",
    "ReadsMessage",
    "Suspect",
    "build_alarm",
    "build_audit_head",
    "build_birth",
    "build_cmd_result",
    "build_death",
    "build_group",
    "build_health",
    "build_reads",
    "build_reads_v2",
    "decimal_text",
    "decode_message",
    "decode_payload",
    "durable_id",
    "ephemeral_id",
    "mark_hist",
    "parse_reads",
    "payload_to_json",
    "reads_of",
    "record_row",
    "rows_v2",
]
