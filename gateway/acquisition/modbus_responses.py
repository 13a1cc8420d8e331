"""Register read responses decoded in one step, registered with each pymodbus client.

pymodbus's stock read-registers response unpacks a reply one register at a time and then builds a
full debug string of it (``str(pdu)`` is evaluated for a debug log line even when debug logging
is off). For a gateway polling a hundred meters a second that was a tenth of its CPU. These
subclasses keep pymodbus's framing, transaction matching and error handling, and change only the
two steps: all registers come from one ``struct.unpack_from`` (and their bytes are kept, so the
gateway decodes values straight from them), and ``str()`` is a short summary.
They are installed through pymodbus's own extension point, ``client.register(...)``, which
replaces the response class for their function code on that client only.
"""

from __future__ import annotations

import struct

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

#: The struct format of n big-endian registers, by n: a byte count (one byte) holds at most 127.
_REGISTERS = tuple(struct.Struct(f">{count}H") for count in range(128))


def _decode_registers(pdu: ReadHoldingRegistersResponse, data: bytes) -> None:
    byte_count = int(data[0])
    if byte_count >= len(data):
        raise ModbusIOException(
            f"byte_count {byte_count} > length of packet {len(data)}",
            function_code=pdu.function_code,
        )
    pdu.registers = list(_REGISTERS[byte_count // 2].unpack_from(data, 1))
    pdu.register_bytes = bytes(data[1 : 1 + byte_count])  # type: ignore[attr-defined]


def register_bytes(pdu: ModbusPDU) -> bytes:
    """The registers of a read reply as they came off the wire (2 bytes each, big-endian): kept by
    the classes below, rebuilt from ``registers`` for any other response class."""
    data = getattr(pdu, "register_bytes", None)
    if isinstance(data, bytes):
        return data
    return struct.pack(f">{len(pdu.registers)}H", *pdu.registers)


def _summary(pdu: ReadHoldingRegistersResponse) -> str:
    return (f"{type(pdu).__name__}(dev_id={pdu.dev_id}, transaction_id={pdu.transaction_id}, "
            f"{len(pdu.registers)} registers)")


class HoldingRegistersResponse(ReadHoldingRegistersResponse):
    """Function 3 reply: the same registers as pymodbus's, decoded at once."""

    def decode(self, data: bytes) -> None:
        _decode_registers(self, data)

    def __str__(self) -> str:
        return _summary(self)


class InputRegistersResponse(ReadInputRegistersResponse):
    """Function 4 reply: the same registers as pymodbus's, decoded at once."""

    def decode(self, data: bytes) -> None:
        _decode_registers(self, data)

    def __str__(self) -> str:
        return _summary(self)


RESPONSE_CLASSES = (HoldingRegistersResponse, InputRegistersResponse)
