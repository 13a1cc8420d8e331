"""Typed requests and replies for every DL/T 645-2007 and -1997 function, and their codecs.

Each message is a frozen, slotted dataclass. :func:`encode` turns one into frame bytes; :func:`decode`
turns one frame into the right message. Dispatch is a table keyed by (edition, function code,
direction) — there is no if-chain over function codes.

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

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, TypeAlias, cast

from .catalogue import ERROR_WORD_1997, ERROR_WORD_2007, Catalogue, catalogue_for
from .errors import (
    DataError,
    FrameError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from .formats import Bcd, Timestamp, Value
from .frame import (
    BROADCAST_ADDRESS,
    FUNCTION_TABLE,
    WILDCARD_ADDRESS,
    Control,
    RawFrame,
    Version,
    build_frame,
    parse_frame,
)
from .items import Reading

V2007: Final = Version.V2007
V1997: Final = Version.V1997

_TS_SYNC: Final = Timestamp("YYMMDDhhmmss")
_TS_LOAD: Final = Timestamp("YYMMDDhhmm")
_TS_VALIDITY: Final = Timestamp("YYMMDDhhmmss")
_BLOCK_COUNT: Final = Bcd(1, 0)  # N of a load-record read: 1 BCD byte

#: Baud rate feature word Z (-2007 §7.8, -1997 §5.9): bit → bits per second.
BAUD_BITS: Final[Mapping[int, int]] = {600: 1, 1200: 2, 2400: 3, 4800: 4, 9600: 5, 19200: 6}


class ControlAction(enum.IntEnum):
    """Control type N1 of a 1CH frame (DL/T 645-2007 §7.13 and the 2013 filing)."""

    TRIP = 0x1A  # 跳闸
    ALLOW_CLOSE = 0x1B  # 合闸允许: the customer presses the button to close
    DIRECT_CLOSE = 0x1C  # 直接合闸
    ALARM = 0x2A  # 报警
    ALARM_RELEASE = 0x2B  # 报警解除
    PROTECT = 0x3A  # 保电
    PROTECT_RELEASE = 0x3B  # 保电解除


class OutputSignal(enum.IntEnum):
    """Multi-function terminal output of a 1DH frame."""

    CLOCK_SECOND_PULSE = 0x00
    DEMAND_PERIOD = 0x01
    TIME_SLOT_SWITCH = 0x02


def _di_bytes(di: int, version: Version) -> bytes:
    width = 4 if version == V2007 else 2
    if not 0 <= di < 1 << (8 * width):
        raise LocalProtocolError(f"DI {di:X} does not fit {width} bytes (DL/T 645-{int(version)})")
    return di.to_bytes(width, "little")


def _hex_field(text: str, size: int, what: str) -> bytes:
    """Password / operator code: hex digits as written (most significant first) → wire (LSB first)."""
    if len(text) != size * 2:
        raise LocalProtocolError(f"{what} must be {size * 2} hex digits, got {text!r}")
    try:
        return bytes.fromhex(text)[::-1]
    except ValueError:
        raise LocalProtocolError(f"{what} must be {size * 2} hex digits, got {text!r}") from None


def _hex_text(data: bytes) -> str:
    return data[::-1].hex().upper()


def _auth(level: int, password: str) -> bytes:
    if not 0 <= level <= 0xFF:
        raise LocalProtocolError(f"password level must be 0..255, got {level}")
    return bytes([level]) + _hex_field(password, 3, "password")


# ---------------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Read data (11H; 01H in -1997). Fields: ``address``, ``di``, ``version``; ``count`` (N blocks)
    and ``start`` (first record time) only for load-record identifiers (06xxxxxx)."""

    address: str
    di: int
    version: Version = V2007
    count: int | None = None
    start: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ReadReply:
    """Normal read reply (91H/B1H; 81H/A1H). Fields: ``address``, ``di``, ``data`` (raw value bytes),
    ``readings`` (decoded), ``more_follows`` (D5: send a follow-up request), ``version``."""

    address: str
    di: int
    data: bytes
    readings: tuple[Reading, ...] = ()
    more_follows: bool = False
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ReadFollowupRequest:
    """Read follow-up data (12H; 02H in -1997). ``seq`` is the frame sequence (-2007 only)."""

    address: str
    di: int
    seq: int = 1
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ReadFollowupReply:
    """Follow-up reply (92H/B2H; 82H/A2H); fields as :class:`ReadReply` plus ``seq`` (-2007).
    ``readings`` is empty: the data continues earlier frames, decoded once joined."""

    address: str
    di: int
    data: bytes
    readings: tuple[Reading, ...] = ()
    seq: int | None = None
    more_follows: bool = False
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class RereadRequest:
    """-1997 re-read (03H): ask the meter to repeat its last reply."""

    address: str
    version: Version = V1997


