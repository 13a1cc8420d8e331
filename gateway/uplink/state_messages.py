"""What the link says about the gateway itself: the retained birth / will / death payloads on
`P/G/state`. `bdseq`, the session number that ties a will to its birth across restarts, is kept
by `gateway.store.bdseq.BdseqCounter`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from protocols import payload

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Gateway UTC time in integer milliseconds, as every payload's `ts` carries it."""
    return time.time_ns() // 1_000_000




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
    #: Payload v2: the alias bindings the birth declares (None: v1, no ``aliases`` field).
    bindings: Callable[[], Sequence[payload.Binding]] | None = None
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
            bindings=self.bindings() if self.bindings is not None else None,
        )

    def will(self, bdseq: int) -> bytes:
        # Built at connect time; the broker publishes it whenever we vanish.
        return payload.build_death(self._envelope(), bdseq=bdseq)

    def death(self, bdseq: int) -> bytes:
        return payload.build_death(self._envelope(), bdseq=bdseq)
