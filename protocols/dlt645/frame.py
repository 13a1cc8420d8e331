"""DL/T 645 link layer: the frame, its address and control fields, +33H scrambling and the checksum.

Frame (DL/T 645-2007 §4.1, identical in -1997)::

    68 A0 A1 A2 A3 A4 A5 68 C L DATA(L) CS 16

* ``A0..A5`` — the address, 12 BCD digits, **least significant byte first** (so the nameplate
  ``000102030425`` travels as ``25 04 03 02 01 00``). A byte ``AA`` is a wildcard; ``99`` × 6 is the
  broadcast address used for time sync.
* ``C`` — D7 direction (1 = reply from the meter), D6 abnormal reply, D5 follow-up frames exist,
  D4..D0 function code.
* ``L`` — data length. The standard caps it at 200 for reads and 50 for writes; we refuse > 200.
* ``DATA`` — every byte is transmitted **plus 33H** (mod 256) so that a data field of zeros does not
  look like line idle; :func:`scramble`/:func:`unscramble` undo it.
* ``CS`` — modulo-256 sum of every byte from the first 68H to the last data byte.

Senders may precede a frame with any number of ``FE`` wake-up bytes; receivers must skip them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Final

from .errors import ChecksumError, FrameError, LocalProtocolError, TruncatedFrame

if TYPE_CHECKING:
    from construct import Struct

START: Final = 0x68
END: Final = 0x16
PREAMBLE: Final = 0xFE
MAX_DATA_LENGTH: Final = 200
HEADER_LENGTH: Final = 10  # 68 + 6 address + 68 + C + L
OVERHEAD: Final = 12  # header + CS + 16

BROADCAST_ADDRESS: Final = "999999999999"
WILDCARD_ADDRESS: Final = "AAAAAAAAAAAA"


@cache
def frame_struct() -> Struct:
    """The frame as declared by the standard, built at the first parse. ``construct.compile()`` is
    deliberately not used: compiled parsers ``exec`` generated source, which we do not do on bytes
    that came off a meter line. Built on first use, not at import, because every gateway imports
    this module (``Version``, ``ControlAction``) and only one with DL/T 645 buses parses frames:
    construct costs a Modbus-only daemon 1.8 MiB (docs/performance.md, Memory)."""
    from construct import Bytes, Const, Int8ub, Struct, this

    return Struct(
        "start" / Const(bytes([START])),
        "address" / Bytes(6),
        "start2" / Const(bytes([START])),
        "control" / Int8ub,
        "length" / Int8ub,
        "data" / Bytes(this.length),
        "checksum" / Int8ub,
        "end" / Const(bytes([END])),
    )


def _construct_error() -> type[Exception]:
    """construct's error class; an ``except`` clause evaluates it only when something was raised."""
    from construct import ConstructError

    error: type[Exception] = ConstructError
    return error


_PLUS_33 = bytes((b + 0x33) & 0xFF for b in range(256))
_MINUS_33 = bytes((b - 0x33) & 0xFF for b in range(256))


class Version(enum.IntEnum):
    """Which edition of DL/T 645 a frame belongs to (decided by its function code)."""

    V1997 = 1997
    V2007 = 2007


class Function(enum.IntEnum):
    """Function codes (control field D4..D0) of both editions.

    The two editions share the frame but not the codes, except 08H (broadcast time sync), whose data
    layout is the same in both.
    """

    # DL/T 645-2007 §4.1.2
    BROADCAST_TIME = 0x08
    READ_DATA = 0x11
    READ_FOLLOWUP = 0x12
    READ_ADDRESS = 0x13
    WRITE_DATA = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENTS = 0x1B
    CONTROL = 0x1C
    MULTI_FUNCTION_OUTPUT = 0x1D
    # DL/T 645-1997 §5.1
    READ_DATA_1997 = 0x01
    READ_FOLLOWUP_1997 = 0x02
    REREAD_1997 = 0x03
    WRITE_DATA_1997 = 0x04
    WRITE_ADDRESS_1997 = 0x0A
    CHANGE_BAUD_1997 = 0x0C
    CHANGE_PASSWORD_1997 = 0x0F
    CLEAR_DEMAND_1997 = 0x10


