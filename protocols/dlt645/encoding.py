"""Encode DL/T 645 messages into frame bytes: one encoder per message type, in a table.

:func:`encode` looks the message's type up in ``_ENCODERS`` — there is no if-chain over function
codes — and frames the resulting (address, control, data field) with :func:`.frame.build_frame`.
:func:`encode_values` and :func:`build_read_reply` turn catalogue values into a read reply's data
field, for simulators and tests. Local mistakes (a DI that does not fit, a bad password) raise
:class:`LocalProtocolError` before any byte is sent. Field layouts: :mod:`.data_fields`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .catalogue import Catalogue, catalogue_for
from .data_fields import (
    BAUD_BITS,
    TS_LOAD,
    TS_SYNC,
    TS_VALIDITY,
    di_bytes,
    function_code,
    hex_field,
    password_field,
)
from .errors import LocalProtocolError
from .formats import Value
from .frame import Control, Version, build_frame
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


def _enc_read(m: ReadRequest) -> tuple[str, Control, bytes]:
    data = di_bytes(m.di, m.version)
    if m.start is not None and m.count is None:
        raise LocalProtocolError("a load-record read with a start time also needs a block count")
    if m.count is not None:
        if m.version != V2007 or not 1 <= m.count <= 99:
            raise LocalProtocolError("block count N must be 1..99 (DL/T 645-2007 load records)")
        data += bytes.fromhex(f"{m.count:02d}")
        if m.start is not None:
            data += TS_LOAD.encode(m.start)
    return m.address, Control(function_code(m.version, "read_data")), data


def _enc_read_reply(m: ReadReply) -> tuple[str, Control, bytes]:
    ctrl = Control(function_code(m.version, "read_data"), reply=True, more_follows=m.more_follows)
    return m.address, ctrl, di_bytes(m.di, m.version) + m.data


def _enc_followup(m: ReadFollowupRequest) -> tuple[str, Control, bytes]:
    data = di_bytes(m.di, m.version)
    if m.version == V2007:
        if not 0 <= m.seq <= 0xFF:
            raise LocalProtocolError(f"follow-up sequence must be 0..255, got {m.seq}")
        data += bytes([m.seq])
    return m.address, Control(function_code(m.version, "read_followup")), data


def _enc_followup_reply(m: ReadFollowupReply) -> tuple[str, Control, bytes]:
    ctrl = Control(function_code(m.version, "read_followup"), reply=True, more_follows=m.more_follows)
    data = di_bytes(m.di, m.version) + m.data
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
    data = di_bytes(m.di, m.version) + password_field(m.password_level, m.password)
    if m.version == V2007:
        data += hex_field(m.operator, 4, "operator code")
    return m.address, Control(function_code(m.version, "write_data")), data + m.data


def _enc_write_address(m: WriteAddressRequest) -> tuple[str, Control, bytes]:
    from .frame import encode_address

    return m.address, Control(function_code(m.version, "write_address")), encode_address(m.new_address)


def _enc_time_sync(m: TimeSyncRequest) -> tuple[str, Control, bytes]:
    return m.address, Control(0x08), TS_SYNC.encode(m.moment.replace(tzinfo=None))


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
    data = di_bytes(m.di, m.version) if m.version == V2007 else b""
    data += password_field(m.old_level, m.old_password) + password_field(m.new_level, m.new_password)
    return m.address, Control(function_code(m.version, "change_password")), data


def _enc_change_password_reply(m: ChangePasswordReply) -> tuple[str, Control, bytes]:
    return (m.address, Control(function_code(m.version, "change_password"), reply=True),
            password_field(m.new_level, m.new_password))


def _enc_clear_demand(m: ClearDemandRequest) -> tuple[str, Control, bytes]:
    if m.version == V1997:
        return m.address, Control(function_code(V1997, "clear_demand")), b""
    data = password_field(m.password_level, m.password) + hex_field(m.operator, 4, "operator code")
    return m.address, Control(function_code(V2007, "clear_demand")), data


def _enc_clear_meter(m: ClearMeterRequest) -> tuple[str, Control, bytes]:
    data = password_field(m.password_level, m.password) + hex_field(m.operator, 4, "operator code")
    return m.address, Control(function_code(V2007, "clear_meter")), data


def _enc_clear_events(m: ClearEventsRequest) -> tuple[str, Control, bytes]:
    data = (password_field(m.password_level, m.password) + hex_field(m.operator, 4, "operator code")
            + di_bytes(m.event_di, V2007))
    return m.address, Control(function_code(V2007, "clear_events")), data


def _enc_control(m: ControlRequest) -> tuple[str, Control, bytes]:
    data = (password_field(m.password_level, m.password) + hex_field(m.operator, 4, "operator code")
            + bytes([ControlAction(m.action), 0x00]) + TS_VALIDITY.encode(m.valid_until.replace(tzinfo=None)))
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
