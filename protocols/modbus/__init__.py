"""Modbus meters as data: profiles (register maps) and the sans-IO register mapping.

``protocols.modbus.profile`` holds the typed register map of a meter model,
``protocols.modbus.register_map`` plans reads and decodes/encodes register blocks. Loading a
profile file goes through :func:`protocols.profiles.load_profile`, which handles every kind.
"""

from protocols.modbus.errors import (
    ProfileError,
    RegisterDecodeError,
    RegisterEncodeError,
    RegisterMapError,
)
from protocols.modbus.profile import (
    MODBUS_MAX_READ_REGISTERS,
    DataType,
    Measurement,
    ModbusProfile,
    RegisterFunction,
    RegisterSpec,
    WordOrder,
)
from protocols.modbus.register_map import (
    DecodeProblem,
    ReadBlock,
    Reading,
    RegisterImage,
    decode_block,
    decode_register,
    decode_reply,
    decode_reply_columns,
    decode_values,
    encode_register,
    encode_values,
    plan_reads,
)

__all__ = [
    "MODBUS_MAX_READ_REGISTERS",
    "DataType",
    "DecodeProblem",
    "Measurement",
    "ModbusProfile",
    "ProfileError",
    "ReadBlock",
    "Reading",
    "RegisterDecodeError",
    "RegisterEncodeError",
    "RegisterFunction",
    "RegisterImage",
    "RegisterMapError",
    "RegisterSpec",
    "WordOrder",
    "decode_block",
    "decode_register",
    "decode_reply",
    "decode_reply_columns",
    "decode_values",
    "encode_register",
    "encode_values",
    "plan_reads",
]
