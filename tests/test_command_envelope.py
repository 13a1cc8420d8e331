"""Properties of the command envelope (protocols.commands.envelope), the payload a signed command
carries: what ``gwtool sign-command`` builds the gateway parses back unchanged, and no input
whatever makes the parser raise anything but :class:`EnvelopeError` — the verifier turns that one
error into a ``malformed`` rejection, any other exception would escape it.
"""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.commands import (
    ACTIONS,
    ROLES,
    CommandEnvelope,
    EnvelopeError,
    GroupTarget,
    MeterTargets,
    build_envelope,
    parse_envelope,
)
from protocols.commands.envelope import MAX_ID_LENGTH

UINT63 = 2**63 - 1

ids = st.text(min_size=1, max_size=MAX_ID_LENGTH)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), UINT63),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
plain = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
targets = st.one_of(
    st.lists(ids, min_size=1, max_size=8, unique=True),
    st.builds(lambda group: {"group": group}, ids),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    aud=st.text(min_size=1, max_size=30),
    action=st.sampled_from(ACTIONS),
    role=st.sampled_from(ROLES),
    targets=targets,
    ctr=st.integers(0, UINT63),
    iat=st.integers(0, 2**62),
    ttl_s=st.integers(1, 2**31),
    params=st.dictionaries(st.text(max_size=12), plain, max_size=5),
    command_id=st.binary(min_size=16, max_size=16),
)
def test_build_then_parse_round_trips(
    aud: str,
    action: str,
    role: str,
    targets: list[str] | dict[str, str],
    ctr: int,
    iat: int,
    ttl_s: int,
    params: dict[str, Any],
    command_id: bytes,
) -> None:
    built = build_envelope(
        aud=aud,
        action=action,
        targets=targets,
        ctr=ctr,
        iat=iat,
        ttl_s=ttl_s,
        role=role,
        params=params,
        command_id=command_id,
    )
    assert (built.id, built.aud, built.action, built.role) == (command_id, aud, action, role)
    assert (built.ctr, built.iat, built.exp) == (ctr, iat, iat + ttl_s)
    assert built.targets_value() == targets
    wire = built.to_cbor()
    parsed = parse_envelope(wire)
    assert parsed == built
    assert parsed.to_cbor() == wire  # what is signed survives a parse byte for byte
    assert cbor2.loads(wire)["params"] == params
    expected = GroupTarget(targets["group"]) if isinstance(targets, dict) else MeterTargets(
        tuple(targets)
    )
    assert parsed.targets == expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_envelope_error(data: bytes) -> None:
    try:
        parse_envelope(data)
    except EnvelopeError:
        pass


def _valid_map() -> dict[str, object]:
    return {
        "v": 1,
        "id": bytes(16),
        "aud": "gw-0001",
        "iat": 1_767_225_600,
        "exp": 1_767_225_660,
        "ctr": 7,
        "role": "OPERATOR",
        "action": "trip",
        "targets": ["m-001"],
        "params": {},
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from([*_valid_map(), "extra"]),
    value=plain,
    drop=st.booleans(),
)
def test_a_spoiled_field_raises_only_envelope_error(field: str, value: object, drop: bool) -> None:
    """One field of a valid payload replaced by any plain CBOR value (or removed, or an unknown
    one added): the parser accepts it or says why, nothing else."""
    item = _valid_map()
    if drop:
        item.pop(field, None)
    else:
        item[field] = value
    try:
        data = cbor2.dumps(item)
    except (ValueError, TypeError, OverflowError):
        return  # not encodable as CBOR at all: nothing a sender could put on the wire
    try:
        parsed = parse_envelope(data)
    except EnvelopeError:
        return
    assert isinstance(parsed, CommandEnvelope)
    assert field != "extra" or drop  # an unknown field is never accepted
