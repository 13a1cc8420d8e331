"""The oracle of the consumer's end-to-end tests: what the simulated meters themselves served.

Each simulator keeps its own record of every read it answered (``Dlt645Meter.served``,
``ModbusMetersHandle.requests`` with ``values``): when, and which value of which quantity. That
record is independent of the gateway, its store and its outbox, so checking ``current_reads``
against it proves the whole chain — acquisition, store, uplink, broker, consumer, replay — lost
nothing and invented nothing.

The gateway stamps a read with the time it got the reply, a little after the simulator answered;
:func:`compare` pairs each stored read with the served one it came from — the newest served
before it was stamped — in time order.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from tests.gateway_rig import TEST_PROFILE, GatewayRig

#: A stored read's time is at most this much before the simulator's answer (the gateway may
#: stamp the request) ...
_EARLY_MS = 250
#: ... and at most this much after it (a loaded machine delays the gateway).
_LATE_MS = 1500
#: The data identifiers the rig's DL/T 645 profile polls (other reads, such as a clock check,
#: are not published as reads).
_POLLED_DIS = frozenset(int(r["di"], 16) for r in tomllib.loads(TEST_PROFILE)["reads"])


@dataclass(frozen=True, slots=True)
class Served:
    """One value a simulated meter put on the wire."""

    meter: str
    quantity: str
    at_ms: int
    value: Decimal


def served_reads(rig: GatewayRig) -> list[Served]:
    """Every polled value every simulated meter of ``rig`` served so far."""
    out: list[Served] = []
    for ref in rig.meters.values():
        if ref.bus in rig.lines:
            meter = rig.lines[ref.bus].meters[str(ref.address)]
            for record in list(meter.served):
                if record.di not in _POLLED_DIS:
                    continue
                for name, values in record.values.items():
                    if len(values) == 1 and isinstance(values[0], Decimal):
                        out.append(Served(ref.meter_id, name, int(record.at * 1000), values[0]))
    if rig.modbus is not None:
        for request in list(rig.modbus.requests):
            for name, value in request.values.items():
                out.append(Served(f"mb-{request.unit_id}", name, int(request.at * 1000), value))
    return out


@dataclass
class Comparison:
    """``missing``: served, never stored; ``excused``: missing but served while the gateway was
    being killed (answered, never committed); ``unserved``: stored, never served (meter,
    quantity, t_ms); ``wrong``: stored with another value than served; ``matched``: the rest."""

    matched: int = 0
    missing: list[Served] = field(default_factory=list)
    excused: list[Served] = field(default_factory=list)
    unserved: list[tuple[str, str, int]] = field(default_factory=list)
    wrong: list[tuple[Served, str | None]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unserved or self.wrong)

    def describe(self) -> str:
        return (f"{self.matched} matched, {len(self.missing)} missing {self.missing[:5]}, "
                f"{len(self.unserved)} never served {self.unserved[:5]}, {len(self.wrong)} "
                f"with another value {self.wrong[:5]}, {len(self.excused)} excused")


def compare(served: list[Served], stored: Mapping[tuple[str, str, int], str | None],
            excuse: Callable[[Served], bool] = lambda _s: False) -> Comparison:
    """Pair every stored read ``(meter, quantity, t_ms) → value text`` with the served value it
    came from, per (meter, quantity) in time order; values must be equal as decimals, and
    registers (``energy.*``) equal as text too (same scale). ``excuse`` says which served
    values may be missing."""
    result = Comparison()
    by_series: dict[tuple[str, str], list[Served]] = {}
    for s in sorted(served, key=lambda s: s.at_ms):
        by_series.setdefault((s.meter, s.quantity), []).append(s)
    rows: dict[tuple[str, str], list[int]] = {}
    for meter, quantity, t in stored:
        rows.setdefault((meter, quantity), []).append(t)
    for series in sorted(set(by_series) | set(rows)):
        pending = by_series.get(series, [])
        i = 0
        for t in sorted(rows.get(series, [])):
            while i < len(pending) and pending[i].at_ms < t - _LATE_MS:
                _miss(result, pending[i], excuse)
                i += 1
            # The newest value served up to the read's stamp is the one it stored: the gateway
            # stamps a read when the answer arrives, before it asks that meter again. An older
            # one still pending there was answered to a request whose read was never committed
            # (a daemon killed mid-poll); pairing the read with it instead shifted every later
            # pair of the series by one poll, until a poll gap wider than _LATE_MS showed the
            # shift as a "missing" value far from the kill. Only when nothing was served up to
            # the stamp is the first value served just after it taken (a stamp taken at the
            # request): looking past the stamp first paired a read with the *next* poll's answer
            # when two polls came < _EARLY_MS apart (a poll resynchronised after a round), and
            # left that next read "never served".
            j = i
            while j + 1 < len(pending) and pending[j + 1].at_ms <= t:
                j += 1
            if i < len(pending) and pending[j].at_ms <= t + _EARLY_MS:
                for s in pending[i:j]:
                    _miss(result, s, excuse)
                _check(result, pending[j], stored[(*series, t)])
                i = j + 1
            else:
                result.unserved.append((*series, t))
        for s in pending[i:]:
            _miss(result, s, excuse)
    return result


def _miss(result: Comparison, s: Served, excuse: Callable[[Served], bool]) -> None:
    (result.excused if excuse(s) else result.missing).append(s)


def _check(result: Comparison, s: Served, text: str | None) -> None:
    ok = text is not None and Decimal(text) == s.value
    if ok and s.quantity.startswith("energy."):
        ok = text == format(s.value, "f")
    if ok:
        result.matched += 1
    else:
        result.wrong.append((s, text))
