"""The payload schema's rules, shared by the builders and the decoder.

Schema version, size and nesting limits, the value sets of the enumerated fields, the CBOR tags
the schema allows, the error tree (:class:`PayloadEncodeError` is the caller's mistake,
:class:`PayloadDecodeError` the sender's) and the field checks the message parts run when they
are constructed, and the two value encodings the schema fixes: an exact register value as a
tag-4 decimal fraction (:func:`_decimal_fraction`, built here explicitly so a library change
cannot turn a register into a float) and free-form data (health stats, alarm and suspect
details, :func:`_free_form`). One module so that what is built and what is accepted cannot drift
apart; the schema itself is ``docs/payloads.cddl``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Final, TypeAlias, cast

import cbor2

SCHEMA_VERSION: Final = 1

#: Largest payload built or accepted. A reads message of one meter is a few hundred bytes to a
#: few KB; the limit leaves room for large group results while bounding what a decoder of
#: untrusted input will allocate.
MAX_PAYLOAD_BYTES: Final = 256 * 1024

#: Deepest container nesting accepted (envelope → reads → record → reasons is 3; free-form
#: health and alarm details get the rest).
MAX_DEPTH: Final = 16

#: Decimal fractions are limited to 38 significant digits and exponents within ±38 — what a
#: SQL ``DECIMAL(38, s)`` column can hold, far beyond any meter register (8–12 digits), and small
#: enough that a hostile payload cannot make a consumer build a gigantic number.
MAX_DECIMAL_DIGITS: Final = 38
MAX_DECIMAL_EXPONENT: Final = 38

#: Bignums (tags 2/3) beyond 128 bits are rejected for the same reason.
MAX_BIGNUM_BYTES: Final = 16

#: NEM12 quality flags: actual, estimated, substituted, final substituted, null.
QUALITIES: Final = frozenset({"A", "E", "S", "F", "N"})
ALARM_STATES: Final = frozenset({"raised", "cleared"})
#: ITU-T X.733 perceived severities, without "indeterminate".
ALARM_SEVERITIES: Final = frozenset({"critical", "major", "minor", "warning"})
CMD_STATUSES: Final = frozenset({"accepted", "rejected", "executed", "failed"})
#: Status of a transformer-area reconciliation, as ``gwtool reconcile`` reports it.
LOSS_STATUSES: Final = frozenset({"qualified", "high", "negative", "uncalculable"})

_TAG_POS_BIGNUM: Final = 2
_TAG_NEG_BIGNUM: Final = 3
_TAG_DECIMAL_FRACTION: Final = 4
_TAG_COSE_SIGN1: Final = 18
_TAG_SELF_DESCRIBED: Final = 55799
# Every tag cbor2 decodes natively into a Python object. Each one is overridden so that the
# decoder only ever yields plain CBOR data (anything else is not part of this schema), and so that
# value sharing (tags 28/29) can never build a cyclic structure.
_CBOR2_SEMANTIC_TAGS: Final = (
    0,
    1,
    5,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    52,
    54,
    100,
    256,
    258,
    260,
    261,
    1004,
)

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"


class PayloadError(Exception):
    """Base of the payload errors."""


class PayloadEncodeError(PayloadError, ValueError):
    """Local error: the caller asked to build a message that the schema does not allow."""


class PayloadDecodeError(PayloadError, ValueError):
    """Remote error: the bytes are not a valid payload of schema 1 or 2."""



def _is_int(value: object) -> bool:
    # bool is an int subclass; a quality flag or a count must never be True.
    return isinstance(value, int) and not isinstance(value, bool)


def _require_uint(value: object, what: str) -> int:
    if not _is_int(value) or not 0 <= cast(int, value) <= _UINT64_MAX:
        raise PayloadEncodeError(f"{what} must be an unsigned 64-bit integer, got {value!r}")
    return cast(int, value)


def _require_text(value: object, what: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        raise PayloadEncodeError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_number(value: object, what: str, *, floats: bool) -> None:
    """Accept a finite Decimal (a register), or a finite float when ``floats`` is allowed."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise PayloadEncodeError(f"{what} is {value}: registers must be finite numbers")
        _, digits, exponent = value.as_tuple()
        exponent = cast(int, exponent)
        if len(digits) > MAX_DECIMAL_DIGITS or abs(exponent) > MAX_DECIMAL_EXPONENT:
            raise PayloadEncodeError(
                f"{what} = {value} needs more than {MAX_DECIMAL_DIGITS} digits or an exponent "
                f"beyond ±{MAX_DECIMAL_EXPONENT}; quantize it to the register's resolution"
            )
    elif isinstance(value, float) and floats:
        if not math.isfinite(value):
            raise PayloadEncodeError(
                f"{what} is {value}: send a null value with quality 'N' instead"
            )
    else:
        wanted = "a Decimal (registers) or a float (instantaneous)" if floats else "a Decimal"
        raise PayloadEncodeError(f"{what} must be {wanted}, got {type(value).__name__} {value!r}")


