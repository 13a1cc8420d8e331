"""DL/T 645-2007 and -1997, sans-IO: bytes in, typed messages out; typed messages in, bytes out.

No sockets, clocks, threads or asyncio here (the h11 model); the gateway owns all I/O.

>>> from protocols.dlt645 import ReadRequest, encode, decode
>>> frame = encode(ReadRequest("000102030425", 0x00010000))
>>> decode(frame).di == 0x00010000
True
"""

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .catalogue import (
        CATALOGUE_1997,
        CATALOGUE_2007,
        MAPPING_1997_TO_2007,
        STATUS_WORD_3,
        STATUS_WORD_FLAGS,
        Catalogue,
        catalogue_for,
    )
    from .decoding import decode, decode_raw
    from .description import describe, value_text
    from .encoding import build_read_reply, encode, encode_values
    from .errors import (
        ChecksumError,
        DataError,
        ExceptionReply,
        FrameError,
        GarbledReply,
        LocalProtocolError,
        NoReply,
        ProtocolError,
        RemoteProtocolError,
        StrayReply,
        TransactionError,
        TruncatedFrame,
        UnexpectedReply,
    )
    from .formats import Ascii, Bcd, Digits, Flags, Format, Raw, Timestamp, Value, format_from_spec
    from .frame import (
        BROADCAST_ADDRESS,
        WILDCARD_ADDRESS,
        Control,
        Function,
        RawFrame,
        Version,
        build_frame,
        parse_frame,
    )
    from .items import DataItem, Field, Reading
    from .load_records import (
        ENERGY_RECORDS_DI,
        LoadRecord,
        decode_load_records,
        encode_load_records,
    )
    from .messages import (
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
    from .splitter import FrameSplitter

__all__ = [
    "BROADCAST_ADDRESS",
    "CATALOGUE_1997",
    "CATALOGUE_2007",
    "ENERGY_RECORDS_DI",
    "MAPPING_1997_TO_2007",
    "STATUS_WORD_3",
    "STATUS_WORD_FLAGS",
    "WILDCARD_ADDRESS",
    "AckReply",
    "Ascii",
    "Bcd",
    "Catalogue",
    "ChangeBaudReply",
    "ChangeBaudRequest",
    "ChangePasswordReply",
    "ChangePasswordRequest",
    "ChecksumError",
    "ClearDemandRequest",
    "ClearEventsRequest",
    "ClearMeterRequest",
    "Control",
    "ControlAction",
    "ControlRequest",
    "DataError",
    "DataItem",
    "Digits",
    "ErrorReply",
    "ExceptionReply",
    "Field",
    "Flags",
    "Format",
    "FrameError",
    "FrameSplitter",
    "FreezeRequest",
    "Function",
    "GarbledReply",
    "LoadRecord",
    "LocalProtocolError",
    "Message",
    "MultiFunctionOutputReply",
    "MultiFunctionOutputRequest",
    "NoReply",
    "OutputSignal",
    "ProtocolError",
    "Raw",
    "RawFrame",
    "ReadAddressReply",
    "ReadAddressRequest",
    "ReadFollowupReply",
    "ReadFollowupRequest",
    "ReadReply",
    "ReadRequest",
    "Reading",
    "RemoteProtocolError",
    "RereadRequest",
    "StrayReply",
    "TimeSyncRequest",
    "Timestamp",
    "TransactionError",
    "TruncatedFrame",
    "UnexpectedReply",
    "Value",
    "Version",
    "WriteAddressRequest",
    "WriteRequest",
    "build_frame",
    "build_read_reply",
    "catalogue_for",
    "decode",
    "decode_load_records",
    "decode_raw",
    "describe",
    "encode",
    "encode_load_records",
    "encode_values",
    "format_from_spec",
    "parse_frame",
    "value_text",
]

#: Where each public name lives: the package imports a submodule when one of its names is first
#: used (PEP 562), so ``from protocols.dlt645.messages import ControlAction`` (the control layer of
#: every gateway) loads ``messages``, ``frame`` and ``items``, not the catalogue, the codec and
#: ``construct`` that only a gateway with DL/T 645 buses needs (docs/performance.md, Memory).
_SUBMODULE: Final[dict[str, str]] = {
    "CATALOGUE_1997": "catalogue",
    "CATALOGUE_2007": "catalogue",
    "MAPPING_1997_TO_2007": "catalogue",
    "STATUS_WORD_3": "catalogue",
    "STATUS_WORD_FLAGS": "catalogue",
    "Catalogue": "catalogue",
    "catalogue_for": "catalogue",
    "decode": "decoding",
    "decode_raw": "decoding",
    "describe": "description",
    "value_text": "description",
    "build_read_reply": "encoding",
    "encode": "encoding",
    "encode_values": "encoding",
    "ChecksumError": "errors",
    "DataError": "errors",
    "ExceptionReply": "errors",
    "FrameError": "errors",
    "GarbledReply": "errors",
    "LocalProtocolError": "errors",
    "NoReply": "errors",
    "ProtocolError": "errors",
    "RemoteProtocolError": "errors",
    "StrayReply": "errors",
    "TransactionError": "errors",
    "TruncatedFrame": "errors",
    "UnexpectedReply": "errors",
    "Ascii": "formats",
    "Bcd": "formats",
    "Digits": "formats",
    "Flags": "formats",
    "Format": "formats",
    "Raw": "formats",
    "Timestamp": "formats",
    "Value": "formats",
    "format_from_spec": "formats",
    "BROADCAST_ADDRESS": "frame",
    "WILDCARD_ADDRESS": "frame",
    "Control": "frame",
    "Function": "frame",
    "RawFrame": "frame",
    "Version": "frame",
    "build_frame": "frame",
    "parse_frame": "frame",
    "DataItem": "items",
    "Field": "items",
    "Reading": "items",
    "ENERGY_RECORDS_DI": "load_records",
    "LoadRecord": "load_records",
    "decode_load_records": "load_records",
    "encode_load_records": "load_records",
    "AckReply": "messages",
    "ChangeBaudReply": "messages",
    "ChangeBaudRequest": "messages",
    "ChangePasswordReply": "messages",
    "ChangePasswordRequest": "messages",
    "ClearDemandRequest": "messages",
    "ClearEventsRequest": "messages",
    "ClearMeterRequest": "messages",
    "ControlAction": "messages",
    "ControlRequest": "messages",
    "ErrorReply": "messages",
    "FreezeRequest": "messages",
    "Message": "messages",
    "MultiFunctionOutputReply": "messages",
    "MultiFunctionOutputRequest": "messages",
    "OutputSignal": "messages",
    "ReadAddressReply": "messages",
    "ReadAddressRequest": "messages",
    "ReadFollowupReply": "messages",
    "ReadFollowupRequest": "messages",
    "ReadReply": "messages",
    "ReadRequest": "messages",
    "RereadRequest": "messages",
    "TimeSyncRequest": "messages",
    "WriteAddressRequest": "messages",
    "WriteRequest": "messages",
    "FrameSplitter": "splitter",
}


def __getattr__(name: str) -> Any:
    module = _SUBMODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULE))