#: (function code) → (edition, name used in the CLI and logs). Names are the same in both editions.
FUNCTION_TABLE: Final[dict[int, tuple[Version, str]]] = {
    0x08: (Version.V2007, "broadcast_time"),
    0x11: (Version.V2007, "read_data"),
    0x12: (Version.V2007, "read_followup"),
    0x13: (Version.V2007, "read_address"),
    0x14: (Version.V2007, "write_data"),
    0x15: (Version.V2007, "write_address"),
    0x16: (Version.V2007, "freeze"),
    0x17: (Version.V2007, "change_baud"),
    0x18: (Version.V2007, "change_password"),
    0x19: (Version.V2007, "clear_demand"),
    0x1A: (Version.V2007, "clear_meter"),
    0x1B: (Version.V2007, "clear_events"),
    0x1C: (Version.V2007, "control"),
    0x1D: (Version.V2007, "multi_function_output"),
    0x01: (Version.V1997, "read_data"),
    0x02: (Version.V1997, "read_followup"),
    0x03: (Version.V1997, "reread"),
    0x04: (Version.V1997, "write_data"),
    0x0A: (Version.V1997, "write_address"),
    0x0C: (Version.V1997, "change_baud"),
    0x0F: (Version.V1997, "change_password"),
    0x10: (Version.V1997, "clear_demand"),
}


