"""`bdseq`, the number that pairs an MQTT birth with the last will registered on the same
connection (DESIGN §4), kept where a full or failing disk cannot stop the link from connecting.

Why not in the database: every connection attempt takes a new number *before* TCP, so when the
number was a SQLite transaction, a full disk meant no transaction, no will, no connection — a
broker restart during a disk-full episode left the gateway dark. So the number lives in a small
file beside the database, preallocated when the daemon starts with room to spare and afterwards
only overwritten in place: an in-place `pwrite` of a few bytes into blocks the file already owns
needs no free space, and that is all a connection attempt writes.

The file (`BDSEQ_FILE_NAME` in the data directory, `FILE_SIZE` bytes) holds two slots, one per
512-byte sector, each `magic | value (u64) | crc32`. A new value goes into the slot that does
*not* hold the current one and is fsync'ed before the number is used, so a write torn by a power
cut damages only the slot being written and the other still holds the last number that may have
reached the broker. On open the valid slot with the larger value wins.

When even that write fails (read-only remount, I/O error, the file deleted while the disk is
full) the link still connects: the number is then `max(last + 1, wall clock in ms)` and lives in
memory only. A later start resumes from the file's last persisted value, which is far below any
wall-clock number, so no number that reached the broker repeats (a collision would need the
clock stepped back onto the very millisecond of an earlier fallback). The first successful write
afterwards persists the higher number again. One WARNING per distinct error says so.

Migration and downgrade: the number used to live in the store's `meta` table. `BdseqCounter.open`
takes that value as a floor (`floor`), so the first start with this code continues from it, and
a file left behind by an older run never takes the counter backwards.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from gateway.store.files import write_atomically

log = logging.getLogger(__name__)

BDSEQ_FILE_NAME = "mqtt_bdseq"
_MAGIC = b"BDSQ"
_SLOT = struct.Struct("<4sQI")  # magic, value, crc32(magic + value)
_SLOT_OFFSETS = (0, 512)  # one slot per sector: a torn write damages one slot at most
FILE_SIZE = 1024


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def encode_slot(value: int) -> bytes:
    head = _MAGIC + value.to_bytes(8, "little")
    return _SLOT.pack(_MAGIC, value, zlib.crc32(head))


def decode_slot(raw: bytes) -> int | None:
    """The value of one slot, or None when it is empty, torn or not ours."""
    if len(raw) < _SLOT.size:
        return None
    magic, value, crc = _SLOT.unpack_from(raw)
    if magic != _MAGIC or zlib.crc32(raw[:12]) != crc:
        return None
    return int(value)


class BdseqCounter:
    """Hands out bdseq numbers; `next` is what `MqttLink(next_bdseq=...)` calls before each
    connection attempt. It never raises for a disk problem (see the module docstring).

    Create with `BdseqCounter.open(path, floor=...)`; `floor` is the highest number known to
    have been used elsewhere (the store's old `meta` value), or None when that is unknown (then
    a missing file cannot be trusted to mean "never used" and the wall clock is the base).
    """

    def __init__(
        self,
        path: Path,
        value: int,
        slot: int | None,
        *,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        self.path = path
        self._value = value
        self._slot = slot  # slot holding `value` on disk; None when the file is not usable
        self._clock_ms = clock_ms
        self._persisted = slot is not None
        self._failures: dict[str, int] = {}  # error text -> count, for one WARNING per kind

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        floor: int | None = 0,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> BdseqCounter:
        """Read the file (creating and preallocating it if missing and there is room)."""
        path = Path(path)
        stored, slot, problem = _read(path)
        if problem is None and stored is None:  # no file yet: first start, or migration
            base = floor if floor is not None else clock_ms()
            return cls._created(path, base, clock_ms)
        if problem is not None:
            # The file exists but neither slot can be read: we cannot know the last number.
            base = max(floor or 0, clock_ms())
            log.warning(
                "bdseq file %s: %s; continuing from %d (from the wall clock, so no earlier "
                "birth/death number repeats)",
                path,
                problem,
                base,
            )
            return cls._created(path, base, clock_ms)
        assert stored is not None
        return cls(path, max(stored, floor or 0), slot, clock_ms=clock_ms)

    @classmethod
    def _created(cls, path: Path, base: int, clock_ms: Callable[[], int]) -> BdseqCounter:
        counter = cls(path, base, None, clock_ms=clock_ms)
        error = counter._create(base)
        counter._persisted = error is None
        if error is not None:
            log.warning(
                "bdseq file %s: cannot create it (%s); will retry at each connection attempt",
                path,
                error,
            )
        return counter

    @property
    def current(self) -> int:
        """The last number handed out (or the starting point before the first `next`)."""
        return self._value

    @property
    def persisted(self) -> bool:
        """Whether `current` is on disk (False while running on the in-memory fallback)."""
        return self._persisted

    def next(self) -> int:
        value = self._value + 1
        error = self._write(value)
        if error is None:
            self._value = value
            self._persisted = True
            if self._failures:
                log.info("bdseq file %s: writable again (bdseq %d persisted)", self.path, value)
                self._failures.clear()
            return value
        value = max(value, self._clock_ms())
        self._value = value
        self._persisted = False
        seen = self._failures.get(error, 0)
        self._failures[error] = seen + 1
        if seen == 0:
            log.warning(
                "bdseq file %s: cannot persist the MQTT birth/death number (%s); connecting "
                "with bdseq %d kept in memory (taken from the wall clock, so it cannot repeat "
                "an earlier one)",
                self.path,
                error,
                value,
            )
        return value

    # -- file I/O ------------------------------------------------------------------------------

    def _create(self, value: int) -> str | None:
        """Write a fresh preallocated file holding `value` (temp file + rename, so a crash
        leaves either no file or a whole one). Returns None on success, else the error."""
        image = bytearray(FILE_SIZE)
        image[0 : _SLOT.size] = encode_slot(value)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, bytes(image))
        except OSError as exc:
            return f"cannot create it: {exc.strerror or exc}"
        self._slot = 0
        return None

    def _write(self, value: int) -> str | None:
        """Persist `value`; returns None on success, else a short description of the error."""
        if self._slot is None:  # the file is missing or unreadable: (re)create it
            return self._create(value)
        target = 1 - self._slot  # never overwrite the slot that holds the last used number
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            return exc.strerror or str(exc)
        try:
            _write_all(fd, encode_slot(value), _SLOT_OFFSETS[target])
            os.fsync(fd)
        except OSError as exc:
            # The slot may now hold `value` or be torn; the other slot is intact either way,
            # and the number we use instead is from the wall clock, far above `value`.
            return exc.strerror or str(exc)
        finally:
            os.close(fd)
        self._slot = target
        return None


def _read(path: Path) -> tuple[int | None, int | None, str | None]:
    """(value, slot holding it, problem). (None, None, None) when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None, None
    except OSError as exc:
        return None, None, f"cannot read it ({exc.strerror or exc})"
    best: tuple[int, int] | None = None
    for slot, offset in enumerate(_SLOT_OFFSETS):
        value = decode_slot(raw[offset : offset + _SLOT.size])
        if value is not None and (best is None or value > best[0]):
            best = (value, slot)
    if best is None:
        return None, None, f"no valid record in its {len(raw)} bytes"
    return best[0], best[1], None


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:  # pragma: no cover - pwrite raises rather than writing nothing
            raise OSError("short write")
        view = view[n:]
        offset += n