@dataclass(frozen=True, slots=True)
class ReadAddressRequest:
    """Read communication address (13H), sent to the AA wildcard: only valid with one meter on the line."""

    address: str = WILDCARD_ADDRESS
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ReadAddressReply:
    """Reply 93H: ``address`` is the meter's own address (also the data field)."""

    address: str
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Write data (14H; 04H in -1997). ``data`` is the raw value bytes; ``operator`` (-2007 only)."""

    address: str
    di: int
    data: bytes
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class WriteAddressRequest:
    """Write communication address (15H; 0AH in -1997), sent to the AA wildcard."""

    new_address: str
    address: str = WILDCARD_ADDRESS
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class TimeSyncRequest:
    """Broadcast time sync (08H), sent to 99..99; meters do not answer."""

    moment: dt.datetime
    address: str = BROADCAST_ADDRESS
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class FreezeRequest:
    """Freeze (16H). ``when`` is ``MMDDhhmm`` as digits with ``99`` for "every" (``99999999`` = now)."""

    address: str
    when: str = "99999999"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangeBaudRequest:
    """Change communication speed (17H; 0CH in -1997). ``baudrate`` in bits per second."""

    address: str
    baudrate: int
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangeBaudReply:
    """Reply 97H (8CH): the meter confirms ``baudrate``."""

    address: str
    baudrate: int
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangePasswordRequest:
    """Change password (18H; 0FH in -1997). ``di`` (04000C01..0A, -2007 only) names the level set."""

    address: str
    old_level: int
    old_password: str
    new_level: int
    new_password: str
    di: int = 0x04000C01
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangePasswordReply:
    """Reply 98H (8FH): the new level and password as now stored."""

    address: str
    new_level: int
    new_password: str
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ClearDemandRequest:
    """Clear maximum demand (19H; 10H in -1997, which carries no data)."""

    address: str
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ClearMeterRequest:
    """Clear meter (1AH): energy, demand and events back to zero."""

    address: str
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ClearEventsRequest:
    """Clear events (1BH). ``event_di`` FFFFFFFF clears all, otherwise one event class."""

    address: str
    event_di: int = 0xFFFFFFFF
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """Trip / close / alarm / protect (1CH), plaintext layout. ``valid_until`` is the command's deadline:
    the meter ignores it afterwards, so a delayed frame cannot trip a customer hours later."""

    address: str
    action: ControlAction
    valid_until: dt.datetime
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class MultiFunctionOutputRequest:
    """Multi-function terminal output control (1DH)."""

    address: str
    signal: OutputSignal
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class MultiFunctionOutputReply:
    """Reply 9DH confirming ``signal``."""

    address: str
    signal: OutputSignal
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class AckReply:
    """A normal reply without data (write, write address, freeze, clears, control, 1997 clear demand).
    ``function`` names what was acknowledged."""

    address: str
    function: str
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Abnormal reply (D6 set). ``error_word`` as sent; ``errors`` the names of its set bits."""

    address: str
    function: str
    error_word: int
    errors: tuple[str, ...] = ()
    version: Version = V2007


