"""docs/payloads.cddl against the code, checked by an independent CDDL validator: pycddl (the
Rust cddl-rs crate), not a validator of ours. The examples in the document are exactly what the
builders produce, every example conforms to its rule and to ``payload``, and the validator
rejects what breaks the rules (so the checks above cannot pass vacuously).

:class:`Validator` is also what the end-to-end tests use (tests/test_payload_cddl_live.py,
tests/test_e2e_theft.py, the outage tests) to check real daemon output, rule by rule.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import cbor2
import pycddl
import pytest

from protocols.payload import decode_message, mark_hist
from protocols.payload.schema import _free_form
from tests.payload_examples import example_blocks, examples

CDDL = Path(__file__).resolve().parent.parent / "docs" / "payloads.cddl"
EXAMPLES_MARKER = "; ---------------------------------------------------------------- examples"


def parse_rules(text: str) -> str:
    """The CDDL text the validator compiles (kept as a function for the tests that import it)."""
    return text


class Validator:
    """Validates CBOR against one rule of the document with pycddl.

    pycddl checks a document's first rule, so each rule gets its own schema: ``root = RULE``
    followed by the document. ``check`` takes a decoded value (a message, or a part such as
    an alarm's ``details``) and re-encodes it with the payload codec's free-form encoder —
    Decimals as tag-4 decimal fractions, exactly what the gateway sends; ``check_bytes`` takes
    the bytes as published."""

    def __init__(self, text: str) -> None:
        self.text = text

    @functools.cache  # noqa: B019 - one Validator per test session
    def schema(self, rule: str) -> Any:
        return pycddl.Schema(f"root = {rule}\n{self.text}")

    def check_bytes(self, rule: str, payload: bytes, where: str = "") -> None:
        try:
            self.schema(rule).validate_cbor(payload)
        except pycddl.ValidationError as exc:
            raise AssertionError(f"{where or rule}: does not match CDDL rule {rule}: {exc}") from exc

    def check(self, rule: str, value: object, where: str = "") -> None:
        self.check_bytes(rule, cbor2.dumps(_free_form(value, where or rule)), where)

    def check_message(self, rule: str, payload: bytes, where: str = "") -> None:
        """``check_bytes``, plus each map a message carries in an array checked on its own:
        cddl-rs lets extra keys through in a map inside an array, and checks little of a map
        inside an array of choices (v2 records), while it checks a top-level map strictly."""
        self.check_bytes(rule, payload, where)
        message = cbor2.loads(payload)
        for sub_rule, items in _array_maps(rule, message):
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    self.check_bytes(sub_rule, cbor2.dumps(item), f"{where or rule}[{i}]")


def _array_maps(rule: str, message: Any) -> list[tuple[str, list[object]]]:
    if rule == "reads-message":
        return [("read-record", message.get("reads", []))]
    if rule == "reads-message-v2":
        return [("read-record-v2", message.get(8, []))]
    if rule == "groups-message":
        loss = message.get("loss") or {}
        return [("group-total", message.get("totals", [])), ("suspect", loss.get("suspects", []))]
    return []


@pytest.fixture(scope="module")
def cddl_text() -> str:
    return CDDL.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def validator(cddl_text: str) -> Validator:
    return Validator(parse_rules(cddl_text))


def test_examples_in_the_document_are_what_the_builders_produce(cddl_text: str) -> None:
    _, marker, tail = cddl_text.partition(EXAMPLES_MARKER)
    assert marker, "examples section missing from docs/payloads.cddl"
    documented = tail.split("\n", 1)[1].removeprefix(";\n")
    assert documented == example_blocks(), (
        "docs/payloads.cddl examples are stale: regenerate with `python -m tests.payload_examples`"
    )


@pytest.mark.parametrize("rule", list(examples()))
def test_every_example_conforms_to_its_rule(validator: Validator, rule: str) -> None:
    payload = examples()[rule]
    validator.check_message(rule, payload)
    validator.check_bytes("payload", payload)


@pytest.mark.parametrize("rule", [r for r in examples() if r not in ("cmd-result", "audit-head")])
def test_backlog_marking_conforms(validator: Validator, rule: str) -> None:
    validator.check_message(rule, mark_hist(examples()[rule]))


def test_every_message_rule_has_an_example(cddl_text: str) -> None:
    start = cddl_text.index("payload = ")
    body = cddl_text[start + len("payload = "):cddl_text.index("\n\n", start)]
    rules = {r.strip() for r in body.replace("\n", " ").split("/")}
    assert rules == set(examples())


def _v1(rule: str, mutate: Any) -> bytes:
    message = decode_message(examples()[rule])
    mutate(message)
    return cbor2.dumps(_free_form(message, rule))


def _v2(mutate: Any) -> bytes:
    message = cbor2.loads(examples()["reads-message-v2"])
    mutate(message)
    return cbor2.dumps(message)


def _theft_details(**changes: object) -> dict[str, object]:
    details: dict[str, object] = {
        "phases": "a", "start_ms": 1, "end_ms": 2, "window_start_ms": 1, "window_end_ms": 2,
        "samples": 12, "un_v": 220.0, "ib_a": 5.0, "thresholds": {"voltage_below_v": 154.0},
        "hint": "x", "lowest_voltage_v": 3.2, "voltage_below_v": 154.0}
    details.update(changes)
    return details


@pytest.mark.parametrize(
    ("rule", "payload"),
    [
        ("reads-message", _v1("reads-message", lambda m: m.pop("meter"))),
        ("reads-message", _v1("reads-message",
                              lambda m: m["reads"][0].update(val=1.5e300, quality="X"))),
        ("reads-message", _v1("reads-message", lambda m: m["reads"][0].update(extra=1))),
        ("reads-message", _v1("reads-message", lambda m: m["reads"][0].update(val=1))),
        ("state-birth", _v1("state-birth", lambda m: m.update(config_sha256="ABC"))),
        ("state-birth", _v1("state-birth", lambda m: m["aliases"]["tables"][0][0].__setitem__(3, 2))),
        ("alarm-message", _v1("alarm-message", lambda m: m.update(state="open"))),
        ("cmd-result", _v1("cmd-result", lambda m: m.update(cmd=b"short"))),
        ("audit-head", _v1("audit-head", lambda m: m["audit_head"].update(hash=b"short"))),
        ("audit-head", _v1("audit-head", lambda m: m["audit_head"].pop("records"))),
        ("groups-message", _v1("groups-message", lambda m: m["loss"].update(input=1.0))),
        ("groups-message", _v1("groups-message", lambda m: m["totals"][0].update(day="31.12."))),
        ("reads-message-v2", _v2(lambda m: m.pop(6))),
        ("reads-message-v2", _v2(lambda m: m.update({0: 1}))),
        ("reads-message-v2", _v2(lambda m: m.update({5: False}))),
        ("reads-message-v2", _v2(lambda m: m.update({8: []}))),
        ("reads-message-v2", _v2(lambda m: m[8].append("230.1"))),
        ("reads-message-v2", _v2(lambda m: m[8].append({2: 1, 4: "X"}))),
        ("reads-message-v2", _v2(lambda m: m[8].append({2: 1, 11: 0}))),
        ("reads-message-v2", _v2(lambda m: m[8].append({4: "E"}))),
        ("theft-raised-details", cbor2.dumps(_theft_details(thresholds={"v": "low"}))),
        ("theft-raised-details", cbor2.dumps(_theft_details(samples=-1))),
    ],
)
def test_the_validator_rejects_nonconforming_messages(
    validator: Validator, rule: str, payload: bytes
) -> None:
    """The checks above would be worthless if the validator accepted anything."""
    with pytest.raises(AssertionError):
        validator.check_message(rule, payload)


def test_the_validator_accepts_what_the_rejections_above_start_from(validator: Validator) -> None:
    validator.check_bytes("theft-raised-details", cbor2.dumps(_theft_details()))
    validator.check("alarm-message", {**decode_message(examples()["alarm-message"]),
                                      "details": {"thresholds": {"a": 1.0}, "n": [Decimal("1.5")]}})


def test_free_form_values_keep_text_keys_at_every_depth() -> None:
    """What the CDDL's `any` leaves to the decoder (see the note at the top of the document)."""
    from protocols.payload import PayloadDecodeError

    message: Mapping[str, object] = decode_message(examples()["health-message"])
    bad = cbor2.dumps({**message, "stats": {"buses": {1: {"polls": 2}}}})
    with pytest.raises(PayloadDecodeError, match="not text"):
        decode_message(bad)