def _check_day(value: object, what: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise PayloadEncodeError(f"{what} must be YYYY-MM-DD, got {value!r}")


def _check_float(value: object, what: str) -> None:
    if not isinstance(value, float) or not math.isfinite(value):
        raise PayloadEncodeError(f"{what} must be a finite float, got {value!r}")


def _check_fraction(value: object, what: str) -> None:
    if not isinstance(value, float) or not 0.0 <= value <= 1.0:
        raise PayloadEncodeError(f"{what} must be a float between 0 and 1, got {value!r}")


def _decimal_fraction(value: Decimal) -> cbor2.CBORTag:
    """Tag 4 ``[exponent, mantissa]``. A negative zero has no mantissa sign to carry, so it is
    sent as zero (with its exponent, i.e. its resolution, kept)."""
    sign, digits, exponent = value.as_tuple()
    mantissa = int("".join(map(str, digits)))
    if sign and mantissa:
        mantissa = -mantissa
    return cbor2.CBORTag(_TAG_DECIMAL_FRACTION, [cast(int, exponent), mantissa])


def _number(value: Decimal | float | None) -> object:
    if isinstance(value, Decimal):
        return _decimal_fraction(value)
    return value


def _free_form(value: object, what: str, depth: int = 0) -> object:
    """Validate free-form data (health stats, alarm details) and make it encodable.

    Allowed: null, bool, 64-bit ints, finite floats, text, bytes, finite Decimals, lists and maps
    with text keys — exactly what :func:`decode_message` accepts back.
    """
    if depth > MAX_DEPTH - 2:
        raise PayloadEncodeError(f"{what} is nested more than {MAX_DEPTH - 2} levels deep")
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _UINT64_MAX:
            raise PayloadEncodeError(f"{what} = {value} does not fit in 64 bits")
        return value
    if isinstance(value, float | Decimal):
        _check_number(value, what, floats=True)
        return _number(value)
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadEncodeError(f"{what}: map keys must be text, got {key!r}")
            out[key] = _free_form(item, f"{what}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_free_form(item, f"{what}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise PayloadEncodeError(f"{what}: {type(value).__name__} cannot be sent in a payload")


def superseded(found: object, where: str) -> tuple[str, int] | None:
    """A record's ``sup`` — ``[message id, record index]`` of the record it supersedes — as the
    tuple :class:`ReadRecord` holds; the same in schema 1 and schema 2."""
    if found is None:
        return None
    if not (isinstance(found, list) and len(found) == 2 and isinstance(found[0], str)
            and isinstance(found[1], int) and not isinstance(found[1], bool) and found[1] >= 0):
        raise PayloadDecodeError(f"{where}: 'sup' is [message id, record index], got {found!r}")
    return (found[0], found[1])
