"""Decode one DL/T 645 frame into its typed message: one decoder per (edition, function, direction).

:func:`decode` parses the frame and :func:`decode_raw` dispatches on ``_DECODERS``, a table keyed by
(edition, function code, reply?) — there is no if-chain over function codes. Abnormal replies become
:class:`ErrorReply` with the names of their error-word bits. Whatever a meter sends, only our own
:class:`ProtocolError` subclasses escape (a garbled reply is a remote error, never a crash). Field
layouts: :mod:`.data_fields`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Final, TypeAlias, cast

from .catalogue import ERROR_WORD_1997, ERROR_WORD_2007, Catalogue, catalogue_for
from .data_fields import BAUD_BITS, BLOCK_COUNT, TS_LOAD, TS_SYNC, TS_VALIDITY, hex_text
from .errors import DataError, FrameError, ProtocolError, RemoteProtocolError
from .frame import FUNCTION_TABLE, RawFrame, Version, parse_frame
from .items import Reading
from .messages import (
    V1997,
    V2007,
    AckReply,
    ChangeBaudReply,
    ChangeBaudRequest,
    ChangePasswordReply,
    ChangePasswordRequest,
    ClearDemandRequest,
    ClearEventsRequest,
    ClearMeterRequest,
    ControlAction,
    ControlRequest,
    ErrorReply,
    FreezeRequest,
    Message,
    MultiFunctionOutputReply,
    MultiFunctionOutputRequest,
    OutputSignal,
    ReadAddressReply,
    ReadAddressRequest,
    ReadFollowupReply,
    ReadFollowupRequest,
    ReadReply,
    ReadRequest,
    RereadRequest,
    TimeSyncRequest,
    WriteAddressRequest,
    WriteRequest,
)

_Decoder: TypeAlias = Callable[[RawFrame, Version, Catalogue], Message]


def _error_names(word: int, version: Version) -> tuple[str, ...]:
    table = ERROR_WORD_2007 if version == V2007 else ERROR_WORD_1997
    return tuple(name for bit, name in enumerate(table) if name and word >> bit & 1)


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
        count = int(cast(Decimal, BLOCK_COUNT.decode(rest[:1])))
        if len(rest) == 6:
            value = TS_LOAD.decode(rest[1:])
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
    operator = hex_text(data[w + 4 : w + 8]) if v == V2007 else "00000000"
    return WriteRequest(f.address, _di_of(data, v), data[head:], data[w], hex_text(data[w + 1 : w + 4]),
                        operator, v)


def _dec_write_address(f: RawFrame, v: Version, c: Catalogue) -> Message:
    from .frame import decode_address

    data = _need(f, 6, "new address")
    return WriteAddressRequest(decode_address(data), f.address, v)


def _dec_time_sync(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 6, "ssmmhhDDMMYY")
    moment = TS_SYNC.decode(data)
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
    return ChangePasswordRequest(f.address, data[0], hex_text(data[1:4]), data[4],
                                 hex_text(data[5:8]), di, v)


def _dec_change_password_reply(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 4, "new password")
    return ChangePasswordReply(f.address, data[0], hex_text(data[1:4]), v)


def _dec_clear_demand(f: RawFrame, v: Version, c: Catalogue) -> Message:
    if v == V1997:
        _need(f, 0, "none")
        return ClearDemandRequest(f.address, version=v)
    data = _need(f, 8, "password and operator code")
    return ClearDemandRequest(f.address, data[0], hex_text(data[1:4]), hex_text(data[4:8]), v)


def _dec_clear_meter(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 8, "password and operator code")
    return ClearMeterRequest(f.address, data[0], hex_text(data[1:4]), hex_text(data[4:8]), v)


def _dec_clear_events(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 12, "password, operator code and event DI")
    return ClearEventsRequest(f.address, int.from_bytes(data[8:12], "little"), data[0],
                              hex_text(data[1:4]), hex_text(data[4:8]), v)


def _dec_control(f: RawFrame, v: Version, c: Catalogue) -> Message:
    data = _need(f, 16, "password, operator code, N1, N2 and validity time")
    try:
        action = ControlAction(data[8])
    except ValueError:
        raise DataError(f"control type {data[8]:02X} is not one of 1A/1B/1C/2A/2B/3A/3B") from None
    valid_until = TS_VALIDITY.decode(data[10:16])
    if not isinstance(valid_until, dt.datetime):
        raise DataError("control frame carries an empty validity time")
    return ControlRequest(f.address, action, valid_until, data[0], hex_text(data[1:4]),
                          hex_text(data[4:8]), v)


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
