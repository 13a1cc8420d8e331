"""docs/payloads.cddl against the code: the examples in the document are exactly what the
builders produce, and every example (and every message the tests build) conforms to the rules.

The validator below understands the small CDDL subset the document uses (maps with optional and
group-included members, choices, literals, ranges, arrays, ``.regexp``/``.size``, tag 4); a rule
written outside that subset makes it fail loudly rather than pass silently.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from protocols.payload import decode_message, mark_hist
from tests.payload_examples import example_blocks, examples

CDDL = Path(__file__).resolve().parent.parent / "docs" / "payloads.cddl"
EXAMPLES_MARKER = "; ---------------------------------------------------------------- examples"


def _strip_comments(text: str) -> str:
    out = []
    for line in text.splitlines():
        quoted = False
        for i, char in enumerate(line):
            if char == '"':
                quoted = not quoted
            elif char == ";" and not quoted:
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def _split_top(text: str, separator: str) -> list[str]:
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def parse_rules(text: str) -> dict[str, str]:
    rules: dict[str, str] = {}
    name = None
    for line in _strip_comments(text).splitlines():
        match = re.match(r"^([a-z][a-z0-9-]*)\s*=\s*(.*)$", line)
        if match:
            name = match.group(1)
            rules[name] = match.group(2)
        elif name is not None and line.strip():
            rules[name] += " " + line.strip()
    return rules


class Validator:
    def __init__(self, rules: dict[str, str]) -> None:
        self.rules = rules

    def members(self, body: str) -> list[tuple[bool, str, str]]:
        """(optional, key, type) of a map or group body, group references expanded."""
        out = []
        for member in _split_top(body.strip()[1:-1], ","):
            match = re.fullmatch(r"(\?\s*)?([a-z_0-9]+)\s*:\s*(.+)", member, re.S)
            if match:
                out.append((bool(match.group(1)), match.group(2), match.group(3).strip()))
            elif member in self.rules and self.rules[member].strip().startswith("("):
                out.extend(self.members(self.rules[member]))
            else:
                raise AssertionError(f"CDDL member outside the supported subset: {member!r}")
        return out

    def check_map(self, body: str, value: object, where: str) -> None:
        assert isinstance(value, dict), f"{where}: expected a map, got {value!r}"
        wildcard = re.fullmatch(r"\{\s*\*\s*tstr\s*=>\s*(.+)\}", body.strip(), re.S)
        if wildcard:
            for key, item in value.items():
                assert isinstance(key, str), f"{where}: key {key!r}"
                self.check(wildcard.group(1).strip(), item, f"{where}.{key}")
            return
        members = self.members(body)
        declared = {key for _, key, _ in members}
        extra = set(value) - declared
        assert not extra, f"{where}: fields {sorted(extra)} are not in the CDDL"
        for optional, key, kind in members:
            if key in value:
                self.check(kind, value[key], f"{where}.{key}")
            else:
                assert optional, f"{where}: required field {key!r} missing"

    def check(self, kind: str, value: object, where: str) -> None:
        kind = kind.strip()
        choices = _split_top(kind, "/")
        if len(choices) > 1:
            failures = []
            for choice in choices:
                try:
                    self.check(choice, value, where)
                    return
                except AssertionError as exc:
                    failures.append(str(exc))
            raise AssertionError(f"{where}: {value!r} matches none of {kind!r}: {failures}")
        control = re.fullmatch(r"([a-z]+)\s+\.(regexp|size)\s+(.+)", kind, re.S)
        if control:
            self.check(control.group(1), value, where)
            argument = control.group(3).strip()
            if control.group(2) == "regexp":
                assert re.fullmatch(argument.strip('"'), str(value)), (
                    f"{where}: {value!r} !~ {argument}"
                )
            else:
                assert len(value) == int(argument), f"{where}: size {len(value)} != {argument}"  # type: ignore[arg-type]
            return
        if kind.startswith("{"):
            self.check_map(kind, value, where)
        elif kind.startswith("["):
            match = re.fullmatch(r"\[\s*([*+])\s*(.+)\]", kind, re.S)
            if match is None:  # a fixed array, e.g. [tstr, uint]: one type per position
                items = _split_top(kind[1:-1], ",")
                assert isinstance(value, list) and len(value) == len(items), (
                    f"{where}: expected an array of {len(items)}, got {value!r}")
                for i, (item_kind, item) in enumerate(zip(items, value, strict=True)):
                    self.check(item_kind, item, f"{where}[{i}]")
                return
            assert isinstance(value, list), f"{where}: expected an array, got {value!r}"
            assert match.group(1) == "*" or value, f"{where}: array must not be empty"
            for i, item in enumerate(value):
                self.check(match.group(2), item, f"{where}[{i}]")
        elif kind.startswith("#6.4("):
            assert isinstance(value, Decimal), (
                f"{where}: expected a decimal fraction, got {value!r}"
            )
            exponent = value.as_tuple().exponent
            low, high = re.search(r"e10:\s*(-?\d+)\.\.(-?\d+)", kind).groups()  # type: ignore[union-attr]
            assert int(low) <= exponent <= int(high), f"{where}: exponent {exponent}"  # type: ignore[operator]
        elif kind.startswith('"'):
            assert value == kind.strip('"'), f"{where}: {value!r} != {kind}"
        elif re.fullmatch(r"-?\d+\.\.-?\d+", kind):
            low, high = map(int, kind.split(".."))
            assert isinstance(value, int) and low <= value <= high, (
                f"{where}: {value!r} not in {kind}"
            )
        elif re.fullmatch(r"-?\d+", kind):
            assert type(value) is int and value == int(kind), f"{where}: {value!r} != {kind}"
        elif kind in _PRELUDE:
            assert _PRELUDE[kind](value), f"{where}: {value!r} is not {kind}"
        elif kind in self.rules:
            self.check(self.rules[kind], value, where)
        else:
            raise AssertionError(f"{where}: type {kind!r} is neither prelude nor a rule")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PRELUDE = {
    "tstr": lambda v: isinstance(v, str),
    "bstr": lambda v: isinstance(v, bytes),
    "uint": lambda v: _is_int(v) and v >= 0,
    "int": _is_int,
    "biguint": lambda v: _is_int(v) and v >= 2**64,
    "bignint": lambda v: _is_int(v) and v < -(2**64),
    "float": lambda v: isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "true": lambda v: v is True,
    "false": lambda v: v is False,
    "null": lambda v: v is None,
}


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
    validator.check(rule, decode_message(payload), rule)
    validator.check("payload", decode_message(payload), rule)


@pytest.mark.parametrize("rule", [r for r in examples() if r not in ("cmd-result", "audit-head")])
def test_backlog_marking_conforms(validator: Validator, rule: str) -> None:
    validator.check(rule, decode_message(mark_hist(examples()[rule])), rule)


def test_every_rule_has_an_example(validator: Validator) -> None:
    message_rules = {r.strip() for r in _split_top(validator.rules["payload"], "/")}
    assert message_rules == set(examples())


@pytest.mark.parametrize(
    ("rule", "mutate"),
    [
        ("reads-message", lambda m: m.pop("meter")),
        ("reads-message", lambda m: m["reads"][0].update(val=1.5e300, quality="X")),
        ("reads-message", lambda m: m["reads"][0].update(extra=1)),
        ("state-birth", lambda m: m.update(config_sha256="ABC")),
        ("alarm-message", lambda m: m.update(state="open")),
        ("cmd-result", lambda m: m.update(cmd=b"short")),
        ("audit-head", lambda m: m["audit_head"].update(hash=b"short")),
        ("audit-head", lambda m: m["audit_head"].pop("records")),
        ("groups-message", lambda m: m["loss"].update(input=1.0)),
    ],
)
def test_the_validator_rejects_nonconforming_messages(
    validator: Validator, rule: str, mutate: object
) -> None:
    """The check above would be worthless if this validator accepted anything."""
    message = decode_message(examples()[rule])
    mutate(message)  # type: ignore[operator]
    with pytest.raises(AssertionError):
        validator.check(rule, message, rule)