Message: TypeAlias = (
    ReadRequest | ReadReply | ReadFollowupRequest | ReadFollowupReply | RereadRequest
    | ReadAddressRequest | ReadAddressReply | WriteRequest | WriteAddressRequest | TimeSyncRequest
    | FreezeRequest | ChangeBaudRequest | ChangeBaudReply | ChangePasswordRequest
    | ChangePasswordReply | ClearDemandRequest | ClearMeterRequest | ClearEventsRequest
    | ControlRequest | MultiFunctionOutputRequest | MultiFunctionOutputReply | AckReply | ErrorReply
)

_FUNCTION_CODES: Final[Mapping[tuple[Version, str], int]] = {
    (version, name): code for code, (version, name) in FUNCTION_TABLE.items()
}
_FUNCTION_CODES_ALL: Final = {**_FUNCTION_CODES, (V1997, "broadcast_time"): 0x08}


def function_code(version: Version, name: str) -> int:
    try:
        return _FUNCTION_CODES_ALL[(version, name)]
    except KeyError:
        raise LocalProtocolError(f"DL/T 645-{int(version)} has no function {name!r}") from None


# ---------------------------------------------------------------------------------------------------
# Encoding: one function per message type, in a table.


def _error_names(word: int, version: Version) -> tuple[str, ...]:
    table = ERROR_WORD_2007 if version == V2007 else ERROR_WORD_1997
    return tuple(name for bit, name in enumerate(table) if name and word >> bit & 1)


def _enc_read(m: ReadRequest) -> tuple[str, Control, bytes]:
    data = _di_bytes(m.di, m.version)
    if m.start is not None and m.count is None:
        raise LocalProtocolError("a load-record read with a start time also needs a block count")
    if m.count is not None:
        if m.version != V2007 or not 1 <= m.count <= 99:
            raise LocalProtocolError("block count N must be 1..99 (DL/T 645-2007 load records)")
        data += bytes.fromhex(f"{m.count:02d}")
        if m.start is not None:
            data += _TS_LOAD.encode(m.start)
    return m.address, Control(function_code(m.version, "read_data")), data


def _enc_read_reply(m: ReadReply) -> tuple[str, Control, bytes]:
    ctrl = Control(function_code(m.version, "read_data"), reply=True, more_follows=m.more_follows)
    return m.address, ctrl, _di_bytes(m.di, m.version) + m.data


def _enc_followup(m: ReadFollowupRequest) -> tuple[str, Control, bytes]:
    data = _di_bytes(m.di, m.version)
    if m.version == V2007:
        if not 0 <= m.seq <= 0xFF:
            raise LocalProtocolError(f"follow-up sequence must be 0..255, got {m.seq}")
        data += bytes([m.seq])
    return m.address, Control(function_code(m.version, "read_followup")), data


def _enc_followup_reply(m: ReadFollowupReply) -> tuple[str, Control, bytes]:
    ctrl = Control(function_code(m.version, "read_followup"), reply=True, more_follows=m.more_follows)
    data = _di_bytes(m.di, m.version) + m.data
    if m.version == V2007:
        data += bytes([(m.seq or 0) & 0xFF])
    return m.address, ctrl, data


def _enc_reread(m: RereadRequest) -> tuple[str, Control, bytes]:
    return m.address, Control(function_code(V1997, "reread")), b""


def _enc_read_address(m: ReadAddressRequest) -> tuple[str, Control, bytes]:
    return m.address, Control(function_code(V2007, "read_address")), b""


def _enc_read_address_reply(m: ReadAddressReply) -> tuple[str, Control, bytes]:
    from .frame import encode_address

    return m.address, Control(function_code(V2007, "read_address"), reply=True), encode_address(m.address)


def _enc_write(m: WriteRequest) -> tuple[str, Control, bytes]:
    data = _di_bytes(m.di, m.version) + _auth(m.password_level, m.password)
    if m.version == V2007:
        data += _hex_field(m.operator, 4, "operator code")
    return m.address, Control(function_code(m.version, "write_data")), data + m.data


