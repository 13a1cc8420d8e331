"""DL/T 645-2007 load records (负荷记录, appendix A.7): the data field of a 06xxxxxx read reply.

A meter stores a load record every recording period (负荷记录间隔, 15 minutes by default) whether or
not anybody reads its bus: a comm fault on the RS-485 line loses nothing the meter measured. The
master asks for ``N`` records from a start time (``ReadRequest(di=0x06040001, count=N,
start=...)``: DI2 the record class, DI1 DI0 ``0001`` "records from a given time") and the meter
answers with the records back to back, in one frame or joined follow-up frames.

One record, after the frame's +33H is removed (bytes, in wire order)::

    A0 A0                start code; E0 E0 marks a record the meter itself flags as incorrect
    L                    byte count from the time through the last block separator (binary)
    mm hh DD MM YY       record time, BCD, least significant first like every DL/T 645 field
    block 1 + AA         voltage, current, frequency  (17 bytes)
    block 2 + AA         active and reactive power    (24 bytes)
    block 3 + AA         power factor                 (8 bytes)
    block 4 + AA         total energy: forward active, reverse active, combined reactive 1 and 2,
                         4 bytes XXXXXX.XX each       (16 bytes)
    block 5 + AA         four-quadrant reactive       (16 bytes)
    block 6 + AA         present demand               (6 bytes)
    CS                   modulo-256 sum from the first A0 through the last separator
    E5                   end code

A class the meter does not record (its load-record mode word 04000901 switches classes on and
off) is only its ``AA`` separator; a class-4 read (0604xxxx) therefore carries block 4 alone. The
separator is unambiguous because every block is BCD and ``AA`` is not a BCD byte.

Where the layout comes from: the standard's table A.7 as quoted, field by field, in the comments
of public concentrator firmware that reads these records (start code "A0H A0H (or E0H E0H: this
block is incorrect)", byte count, time, the six blocks each closed by AAH, a checksum "from the
first A0H to the end of the last block" and a single end code E5H). Some summaries write the end
code as ``E5 E5``; the quoted table has one byte, and so do we. We know of no published byte
example of a whole reply, so the tests build their vectors from the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, cast

from construct import Bytes, Const, ConstructError, Int8ub, Struct, this

from .errors import DataError, LocalProtocolError
from .formats import Bcd, Timestamp

START: Final = b"\xa0\xa0"
BAD_START: Final = b"\xe0\xe0"
SEPARATOR: Final = 0xAA
END: Final = 0xE5
#: Block sizes of classes 1..6 (table A.7).
BLOCK_SIZES: Final = (17, 24, 8, 16, 16, 6)
ENERGY_CLASS: Final = 4
#: DI of "class-4 records from a given time" (DI3 06 load records, DI2 04 class 4, DI1 DI0 0001).
ENERGY_RECORDS_DI: Final = 0x06040001

#: One record as it sits in the data field. ``body`` is everything the byte count covers.
RECORD: Final = Struct(
    "start" / Bytes(2),
    "length" / Int8ub,
    "body" / Bytes(this.length),
    "checksum" / Int8ub,
    "end" / Const(bytes([END])),
)

_TIME: Final = Timestamp("YYMMDDhhmm")
#: Bytes of one record of a class-4 read (0604xxxx): start code, byte count, time, the energy
#: block, the six separators, checksum and end code — 32. A master sizes its reads with it.
ENERGY_RECORD_BYTES: Final = len(START) + 1 + _TIME.size + BLOCK_SIZES[ENERGY_CLASS - 1] \
    + len(BLOCK_SIZES) + 2
_ACTIVE: Final = Bcd(4, 2, "kWh")
_REACTIVE: Final = Bcd(4, 2, "kvarh", signed=True)
_ZERO: Final = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class LoadRecord:
    """One stored load record. Fields: ``time`` (the meter's local clock, naive, minute
    resolution: the end of the recording period); ``active_import`` / ``active_export`` (kWh) and
    ``reactive1`` / ``reactive2`` (combined reactive, kvarh) — the class-4 registers at ``time``,
    all None when the record carries no class-4 block; ``valid`` False when the meter flagged the
    record incorrect (start code E0 E0): its values must not be used as actuals."""

    time: dt.datetime
    active_import: Decimal | None = None
    active_export: Decimal | None = None
    reactive1: Decimal | None = None
    reactive2: Decimal | None = None
    valid: bool = True


def _energy_block(record: LoadRecord) -> bytes:
    if record.active_import is None:
        return b""
    return (_ACTIVE.encode(record.active_import) + _ACTIVE.encode(record.active_export or _ZERO)
            + _REACTIVE.encode(record.reactive1 or _ZERO) + _REACTIVE.encode(record.reactive2 or _ZERO))


def encode_load_records(records: Sequence[LoadRecord]) -> bytes:
    """The data field of a load-record reply (after the DI) holding ``records`` — simulators and
    tests; the gateway only decodes. Only the class-4 block is written; other classes are empty."""
    out = bytearray()
    for record in records:
        if record.time.second or record.time.microsecond:
            raise LocalProtocolError(f"load record time {record.time} has seconds; records are "
                                     "stamped to the minute")
        body = bytearray(_TIME.encode(record.time))
        for klass in range(1, len(BLOCK_SIZES) + 1):
            if klass == ENERGY_CLASS:
                body += _energy_block(record)
            body.append(SEPARATOR)
        head = (START if record.valid else BAD_START) + bytes([len(body)])
        checksum = sum(head + body) & 0xFF
        out += RECORD.build({"start": head[:2], "length": len(body), "body": bytes(body),
                             "checksum": checksum})
    return bytes(out)


def _decode_body(body: bytes, valid: bool) -> LoadRecord:
    if len(body) < _TIME.size:
        raise DataError(f"load record of {len(body)} bytes has no room for its time")
    moment = _TIME.decode(body[: _TIME.size])
    if not isinstance(moment, dt.datetime):
        raise DataError("load record carries an empty time")
    pos = _TIME.size
    energy: list[Decimal] | None = None
    for klass, size in enumerate(BLOCK_SIZES, start=1):
        if pos == len(body):
            break  # trailing empty classes without their separators: nothing more to read
        if body[pos] == SEPARATOR:
            pos += 1
            continue
        block = body[pos : pos + size]
        if len(block) < size or pos + size >= len(body) or body[pos + size] != SEPARATOR:
            raise DataError(f"load record {moment:%Y-%m-%d %H:%M}: class-{klass} block of {size} "
                            "bytes is not followed by the AA separator")
        if klass == ENERGY_CLASS:
            energy = [
                cast(Decimal, fmt.decode(block[i : i + 4]))
                for i, fmt in zip(range(0, 16, 4), (_ACTIVE, _ACTIVE, _REACTIVE, _REACTIVE),
                                  strict=True)]
        pos += size + 1
    if pos != len(body):
        raise DataError(f"load record {moment:%Y-%m-%d %H:%M}: {len(body) - pos} bytes after "
                        "the sixth block")
    if energy is None:
        return LoadRecord(moment, valid=valid)
    active_import, active_export, reactive1, reactive2 = energy
    return LoadRecord(moment, active_import, active_export, reactive1, reactive2, valid)


def decode_load_records(data: bytes) -> tuple[LoadRecord, ...]:
    """The records in the data field of a load-record reply (the bytes after the DI, follow-up
    frames joined). Raises only :class:`DataError` (a :class:`RemoteProtocolError`): a meter that
    sends a broken record is a remote fault, reported with what was wrong."""
    records: list[LoadRecord] = []
    pos = 0
    while pos < len(data):
        try:
            parsed = RECORD.parse(data[pos:])
        except ConstructError:
            raise DataError(f"load record {len(records) + 1} at byte {pos} is truncated or lacks "
                            "its E5 end code") from None
        start = bytes(parsed.start)
        if start not in (START, BAD_START):
            raise DataError(f"load record {len(records) + 1} starts with {start.hex().upper()}, "
                            "not A0A0 (or E0E0)")
        size = 3 + parsed.length
        expected = sum(data[pos : pos + size]) & 0xFF
        if expected != parsed.checksum:
            raise DataError(f"load record {len(records) + 1}: checksum {parsed.checksum:02X}, "
                            f"computed {expected:02X}")
        records.append(_decode_body(bytes(parsed.body), start == START))
        pos += size + 2
    return tuple(records)


__all__ = ["BLOCK_SIZES", "ENERGY_RECORDS_DI", "ENERGY_RECORD_BYTES", "RECORD", "LoadRecord", "decode_load_records",
           "encode_load_records"]
