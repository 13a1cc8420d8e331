"""DL/T 645 data-field building blocks shared by the encoder and the decoder.

The pieces that both directions must agree on byte for byte live here once: DI width per edition,
password and operator-code fields, the timestamp and block-count formats, the baud rate word Z and
the function-code lookup. :mod:`.encoding` and :mod:`.decoding` compose them per message type.

Data field layouts (after +33H removal), DL/T 645-2007 §7 / -1997 §5:

=====================  ===========================================================================
read 11H               DI[4] [N[1] [mmhhDDMMYY[5]]]  (N and time only for load-record blocks)
read reply 91H/B1H     DI[4] data
follow-up 12H          DI[4] SEQ[1]                 reply 92H/B2H: DI[4] data SEQ[1]
read address 13H       (none, address AA..AA)        reply 93H: address[6]
write 14H              DI[4] PA[1] P0P1P2[3] C0..C3[4] data        reply 94H: (none)
write address 15H      new address[6] (to AA..AA)   reply 95H: (none)
broadcast time 08H     ssmmhhDDMMYY[6] (to 99..99)  no reply
freeze 16H             mmhhDDMM[4] (99 = any)       reply 96H: (none)
change baud 17H        Z[1]                         reply 97H: Z[1]
change password 18H    DI[4] old PA+P[4] new PA+P[4] reply 98H: new PA+P[4]
clear demand 19H       PA+P[4] C[4]                 reply 99H
clear meter 1AH        PA+P[4] C[4]                 reply 9AH
clear events 1BH       PA+P[4] C[4] DI[4]           reply 9BH
control 1CH            PA+P[4] C[4] N1 N2 ssmmhhDDMMYY[6]          reply 9CH: (none)
multi-function 1DH     N[1]                         reply 9DH: N[1]
abnormal reply         ERR[1] (C0H | function)
=====================  ===========================================================================

-1997: read 01H DI[2] (reply 81H/A1H DI[2] data), follow-up 02H DI[2], write 04H DI[2] PA+P[4] data,
time sync 08H, write address 0AH, change baud 0CH Z[1], change password 0FH old[4] new[4],
clear demand 10H.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .errors import LocalProtocolError
from .formats import Bcd, Timestamp
from .frame import FUNCTION_TABLE, Version
from .messages import V1997, V2007

TS_SYNC: Final = Timestamp("YYMMDDhhmmss")
TS_LOAD: Final = Timestamp("YYMMDDhhmm")
TS_VALIDITY: Final = Timestamp("YYMMDDhhmmss")
BLOCK_COUNT: Final = Bcd(1, 0)  # N of a load-record read: 1 BCD byte

#: Baud rate feature word Z (-2007 §7.8, -1997 §5.9): bit → bits per second.
BAUD_BITS: Final[Mapping[int, int]] = {600: 1, 1200: 2, 2400: 3, 4800: 4, 9600: 5, 19200: 6}


def di_bytes(di: int, version: Version) -> bytes:
    """The DI as sent: 4 bytes LSB first in -2007, 2 in -1997."""
    width = 4 if version == V2007 else 2
    if not 0 <= di < 1 << (8 * width):
        raise LocalProtocolError(f"DI {di:X} does not fit {width} bytes (DL/T 645-{int(version)})")
    return di.to_bytes(width, "little")


def hex_field(text: str, size: int, what: str) -> bytes:
    """Password / operator code: hex digits as written (most significant first) → wire (LSB first)."""
    if len(text) != size * 2:
        raise LocalProtocolError(f"{what} must be {size * 2} hex digits, got {text!r}")
    try:
        return bytes.fromhex(text)[::-1]
    except ValueError:
        raise LocalProtocolError(f"{what} must be {size * 2} hex digits, got {text!r}") from None


def hex_text(data: bytes) -> str:
    """Inverse of :func:`hex_field`: wire bytes (LSB first) → hex digits as written."""
    return data[::-1].hex().upper()


def password_field(level: int, password: str) -> bytes:
    """PA P0P1P2: the password level byte, then the 6-digit password."""
    if not 0 <= level <= 0xFF:
        raise LocalProtocolError(f"password level must be 0..255, got {level}")
    return bytes([level]) + hex_field(password, 3, "password")


_FUNCTION_CODES: Final[Mapping[tuple[Version, str], int]] = {
    (version, name): code for code, (version, name) in FUNCTION_TABLE.items()
}
_FUNCTION_CODES_ALL: Final = {**_FUNCTION_CODES, (V1997, "broadcast_time"): 0x08}


def function_code(version: Version, name: str) -> int:
    """Function code of ``name`` in ``version`` (-1997 broadcast time 08H is not in the table)."""
    try:
        return _FUNCTION_CODES_ALL[(version, name)]
    except KeyError:
        raise LocalProtocolError(f"DL/T 645-{int(version)} has no function {name!r}") from None