def _enc_write_address(m: WriteAddressRequest) -> tuple[str, Control, bytes]:
    from .frame import encode_address

    return m.address, Control(function_code(m.version, "write_address")), encode_address(m.new_address)


def _enc_time_sync(m: TimeSyncRequest) -> tuple[str, Control, bytes]:
    return m.address, Control(0x08), _TS_SYNC.encode(m.moment.replace(tzinfo=None))


def _enc_freeze(m: FreezeRequest) -> tuple[str, Control, bytes]:
    if len(m.when) != 8 or not m.when.isdigit():
        raise LocalProtocolError(f"freeze time must be 8 digits MMDDhhmm (99 = any), got {m.when!r}")
    return m.address, Control(function_code(V2007, "freeze")), bytes.fromhex(m.when)[::-1]


def _baud_word(baudrate: int) -> bytes:
    try:
        return bytes([1 << BAUD_BITS[baudrate]])
    except KeyError:
        raise LocalProtocolError(
            f"baud rate {baudrate} cannot be requested; DL/T 645 allows {sorted(BAUD_BITS)}"
        ) from None


def _enc_change_baud(m: ChangeBaudRequest) -> tuple[str, Control, bytes]:
    return m.address, Control(function_code(m.version, "change_baud")), _baud_word(m.baudrate)


def _enc_change_baud_reply(m: ChangeBaudReply) -> tuple[str, Control, bytes]:
    return (m.address, Control(function_code(m.version, "change_baud"), reply=True),
            _baud_word(m.baudrate))


def _enc_change_password(m: ChangePasswordRequest) -> tuple[str, Control, bytes]:
    data = _di_bytes(m.di, m.version) if m.version == V2007 else b""
    data += _auth(m.old_level, m.old_password) + _auth(m.new_level, m.new_password)
    return m.address, Control(function_code(m.version, "change_password")), data


def _enc_change_password_reply(m: ChangePasswordReply) -> tuple[str, Control, bytes]:
    return (m.address, Control(function_code(m.version, "change_password"), reply=True),
            _auth(m.new_level, m.new_password))


def _enc_clear_demand(m: ClearDemandRequest) -> tuple[str, Control, bytes]:
    if m.version == V1997:
        return m.address, Control(function_code(V1997, "clear_demand")), b""
    data = _auth(m.password_level, m.password) + _hex_field(m.operator, 4, "operator code")
    return m.address, Control(function_code(V2007, "clear_demand")), data


def _enc_clear_meter(m: ClearMeterRequest) -> tuple[str, Control, bytes]:
    data = _auth(m.password_level, m.password) + _hex_field(m.operator, 4, "operator code")
    return m.address, Control(function_code(V2007, "clear_meter")), data


def _enc_clear_events(m: ClearEventsRequest) -> tuple[str, Control, bytes]:
    data = (_auth(m.password_level, m.password) + _hex_field(m.operator, 4, "operator code")
            + _di_bytes(m.event_di, V2007))
    return m.address, Control(function_code(V2007, "clear_events")), data


def _enc_control(m: ControlRequest) -> tuple[str, Control, bytes]:
    data = (_auth(m.password_level, m.password) + _hex_field(m.operator, 4, "operator code")
            + bytes([ControlAction(m.action), 0x00]) + _TS_VALIDITY.encode(m.valid_until.replace(tzinfo=None)))
    return m.address, Control(function_code(V2007, "control")), data


def _enc_mfo(m: MultiFunctionOutputRequest) -> tuple[str, Control, bytes]:
    return m.address, Control(function_code(V2007, "multi_function_output")), bytes([m.signal])


def _enc_mfo_reply(m: MultiFunctionOutputReply) -> tuple[str, Control, bytes]:
    return (m.address, Control(function_code(V2007, "multi_function_output"), reply=True),
            bytes([m.signal]))


def _enc_ack(m: AckReply) -> tuple[str, Control, bytes]:
    return m.address, Control(function_code(m.version, m.function), reply=True), b""


