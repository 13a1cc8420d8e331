"""Building messages: message parts → CBOR bytes, one ``build_*`` function per message kind.

Every builder stamps the envelope (durable or ephemeral id) and checks the result against
:data:`~protocols.payload.schema.MAX_PAYLOAD_BYTES`. Register values go out as tag-4 decimal
fractions, never as floats; reads messages use the hand-rolled
:func:`protocols.reads_encoder.encode_reads`, and :func:`_build_reads_cbor2` is the same message
through cbor2, kept for the tests that prove the two byte-identical.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import cbor2

from protocols.payload.aliases import Binding, aliases_field
from protocols.payload.compact import encode_reads_v2
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
from protocols.payload.schema import (
    _SHA256_HEX,
    CMD_STATUSES,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    PayloadEncodeError,
    _free_form,
    _number,
    _require_text,
    _require_uint,
)
from protocols.reads_encoder import encode_reads


def _envelope(env: Envelope, message_id: str) -> dict[str, object]:
    return {"v": SCHEMA_VERSION, "gw": env.gw, "id": message_id, "seq": env.seq, "ts": env.ts}


def _durable(env: Envelope) -> dict[str, object]:
    return _envelope(env, durable_id(env.gw, env.epoch, env.seq))


def _ephemeral(env: Envelope, kind: str) -> dict[str, object]:
    return _envelope(env, ephemeral_id(env.gw, env.epoch, env.seq, kind, env.ts))


def _dumps(message: dict[str, object]) -> bytes:
    data = cbor2.dumps(message)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadEncodeError(
            f"message {message.get('id')} would be {len(data)} bytes, over the "
            f"{MAX_PAYLOAD_BYTES}-byte limit; split it"
        )
    return data


def _read_map(record: ReadRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "q": record.q,
        "val": _number(record.val),
        "unit": record.unit,
        "t": record.t,
        "quality": record.quality,
    }
    if record.method is not None:
        out["method"] = record.method
    if record.reasons:
        out["reasons"] = list(record.reasons)
    if record.hist:
        out["hist"] = True
    if record.raw is not None:
        out["raw"] = _number(record.raw)
    if record.rev:
        out["rev"] = record.rev
    if record.sup is not None:
        out["sup"] = list(record.sup)
    return out


def build_reads(env: Envelope, meter: str, reads: Sequence[ReadRecord]) -> bytes:
    """The validated reads of one meter from one poll (topic ``P/G/reads/{meter}``, durable)."""
    _require_text(meter, "meter id")
    if not reads:
        raise PayloadEncodeError(f"meter {meter}: a reads message needs at least one read")
    data = encode_reads(SCHEMA_VERSION, env.gw, durable_id(env.gw, env.epoch, env.seq), env.seq,
                        env.ts, meter, reads)
    if data is not None and len(data) <= MAX_PAYLOAD_BYTES:
        return data
    return _build_reads_cbor2(env, meter, reads)


def build_reads_v2(env: Envelope, binding: Binding, reads: Sequence[ReadRecord]) -> bytes:
    """The same message in schema v2 (:mod:`protocols.payload.compact`): the meter and its
    quantities named by ``binding``, which the birth declares."""
    return encode_reads_v2(env.gw, env.epoch, env.seq, env.ts, binding, reads)


def _build_reads_cbor2(env: Envelope, meter: str, reads: Sequence[ReadRecord]) -> bytes:
    """:func:`build_reads` through ``cbor2``: the reference the direct encoder
    (:mod:`protocols.reads_encoder`) is checked against, and its fallback for what it does not
    write (bignum mantissas) or for a message over the size limit (for its error)."""
    message = _durable(env)
    message["meter"] = meter
    message["reads"] = [_read_map(record) for record in reads]
    return _dumps(message)


def build_alarm(env: Envelope, event: AlarmEvent, *, ephemeral: bool = False) -> bytes:
    """An alarm raise or clear event (topic ``P/G/alarms``), durable — or, with ``ephemeral``,
    the copy sent at once while the store cannot be written (id of kind ``alarm``, ``seq`` the
    last durable seq); the durable event follows once the store works again."""
    message = _ephemeral(env, "alarm") if ephemeral else _durable(env)
    message["kind"] = event.kind
    message["key"] = event.key
    message["state"] = event.state
    message["severity"] = event.severity
    if event.meter is not None:
        message["meter"] = event.meter
    if event.raised is not None:
        message["raised"] = event.raised
    message["details"] = _free_form(dict(event.details), f"alarm {event.key} details")
    return _dumps(message)


def build_group(
    env: Envelope,
    group: str,
    totals: Sequence[GroupTotal] = (),
    loss: AreaLoss | None = None,
) -> bytes:
    """Summation-group totals and, for the group that forms an area's sub-meters, the area's
    reconciliation (topic ``P/G/groups/{group}``, durable)."""
    _require_text(group, "group id")
    if not totals and loss is None:
        raise PayloadEncodeError(f"group {group}: a groups message needs totals or a loss result")
    message = _durable(env)
    message["group"] = group
    if totals:
        message["totals"] = [_group_total_map(total) for total in totals]
    if loss is not None:
        message["loss"] = _loss_map(loss)
    return _dumps(message)


def _group_total_map(total: GroupTotal) -> dict[str, object]:
    out: dict[str, object] = {
        "q": total.q,
        "val": _number(total.val),
        "unit": total.unit,
        "t": total.t,
        "quality": total.quality,
        "coverage": total.coverage,
    }
    if total.missing:
        out["missing"] = list(total.missing)
    if total.day is not None:
        out["day"] = total.day
    return out


def _loss_map(loss: AreaLoss) -> dict[str, object]:
    out: dict[str, object] = {
        "area": loss.area,
        "day": loss.day,
        "status": loss.status,
        "coverage": loss.coverage,
    }
    if loss.input is not None:
        out["input"] = _number(loss.input)
    if loss.output is not None:
        out["output"] = _number(loss.output)
    if loss.loss_pct is not None:
        out["loss_pct"] = loss.loss_pct
    if loss.band_center_pct is not None and loss.band_halfwidth_pct is not None:
        out["band"] = {"center_pct": loss.band_center_pct, "halfwidth_pct": loss.band_halfwidth_pct}
    out["suspects"] = [_suspect_map(s) for s in loss.suspects]
    return out


def _suspect_map(suspect: Suspect) -> dict[str, object]:
    out: dict[str, object] = {
        "meter": suspect.meter,
        "score": suspect.score,
        "evidence": list(suspect.evidence),
    }
    if suspect.details is not None:
        out["details"] = _free_form(dict(suspect.details), f"suspect {suspect.meter}: details")
    return out


def build_cmd_result(env: Envelope, cmd: bytes, status: str, reason: str) -> bytes:
    """The payload of a command result (topic ``P/G/cmd/result``, durable). The caller signs
    these bytes as a COSE_Sign1 (DESIGN.md §6); this module never sees the signature."""
    if not isinstance(cmd, bytes) or len(cmd) != 16:
        raise PayloadEncodeError(f"command id must be 16 bytes, got {cmd!r}")
    if status not in CMD_STATUSES:
        raise PayloadEncodeError(f"command status {status!r} is not one of {sorted(CMD_STATUSES)}")
    _require_text(reason, "command result reason", empty_ok=True)
    message = _durable(env)
    message["cmd"] = cmd
    message["status"] = status
    message["reason"] = reason
    return _dumps(message)


def build_audit_head(env: Envelope, *, seq: int, hash: bytes, records: int, t: int) -> bytes:
    """The payload of a published audit-journal chain head (topic ``P/G/cmd/result``, durable).

    ``seq`` and ``hash`` are the newest journal record's (0 and the genesis hash when empty),
    ``records`` how many records the journal holds and ``t`` when the newest was written (UTC
    ms). A central system that keeps these can later prove, with ``gwtool audit verify --head
    SEQ:HASH``, that no record up to that one was removed or edited. Signed by the caller as a
    COSE_Sign1, like command results: an unsigned anchor could be forged on the broker.
    """
    _require_uint(seq, "audit head seq")
    _require_uint(records, "audit record count")
    _require_uint(t, "audit head time")
    if not isinstance(hash, bytes) or len(hash) != 32:
        raise PayloadEncodeError(f"audit head hash must be 32 bytes (SHA-256), got {hash!r}")
    message = _durable(env)
    message["audit_head"] = {"seq": seq, "hash": hash, "records": records, "t": t}
    return _dumps(message)


def build_birth(
    env: Envelope, *, bdseq: int, version: str, config_sha256: str, meters: Sequence[str],
    bindings: Sequence[Binding] | None = None,
) -> bytes:
    """The retained birth certificate on ``P/G/state`` (ephemeral).

    ``bdseq`` pairs it with the last will registered on the same connection; ``config_sha256``
    is the hex SHA-256 of the configuration file in force; ``meters`` the configured meter ids;
    ``bindings`` the alias bindings v2 reads messages name (``aliases`` field, absent when the
    gateway publishes v1).
    """
    _require_uint(bdseq, "bdseq")
    _require_text(version, "software version")
    if not isinstance(config_sha256, str) or not _SHA256_HEX.fullmatch(config_sha256):
        raise PayloadEncodeError(
            f"config_sha256 must be 64 lower-case hex digits, got {config_sha256!r}"
        )
    meter_ids = [_require_text(m, "meter id") for m in meters]
    message = _ephemeral(env, "birth")
    message["online"] = True
    message["bdseq"] = bdseq
    message["version"] = version
    message["config_sha256"] = config_sha256
    message["meters"] = meter_ids
    if bindings is not None:
        message["aliases"] = aliases_field(env.epoch, bindings)
    return _dumps(message)


def build_death(env: Envelope, *, bdseq: int) -> bytes:
    """The last will registered at connect time on ``P/G/state`` (ephemeral). The broker publishes
    it when the gateway vanishes, so its ``ts`` is the connect time, not the time of death."""
    _require_uint(bdseq, "bdseq")
    message = _ephemeral(env, "death")
    message["online"] = False
    message["bdseq"] = bdseq
    return _dumps(message)


def build_health(env: Envelope, stats: Mapping[str, object]) -> bytes:
    """Periodic health on ``P/G/health`` (QoS 0, ephemeral): free-form statistics under
    ``stats``, kept apart from the envelope so no statistic can shadow an envelope field."""
    message = _ephemeral(env, "health")
    message["stats"] = _free_form(dict(stats), "health stats")
    return _dumps(message)
