"""Stream splitter: turns whatever a serial port hands us into whole, checksum-valid frames.

A serial read returns arbitrary chunks: half a frame, two frames, FE wake-up bytes, line noise after a
relay switched. The splitter keeps a bounded buffer and:

* skips FE preambles and any byte that cannot start a frame;
* delimits a frame by its **length byte**, never by searching for 16H — scrambled data may contain
  both 68H and 16H;
* on a bad second 68H, an impossible length, a wrong end byte or a checksum mismatch, drops only the
  first byte and resynchronises on the next 68H (the real frame may start inside the bad one).

Plain Python on purpose: a frame is ≤ 212 bytes and the bus runs at a few hundred bytes per second.
"""

from __future__ import annotations

from .frame import END, HEADER_LENGTH, MAX_DATA_LENGTH, OVERHEAD, PREAMBLE, START


class FrameSplitter:
    """Feed bytes in, get complete frames out. No I/O, no clocks.

    Counters (for bus statistics): ``frames``, ``garbage_bytes`` (discarded, FE preambles excluded),
    ``checksum_errors``, ``framing_errors``.
    """

    __slots__ = ("_buf", "checksum_errors", "frames", "framing_errors", "garbage_bytes", "max_length")

    def __init__(self, max_length: int = MAX_DATA_LENGTH) -> None:
        self._buf = bytearray()
        self.max_length = max_length
        self.frames = 0
        self.garbage_bytes = 0
        self.checksum_errors = 0
        self.framing_errors = 0

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame (bounded by one maximal frame)."""
        return len(self._buf)

    def clear(self) -> None:
        """Forget a partial frame (e.g. after a transaction timed out)."""
        self._discard(len(self._buf))

    def _discard(self, count: int) -> None:
        dropped = self._buf[:count]
        self.garbage_bytes += count - dropped.count(PREAMBLE)
        del self._buf[:count]

    def _complete_frame_after_false_start(self) -> int:
        """Offset of a complete, checksum-valid frame starting after position 0, or -1."""
        buf = self._buf
        pos = buf.find(START, 1)
        while pos > 0:
            if len(buf) - pos < OVERHEAD:
                return -1
            length = buf[pos + 9]
            total = OVERHEAD + length
            if (
                buf[pos + 7] == START
                and length <= self.max_length
                and len(buf) - pos >= total
                and buf[pos + total - 1] == END
                and (sum(buf[pos : pos + total - 2]) & 0xFF) == buf[pos + total - 2]
            ):
                return pos
            pos = buf.find(START, pos + 1)
        return -1

    def feed(self, chunk: bytes) -> list[bytes]:
        """Append ``chunk`` and return every complete valid frame now available (without preamble)."""
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        while True:
            start = buf.find(START)
            if start < 0:
                self._discard(len(buf))
                return out
            if start:
                self._discard(start)
            if len(buf) < HEADER_LENGTH:
                return out
            length = buf[9]
            if buf[7] != START or length > self.max_length:
                self.framing_errors += 1
                self._discard(1)
                continue
            total = OVERHEAD + length
            if len(buf) < total:
                later = self._complete_frame_after_false_start()
                if later < 0:
                    return out
                # A plausible header promised more bytes than came, but a whole valid frame already
                # sits behind it: the header was noise. Without this, a noise 68 with a large length
                # byte would hold the real reply until 200 more bytes arrive on a quiet bus.
                self.framing_errors += 1
                self._discard(later)
                continue
            if buf[total - 1] != END:
                self.framing_errors += 1
                self._discard(1)
                continue
            if (sum(buf[: total - 2]) & 0xFF) != buf[total - 2]:
                self.checksum_errors += 1
                self._discard(1)
                continue
            out.append(bytes(buf[:total]))
            del buf[:total]
            self.frames += 1