def _enc_error(m: ErrorReply) -> tuple[str, Control, bytes]:
    if not 0 <= m.error_word <= 0xFF:
        raise LocalProtocolError(f"error word must be one byte, got {m.error_word:X}")
    return (m.address, Control(function_code(m.version, m.function), reply=True, abnormal=True),
            bytes([m.error_word]))


_ENCODERS: Final[Mapping[type, Callable[[Any], tuple[str, Control, bytes]]]] = {
    ReadRequest: _enc_read, ReadReply: _enc_read_reply, ReadFollowupRequest: _enc_followup,
    ReadFollowupReply: _enc_followup_reply, RereadRequest: _enc_reread,
    ReadAddressRequest: _enc_read_address, ReadAddressReply: _enc_read_address_reply,
    WriteRequest: _enc_write, WriteAddressRequest: _enc_write_address,
    TimeSyncRequest: _enc_time_sync, FreezeRequest: _enc_freeze,
    ChangeBaudRequest: _enc_change_baud, ChangeBaudReply: _enc_change_baud_reply,
    ChangePasswordRequest: _enc_change_password, ChangePasswordReply: _enc_change_password_reply,
    ClearDemandRequest: _enc_clear_demand, ClearMeterRequest: _enc_clear_meter,
    ClearEventsRequest: _enc_clear_events, ControlRequest: _enc_control,
    MultiFunctionOutputRequest: _enc_mfo, MultiFunctionOutputReply: _enc_mfo_reply,
    AckReply: _enc_ack, ErrorReply: _enc_error,
}


def encode(message: Message, *, preamble: int = 0) -> bytes:
    """Encode a message into frame bytes, with ``preamble`` FE wake-up bytes in front."""
    try:
        encoder = _ENCODERS[type(message)]
    except KeyError:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}") from None
    address, control, data = encoder(message)
    return build_frame(address, control, data, preamble=preamble)


# ---------------------------------------------------------------------------------------------------
# Decoding: table keyed by (version, function code, reply?).

_Decoder: TypeAlias = Callable[[RawFrame, Version, Catalogue], Message]


def _need(frame: RawFrame, size: int, what: str, exact: bool = True) -> bytes:
    data = frame.data
    if (exact and len(data) != size) or len(data) < size:
        name = FUNCTION_TABLE.get(frame.control.function, (V2007, "?"))[1]
        relation = "exactly" if exact else "at least"
        raise FrameError(
            f"{name} {'reply' if frame.control.reply else 'request'} needs {relation} {size} "
            f"data bytes ({what}), got {len(data)}"
        )
    return data


def _di_of(data: bytes, version: Version) -> int:
    return int.from_bytes(data[: 4 if version == V2007 else 2], "little")


def _readings(catalogue: Catalogue, di: int, data: bytes) -> tuple[Reading, ...]:
    return tuple(catalogue.decode(di, data))


def _dec_read(f: RawFrame, v: Version, c: Catalogue) -> Message:
    w = 4 if v == V2007 else 2
    data = _need(f, w, "DI", exact=False)
    di = _di_of(data, v)
    rest = data[w:]
    count: int | None = None
    start: dt.datetime | None = None
    if v == V2007 and rest:
        if len(rest) not in (1, 6):
            raise FrameError(f"read request: {len(rest)} bytes after the DI; expected N or N + time")
        count = int(cast(Decimal, _BLOCK_COUNT.decode(rest[:1])))
        if len(rest) == 6:
            value = _TS_LOAD.decode(rest[1:])
            if not isinstance(value, dt.datetime):
                raise DataError("load-record start time is empty")
            start = value
    elif rest:
        raise FrameError(f"-1997 read request carries {len(rest)} bytes after the DI")
    return ReadRequest(f.address, di, v, count, start)


def _dec_read_reply(f: RawFrame, v: Version, c: Catalogue) -> Message:
    w = 4 if v == V2007 else 2
    data = _need(f, w, "DI", exact=False)
    di = _di_of(data, v)
    # With follow-ups coming, this frame holds only the start of the data: an item may be cut at
    # the frame boundary, so decoding waits for the whole (Transaction joins the frames).
    readings = () if f.control.more_follows else _readings(c, di, data[w:])
    return ReadReply(f.address, di, data[w:], readings, f.control.more_follows, v)


