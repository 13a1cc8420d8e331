"""The example messages shown in docs/payloads.cddl, built by the real builders, and a printer of
CBOR diagnostic notation (RFC 8949 §8) for them.

``python -m tests.payload_examples`` prints every example block; paste the output into the CDDL
file when a builder changes. tests/test_payload_cddl.py fails until the two agree.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

import cbor2

from protocols.payload import (
    AlarmEvent,
    AliasEntry,
    AliasTable,
    AreaLoss,
    Binding,
    Envelope,
    GroupTotal,
    ReadRecord,
    Suspect,
    build_alarm,
    build_audit_head,
    build_birth,
    build_cmd_result,
    build_death,
    build_group,
    build_health,
    build_reads,
    build_reads_v2,
    decode_message,
    durable_id,
)

GW = "gw-0001"
EPOCH = 0x5F3A9C0E12B47D21
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TS = T0 + 4_200  # the poll completed 4.2 s after the interval boundary

#: m-001's alias binding: what its profile publishes, declared once in the birth.
BINDING = Binding(3, "m-001", AliasTable((
    AliasEntry("energy.active.import.total", "kWh", -2, True),
    AliasEntry("voltage.a", "V", -1, False),
    AliasEntry("current.a", "A", -3, False),
    AliasEntry("power.factor.total", "", -3, False),
)))

READS = [
    ReadRecord("energy.active.import.total", Decimal("1206.42"), "kWh", T0),
    ReadRecord("voltage.a", 229.7, "V", T0),
    # VEE: the interval before this read had been estimated while the meter was
    # silent; now that this read closes the gap, the estimate is scaled to the
    # register delta and re-published under the same (meter, q, t) with rev 1,
    # naming the record it supersedes: record 0 of message 1017.
    ReadRecord(
        "energy.active.import.total",
        Decimal("1206.17"),
        "kWh",
        T0 - 900_000,
        quality="E",
        method=24,
        reasons=(76,),
        rev=1,
        sup=(durable_id(GW, EPOCH, 1017), 0),
    ),
    ReadRecord("power.factor.total", None, "", T0, quality="N", reasons=(3,)),
]


def examples() -> dict[str, bytes]:
    """One message of each kind, keyed by the CDDL rule that describes it."""
    return {
        "state-birth": build_birth(
            Envelope(GW, EPOCH, 1041, TS),
            bdseq=7,
            version="0.1.0",
            config_sha256="9f2c4e7a5b1d3f60c8e2a4b6d8f0e1c3a5b7d9f1e3c5a7b9d1f3e5c7a9b1d3f5",
            meters=["m-000", "m-001", "m-002"],
            bindings=[BINDING],
        ),
        "state-death": build_death(Envelope(GW, EPOCH, 1041, TS), bdseq=7),
        "reads-message": build_reads(Envelope(GW, EPOCH, 1042, TS), "m-001", READS),
        "reads-message-v2": build_reads_v2(Envelope(GW, EPOCH, 1042, TS), BINDING, READS),
        "alarm-message": build_alarm(
            Envelope(GW, EPOCH, 1043, TS),
            AlarmEvent(
                kind="meter.offline",
                key="meter.offline/m-002",
                state="raised",
                severity="major",
                meter="m-002",
                details={"bus": "rs485-1", "tries": 3, "last_seen": T0 - 900_000},
            ),
        ),
        "health-message": build_health(
            Envelope(GW, EPOCH, 1043, TS + 10_000),
            {
                "uptime_s": 86_400,
                "outbox_depth": 0,
                "disk_free_mb": 1843.5,
                "buses": {"rs485-1": {"polls": 1440, "timeouts": 2}},
            },
        ),
        "groups-message": build_group(
            Envelope(GW, EPOCH, 1044, TS),
            "tq-0042-subs",
            totals=[
                GroupTotal(
                    "energy.active.import.total",
                    Decimal("2412.84"),
                    "kWh",
                    T0,
                    quality="E",
                    coverage=0.5,
                    missing=("m-002",),
                    day="2025-12-31",
                ),
            ],
            loss=AreaLoss(
                area="tq-0042",
                day="2025-12-31",
                status="high",
                coverage=0.5,
                input=Decimal("131.50"),
                output=Decimal("118.20"),
                loss_pct=10.11,
                band_center_pct=3.9,
                band_halfwidth_pct=0.8,
                suspects=(
                    Suspect(
                        "m-002",
                        0.82,
                        ("no reads for 6 h", "zero consumption"),
                        details={
                            "recent_kwh_per_day": 3.1,
                            "expected_kwh_per_day": 10.4,
                            "window_days": 5,
                            "min_drop_pct": 20.0,
                        },
                    ),
                ),
            ),
        ),
        "cmd-result": build_cmd_result(
            Envelope(GW, EPOCH, 1045, TS),
            cmd=bytes.fromhex("8d1e5a3c9b7f4e2a6c0d1b3f5e7a9c2d"),
            status="rejected",
            reason="counter 17 not above last accepted 17 (replay)",
        ),
        "audit-head": build_audit_head(
            Envelope(GW, EPOCH, 1046, TS),
            seq=318,
            hash=bytes.fromhex("3b7e0c5a91d24f6e8a1c7d9b2e4f6a8c0d2e4f6a8b9c1d3e5f7a9b1c3d5e7f90"),
            records=318,
            t=TS - 4000,
        ),
    }


def diagnostic(value: object, indent: int = 0) -> str:
    """Diagnostic notation of a decoded payload value, one map entry per line."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        inline = (
            "{" + ", ".join(f"{json.dumps(k)}: {diagnostic(v)}" for k, v in value.items()) + "}"
        )
        if _is_flat(value) and len(pad) + len(inline) <= 72:
            return inline
        items = [f"{pad}  {json.dumps(k)}: {diagnostic(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        inline = "[" + ", ".join(diagnostic(v) for v in value) + "]"
        if _is_flat(value) and len(pad) + len(inline) <= 72:
            return inline
        items = [f"{pad}  {diagnostic(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
        return f"4([{exponent}, {mantissa}])"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, int | str):
        return json.dumps(value)
    raise TypeError(f"no diagnostic notation for {type(value).__name__}")


def _is_flat(container: dict[object, object] | list[object]) -> bool:
    items = container.values() if isinstance(container, dict) else container
    return not any(isinstance(item, dict | list) for item in items)


def example_blocks() -> str:
    """The example section of docs/payloads.cddl, as it must read."""
    blocks = []
    for rule, payload in examples().items():
        # Schema 2 is shown as sent (integer keys), not as decode_message expands it.
        shown = cbor2.loads(payload) if rule.endswith("-v2") else decode_message(payload)
        body = diagnostic(shown)
        lines = [f"; example: {rule}"] + [f";   {line}" for line in body.splitlines()]
        blocks.append("\n".join(lines) + "\n; end example")
    return "\n;\n".join(blocks) + "\n"


if __name__ == "__main__":
    print(example_blocks(), end="")