@dataclass(frozen=True, slots=True)
class Control:
    """The control byte, split into its fields.

    Fields: ``function`` (D4..D0), ``reply`` (D7: sent by the meter), ``abnormal`` (D6: the meter
    refuses and the data field is an error word), ``more_follows`` (D5: read follow-up frames).
    """

    function: int
    reply: bool = False
    abnormal: bool = False
    more_follows: bool = False

    @property
    def byte(self) -> int:
        return (
            (0x80 if self.reply else 0)
            | (0x40 if self.abnormal else 0)
            | (0x20 if self.more_follows else 0)
            | (self.function & 0x1F)
        )

    @classmethod
    def from_byte(cls, value: int) -> Control:
        return cls(
            function=value & 0x1F,
            reply=bool(value & 0x80),
            abnormal=bool(value & 0x40),
            more_follows=bool(value & 0x20),
        )


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A checksum-valid frame with its data field already unscrambled.

    Fields: ``address`` (12 characters, nameplate order; ``A`` for wildcard bytes), ``control``,
    ``data`` (unscrambled), ``raw`` (the frame bytes as received, without preamble).
    """

    address: str
    control: Control
    data: bytes
    raw: bytes


def scramble(data: bytes) -> bytes:
    """Add 33H to every data byte, as the sender must (DL/T 645-2007 §4.1.6)."""
    return data.translate(_PLUS_33)


def unscramble(data: bytes) -> bytes:
    """Subtract 33H from every data byte, as the receiver must."""
    return data.translate(_MINUS_33)


def checksum(frame_head_and_data: bytes) -> int:
    """Modulo-256 sum from the first 68H through the last data byte."""
    return sum(frame_head_and_data) & 0xFF


def _is_bcd_or_wildcard(b: int) -> bool:
    return b == 0xAA or ((b >> 4) < 10 and (b & 0x0F) < 10)


def encode_address(address: str) -> bytes:
    """Nameplate address (12 digits, most significant first; ``AA`` pairs are wildcards) → wire bytes."""
    if len(address) != 12:
        raise LocalProtocolError(
            f"DL/T 645 address must be 12 digits, got {address!r} ({len(address)} characters)"
        )
    try:
        wire = bytes.fromhex(address)[::-1]
    except ValueError:
        raise LocalProtocolError(
            f"DL/T 645 address {address!r} must contain only digits (or AA wildcard pairs)"
        ) from None
    if not all(_is_bcd_or_wildcard(b) for b in wire):
        raise LocalProtocolError(
            f"DL/T 645 address {address!r} must contain only digits (or AA wildcard pairs)"
        )
    return wire


def decode_address(wire: bytes) -> str:
    """Wire address bytes → nameplate order string; rejects non-BCD bytes other than the AA wildcard."""
    for i, b in enumerate(wire):
        if not _is_bcd_or_wildcard(b):
            raise FrameError(f"address byte A{i} is {b:02X}, neither BCD nor the AA wildcard")
    return wire[::-1].hex().upper()


def strip_preamble(data: bytes) -> bytes:
    """Drop leading FE wake-up bytes (any number)."""
    i = 0
    n = len(data)
    while i < n and data[i] == PREAMBLE:
        i += 1
    return data[i:]


def build_frame(address: str, control: Control, data: bytes, *, preamble: int = 0) -> bytes:
    """Build a complete frame; ``data`` is given unscrambled. ``preamble`` FE bytes are prepended."""
    if len(data) > MAX_DATA_LENGTH:
        raise LocalProtocolError(
            f"data field of {len(data)} bytes exceeds the DL/T 645 limit of {MAX_DATA_LENGTH}"
        )
    if not 0 <= preamble <= 16:
        raise LocalProtocolError(f"preamble must be 0..16 FE bytes, got {preamble}")
    head_and_data = (
        bytes([START])
        + encode_address(address)
        + bytes([START, control.byte, len(data)])
        + scramble(data)
    )
    return b"\xfe" * preamble + head_and_data + bytes([checksum(head_and_data), END])


def parse_frame(frame: bytes) -> RawFrame:
    """Parse exactly one frame (optionally preceded by FE bytes, nothing after it).

    Raises :class:`TruncatedFrame` saying what is missing, :class:`ChecksumError` with both sums,
    or :class:`FrameError` for anything else malformed.
    """
    body = strip_preamble(bytes(frame))
    n = len(body)
    if n == 0:
        raise TruncatedFrame("no bytes after the FE preamble; expected a frame starting with 68H")
    if body[0] != START:
        raise FrameError(f"frame must start with 68H, got {body[0]:02X}H")
    if n < HEADER_LENGTH:
        raise TruncatedFrame(
            f"header needs {HEADER_LENGTH} bytes (68, 6 address bytes, 68, C, L), got {n}"
        )
    if body[7] != START:
        raise FrameError(f"second start byte must be 68H, got {body[7]:02X}H")
    length = body[9]
    if length > MAX_DATA_LENGTH:
        raise FrameError(f"length byte {length} exceeds the DL/T 645 limit of {MAX_DATA_LENGTH}")
    expected_total = OVERHEAD + length
    if n < expected_total:
        have_data = max(0, n - HEADER_LENGTH)
        if have_data < length:
            missing = (f"missing {length - have_data} of {length} data bytes, "
                       "the checksum and the 16H end byte")
        elif n == HEADER_LENGTH + length:
            missing = "missing the checksum and the 16H end byte"
        else:
            missing = "missing the 16H end byte"
        raise TruncatedFrame(missing)
    if n > expected_total:
        raise FrameError(
            f"{n - expected_total} bytes after the end of a frame whose length byte says {length}"
        )
    try:
        parsed = frame_struct().parse(body)
    except _construct_error() as exc:  # pragma: no cover - the checks above catch every case we know
        raise FrameError(f"malformed frame: {exc}") from None
    expected = checksum(body[: HEADER_LENGTH + length])
    if parsed.checksum != expected:
        raise ChecksumError(expected=expected, got=parsed.checksum)
    return RawFrame(
        address=decode_address(parsed.address),
        control=Control.from_byte(parsed.control),
        data=unscramble(parsed.data),
        raw=body,
    )