def _dec_followup(f: RawFrame, v: Version, c: Catalogue) -> Message:
    if v == V2007:
        data = _need(f, 5, "DI and SEQ")
        return ReadFollowupRequest(f.address, _di_of(data, v), data[4], v)
    data = _need(f, 2, "DI")
    return ReadFollowupRequest(f.address, _di_of(data, v), 0, v)


def _dec_followup_reply(f: RawFrame, v: Version, c: Catalogue) -> Message:
    if v == V2007:
        data = _need(f, 5, "DI and SEQ", exact=False)
        di = _di_of(data, v)
        # A follow-up continues the data of the frames before it; only the joined data of the
        # whole exchange can be decoded (see Transaction), so readings stay empty here.
        return ReadFollowupReply(f.address, di, data[4:-1], (), data[-1], f.control.more_follows, v)
    data = _need(f, 2, "DI", exact=False)
    di = _di_of(data, v)
    return ReadFollowupReply(f.address, di, data[2:], (), None, f.control.more_follows, v)


def _dec_reread(f: RawFrame, v: Version, c: Catalogue) -> Message:
    _need(f, 0, "none")
    return RereadRequest(f.address, v)


def _dec_read_address(f: RawFrame, v: Version, c: Catalogue) -> Message:
    _need(f, 0, "none")
    return ReadAddressRequest(f.address, v)


def _dec_read_address_reply(f: RawFrame, v: Version, c: Catalogue) -> Message:
    from .frame import decode_address

    data = _need(f, 6, "address")
    inner = decode_address(data)
    if inner != f.address:
        raise FrameError(f"read-address reply from {f.address} carries another address {inner}")
    return ReadAddressReply(f.address, v)


def _dec_write(f: RawFrame, v: Version, c: Catalogue) -> Message:
    w = 4 if v == V2007 else 2
    head = w + 4 + (4 if v == V2007 else 0)
    data = _need(f, head, "DI, password" + (" and operator code" if v == V2007 else ""), exact=False)
    operator = _hex_text(data[w + 4 : w + 8]) if v == V2007 else "00000000"
    return WriteRequest(f.address, _di_of(data, v), data[head:], data[w], _hex_text(data[w + 1 : w + 4]),
                        operator, v)


def _dec_write_address(f: RawFrame, v: Version, c: Catalogue) -> Message:
    from .frame import decode_address

    data = _need(f, 6, "new address")
    return WriteAddressRequest(decode_address(data), f.address, v)


def _dec_time_sync(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 6, "ssmmhhDDMMYY")
    moment = _TS_SYNC.decode(data)
    if not isinstance(moment, dt.datetime):
        raise DataError("time sync carries an empty time")
    return TimeSyncRequest(moment, f.address, v)


def _dec_freeze(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 4, "mmhhDDMM")
    when = data[::-1].hex()
    if not when.isdigit():
        raise DataError(f"freeze time {when.upper()} is not BCD")
    return FreezeRequest(f.address, when, v)


def _baud_of(word: int) -> int:
    for baud, bit in BAUD_BITS.items():
        if word == 1 << bit:
            return baud
    raise DataError(f"baud rate word {word:02X} names no single DL/T 645 speed")


def _dec_change_baud(f: RawFrame, v: Version, c: Catalogue) -> Message:
    return ChangeBaudRequest(f.address, _baud_of(_need(f, 1, "Z")[0]), v)


def _dec_change_baud_reply(f: RawFrame, v: Version, c: Catalogue) -> Message:
    return ChangeBaudReply(f.address, _baud_of(_need(f, 1, "Z")[0]), v)


def _dec_change_password(f: RawFrame, v: Version, c: Catalogue) -> Message:
    if v == V2007:
        data = _need(f, 12, "DI, old and new password")
        di, data = _di_of(data, v), data[4:]
    else:
        data = _need(f, 8, "old and new password")
        di = 0
    return ChangePasswordRequest(f.address, data[0], _hex_text(data[1:4]), data[4],
                                 _hex_text(data[5:8]), di, v)


