"""What the link says about the gateway itself: the retained birth / will / death payloads on
`P/G/state`, and `bdseq`, the session number that ties a will to its birth across restarts."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from protocols import payload

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Gateway UTC time in integer milliseconds, as every payload's `ts` carries it."""
    return time.time_ns() // 1_000_000




class BdseqFile:
    """`bdseq` kept in a one-line text file, for a daemon that does not keep it in the store's
    meta table. Pass `BdseqFile(path).next` as the link's `next_bdseq`.

    Written with write-to-temp + fsync + rename, so after a power cut the file holds either the
    old or the new number, never a torn one. If the disk refuses the write we log it and carry
    on with the in-memory number: delivering data matters more than a gap-free bdseq.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._value = self._load()

    def _load(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        try:
            value = int(text)
        except ValueError:
            log.warning(
                "bdseq file %s holds %r, not an integer; starting again from 0 "
                "(delete the file to silence this)",
                self.path,
                text[:40],
            )
            return 0
        return max(value, 0)

    @property
    def current(self) -> int:
        return self._value

    def next(self) -> int:
        self._value += 1
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(f"{self._value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            log.error("cannot persist bdseq %d to %s: %s", self._value, self.path, exc)
        return self._value


# --- state payloads (birth / will / death) ---------------------------------------------------


class StateMessages(Protocol):
    """Builds the three `P/G/state` payloads for a given bdseq."""

    def birth(self, bdseq: int) -> bytes: ...

    def will(self, bdseq: int) -> bytes: ...

    def death(self, bdseq: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class GatewayStateMessages:
    """State payloads built by the payload codec (`protocols.payload`).

    `position` returns the store's (epoch, last_seq): state messages are ephemeral and carry the
    durable stream's high-water mark as their `seq`, so a consumer reading a birth can tell how
    far the durable stream had got. `version`, `config_sha256` and `meters` go into the birth.
    """

    gateway_id: str
    version: str
    config_sha256: str
    meters: tuple[str, ...]
    position: Callable[[], tuple[int, int]]
    clock_ms: Callable[[], int] = field(default=lambda: wall_clock_ms())

    def _envelope(self) -> payload.Envelope:
        epoch, last_seq = self.position()
        return payload.Envelope(self.gateway_id, epoch, last_seq, self.clock_ms())

    def birth(self, bdseq: int) -> bytes:
        return payload.build_birth(
            self._envelope(),
            bdseq=bdseq,
            version=self.version,
            config_sha256=self.config_sha256,
            meters=self.meters,
        )

    def will(self, bdseq: int) -> bytes:
        # Built at connect time; the broker publishes it whenever we vanish.
        return payload.build_death(self._envelope(), bdseq=bdseq)

    def death(self, bdseq: int) -> bytes:
        return payload.build_death(self._envelope(), bdseq=bdseq)