def _dec_change_password_reply(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 4, "new password")
    return ChangePasswordReply(f.address, data[0], _hex_text(data[1:4]), v)


def _dec_clear_demand(f: RawFrame, v: Version, c: Catalogue) -> Message:
    if v == V1997:
        _need(f, 0, "none")
        return ClearDemandRequest(f.address, version=v)
    data = _need(f, 8, "password and operator code")
    return ClearDemandRequest(f.address, data[0], _hex_text(data[1:4]), _hex_text(data[4:8]), v)


def _dec_clear_meter(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 8, "password and operator code")
    return ClearMeterRequest(f.address, data[0], _hex_text(data[1:4]), _hex_text(data[4:8]), v)


def _dec_clear_events(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 12, "password, operator code and event DI")
    return ClearEventsRequest(f.address, int.from_bytes(data[8:12], "little"), data[0],
                              _hex_text(data[1:4]), _hex_text(data[4:8]), v)


def _dec_control(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 16, "password, operator code, N1, N2 and validity time")
    try:
        action = ControlAction(data[8])
    except ValueError:
        raise DataError(f"control type {data[8]:02X} is not one of 1A/1B/1C/2A/2B/3A/3B") from None
    valid_until = _TS_VALIDITY.decode(data[10:16])
    if not isinstance(valid_until, dt.datetime):
        raise DataError("control frame carries an empty validity time")
    return ControlRequest(f.address, action, valid_until, data[0], _hex_text(data[1:4]),
                          _hex_text(data[4:8]), v)


def _dec_mfo(f: RawFrame, v: Version, c: Catalogue) -> Message:
    try:
        return MultiFunctionOutputRequest(f.address, OutputSignal(_need(f, 1, "N")[0]), v)
    except ValueError:
        raise DataError(f"multi-function output {f.data[0]:02X} is not 00/01/02") from None


def _dec_mfo_reply(f: RawFrame, v: Version, c: Catalogue) -> Message:
    try:
        return MultiFunctionOutputReply(f.address, OutputSignal(_need(f, 1, "N")[0]), v)
    except ValueError:
        raise DataError(f"multi-function output {f.data[0]:02X} is not 00/01/02") from None


def _ack_decoder(name: str) -> _Decoder:
    def decode_ack(f: RawFrame, v: Version, c: Catalogue) -> Message:
        _need(f, 0, "none")
        return AckReply(f.address, name, v)

    return decode_ack


_DECODERS: Final[dict[tuple[Version, int, bool], _Decoder]] = {
    (V2007, 0x11, False): _dec_read, (V2007, 0x11, True): _dec_read_reply,
    (V2007, 0x12, False): _dec_followup, (V2007, 0x12, True): _dec_followup_reply,
    (V2007, 0x13, False): _dec_read_address, (V2007, 0x13, True): _dec_read_address_reply,
    (V2007, 0x14, False): _dec_write, (V2007, 0x14, True): _ack_decoder("write_data"),
    (V2007, 0x15, False): _dec_write_address, (V2007, 0x15, True): _ack_decoder("write_address"),
    (V2007, 0x08, False): _dec_time_sync,
    (V2007, 0x16, False): _dec_freeze, (V2007, 0x16, True): _ack_decoder("freeze"),
    (V2007, 0x17, False): _dec_change_baud, (V2007, 0x17, True): _dec_change_baud_reply,
    (V2007, 0x18, False): _dec_change_password, (V2007, 0x18, True): _dec_change_password_reply,
    (V2007, 0x19, False): _dec_clear_demand, (V2007, 0x19, True): _ack_decoder("clear_demand"),
    (V2007, 0x1A, False): _dec_clear_meter, (V2007, 0x1A, True): _ack_decoder("clear_meter"),
    (V2007, 0x1B, False): _dec_clear_events, (V2007, 0x1B, True): _ack_decoder("clear_events"),
    (V2007, 0x1C, False): _dec_control, (V2007, 0x1C, True): _ack_decoder("control"),
    (V2007, 0x1D, False): _dec_mfo, (V2007, 0x1D, True): _dec_mfo_reply,
    (V1997, 0x01, False): _dec_read, (V1997, 0x01, True): _dec_read_reply,
    (V1997, 0x02, False): _dec_followup, (V1997, 0x02, True): _dec_followup_reply,
    (V1997, 0x03, False): _dec_reread,
    (V1997, 0x04, False): _dec_write, (V1997, 0x04, True): _ack_decoder("write_data"),
    (V1997, 0x0A, False): _dec_write_address, (V1997, 0x0A, True): _ack_decoder("write_address"),
    (V1997, 0x0C, False): _dec_change_baud, (V1997, 0x0C, True): _dec_change_baud_reply,
    (V1997, 0x0F, False): _dec_change_password, (V1997, 0x0F, True): _dec_change_password_reply,
    (V1997, 0x10, False): _dec_clear_demand, (V1997, 0x10, True): _ack_decoder("clear_demand"),
}


def decode_raw(frame: RawFrame, catalogue: Catalogue | None = None) -> Message:
    """Decode an already-delimited, checksum-valid frame into its message."""
    code = frame.control.function
    entry = FUNCTION_TABLE.get(code)
    if entry is None:
        raise FrameError(f"function code {code:02X}H is not defined in DL/T 645-2007 or -1997")
    version, name = entry
    if catalogue is not None and catalogue.version != version:
        catalogue = None
    cat = catalogue or catalogue_for(version)
    if frame.control.abnormal:
        if not frame.control.reply:
            raise FrameError("abnormal-reply bit set on a frame sent by the master")
        if not 1 <= len(frame.data) <= 2:
            raise FrameError(f"abnormal reply must carry a 1-byte error word, got {len(frame.data)} bytes")
        word = int.from_bytes(frame.data, "little")
        return ErrorReply(frame.address, name, word, _error_names(word, version), version)
    try:
        decoder = _DECODERS[(version, code, frame.control.reply)]
    except KeyError:
        raise FrameError(
            f"{name} (function {code:02X}H) has no {'reply' if frame.control.reply else 'request'} form"
        ) from None
    try:
        return decoder(frame, version, cat)
    except ProtocolError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        # Defence in depth: nothing but our own errors may escape the decoder.
        raise RemoteProtocolError(f"cannot decode {name} frame: {exc}") from None


def decode(frame: bytes, catalogue: Catalogue | None = None) -> Message:
    """Decode exactly one frame (FE preamble allowed). Raises only :class:`ProtocolError` subclasses."""
    return decode_raw(parse_frame(frame), catalogue)


def build_read_reply(
    address: str, di: int, values: Sequence[Value], *, version: Version = V2007,
    catalogue: Catalogue | None = None, more_follows: bool = False,
) -> ReadReply:
    """Build a read reply from values via the catalogue (simulators, tests)."""
    cat = catalogue or catalogue_for(version)
    data = encode_values(cat, di, values)
    return ReadReply(address, di, data, tuple(cat.decode(di, data)), more_follows, version)


def encode_values(catalogue: Catalogue, di: int, values: Sequence[Value]) -> bytes:
    """Encode the values of a DI (or of every member of a block DI, in order) as its data field."""
    from .items import encode_item

    item = catalogue.lookup(di)
    if item is not None:
        return encode_item(item, values)
    members = catalogue.members(di)
    if members is None:
        raise LocalProtocolError(f"DI {di:0{catalogue.di_digits}X} is not in the catalogue; cannot encode")
    out = bytearray()
    pos = 0
    for member in members:
        n = len(member.fields)
        if pos >= len(values):
            break
        out += encode_item(member, values[pos : pos + n])
        pos += n
    if pos != len(values):
        raise LocalProtocolError(f"block {di:08X}: {len(values) - pos} values left over")
    return bytes(out)
