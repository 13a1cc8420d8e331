"""Simulated DL/T 645 meters: given a request frame and the meter's state, the reply frame or nothing.

A :class:`Dlt645Meter` is the *firmware* of one meter: it decodes a request with the project's own
codec, checks address, edition, password and deadlines, reads the physics from a
:class:`~hil_tests.load_model.SimMeter` (the shared load model), and encodes the reply. It does no
I/O and keeps no time of its own: the line (:mod:`hil_tests.serial_line`) hands it frames, and the
model's simulated clock says what "now" is. The same meter object can therefore be unit-tested
with frames alone, or put on a pty.

What the load model provides and how it maps to data identifiers (DL/T 645-2007 appendix A):

=========================  ======================================================================
energy ``00 kk tt 00``     kk 00 combined (import + export), 01 import, 02 export, 03 combined
                           reactive 1 = Q1, 04 combined reactive 2 = Q3, 05 Q1, 06 Q2 (0),
                           07 Q3, 08 Q4 (0); tt 00 total, 01..04 sharp/peak/flat/valley, FF block.
                           The model's reactive import flows with import (Q1: P>0, Q>0) and its
                           reactive export with export (Q3), so Q2 and Q4 are truthfully zero.
                           Apparent energy (09, 0A) and tariffs 5..8: no_data.
settlement days ``..01``   the model keeps no settlement history: no_data.
demand ``01 01 tt 00``     maximum import demand (total, per tariff) with its time; other kinds
                           no_data.
variables ``02``           V, I, P, Q, S, PF per phase and total, ``FF`` blocks; 02800002
                           frequency, 02800004 present demand. Phases B and C of a single-phase
                           meter: no_data (blocks stop after A).
prepayment ``00 90``       00900100/01 remaining and overdrawn energy, 00900200/01 money, blocks
                           009001FF/009002FF, and 03320201/03330201 purchase counters, 03320601/
                           03330601 totals bought, from the model meter's prepayment account
                           (:meth:`~hil_tests.load_model.SimMeter.set_prepaid`, ``recharge``);
                           no_data on a meter without one (or for the other kind of account).
events ``03``              03110000/0311000n power-down, 03300D00/03300D0n meter-cover opening
                           (with energies before and after), 03300E00/0n terminal cover (this
                           model has one cover, reported as the meter cover: terminal cover count
                           stays 0), 03010000 loss-of-voltage count and minutes per phase.
parameters ``04``          date/time (the meter clock: model time + this meter's offset and
                           drift), CT/PT ratios, address, meter number, constant, protocol
                           version, status words 1..7.
daily freeze ``05 06``     0506000n time, 0506010n import, 0506020n export (total + 4 tariffs).
load records ``06``        06000001 / 06040001 with N and a start time: class-4 records (import,
                           export, combined reactive 1 and 2 totals) every recording period of the
                           model (15 min), kept through comm faults; other 06 DIs no_data.
=========================  ======================================================================

Event records: the model remembers only the *last* episode of each kind, so the meter keeps its own
history (up to 10) by observing the model at every request and at every event it is told about
(:meth:`Dlt645Meter.power_off`, :meth:`~Dlt645Meter.open_cover` …; use these rather than the model's
methods so records carry exact times and energies). Record ``n`` beyond the history but within the
count is no_data; beyond the count it is the standard all-zero "never happened" record.

-1997 meters answer the 2-byte identifiers (9010, 901F, B611.., B621.., B630.., B650.., C010, C011,
C032 …) from the same physics through :data:`~protocols.dlt645.MAPPING_1997_TO_2007`, rounded to
the older, coarser formats.

Functions: 11H/01H read (with 12H follow-up frames for data beyond 200 bytes), 13H read address,
14H/04H write of the clock, 08H broadcast time sync (no reply), 17H/0CH change baud (reply at the
old speed, then switch), 18H change password, 19H clear demand, 1CH control (password, validity
deadline against the meter clock, then trip / allow close / close / alarm / protect), 1DH output
select, 03H re-read. Anything else gets an abnormal reply (``other_error``). A meter in a supply
outage is silent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, TypeAlias

from hil_tests.load_model import (
    LoadModel,
    MaxDemand,
    MeterSnapshot,
    RelayOutcome,
    SimMeter,
    TariffRegisters,
)
from hil_tests.serial_line import DLT645_BAUDRATES, MeterResponse
from protocols.dlt645 import (
    BROADCAST_ADDRESS,
    ENERGY_RECORDS_DI,
    MAPPING_1997_TO_2007,
    STATUS_WORD_FLAGS,
    AckReply,
    Bcd,
    Catalogue,
    ChangeBaudReply,
    ChangeBaudRequest,
    ChangePasswordReply,
    ChangePasswordRequest,
    ClearDemandRequest,
    ClearEventsRequest,
    ClearMeterRequest,
    ControlAction,
    ControlRequest,
    DataItem,
    ErrorReply,
    FreezeRequest,
    LoadRecord,
    LocalProtocolError,
    Message,
    MultiFunctionOutputReply,
    MultiFunctionOutputRequest,
    ProtocolError,
    RawFrame,
    ReadAddressReply,
    ReadAddressRequest,
    ReadFollowupReply,
    ReadFollowupRequest,
    ReadReply,
    ReadRequest,
    RereadRequest,
    Timestamp,
    TimeSyncRequest,
    Value,
    Version,
    WriteAddressRequest,
    WriteRequest,
    catalogue_for,
    decode_raw,
    encode,
    encode_load_records,
)
from protocols.dlt645.catalogue import (
    ERROR_WORD_1997,
    ERROR_WORD_2007,
    EVENT_RECORDS,
    PREPAID_BALANCES,
    PREPAID_PURCHASES,
)
from protocols.dlt645.frame import FUNCTION_TABLE, MAX_DATA_LENGTH
from protocols.dlt645.items import decode_item, encode_item

log = logging.getLogger(__name__)

V2007: Final = Version.V2007
V1997: Final = Version.V1997

#: Password level each function needs (DL/T 645-2007 §7: 02 for control, 04 for parameter writes;
#: a lower level number is a stronger password and is accepted too).
CONTROL_LEVEL: Final = 0x02
WRITE_LEVEL: Final = 0x04
DEFAULT_PASSWORDS: Final[Mapping[int, str]] = {0x02: "000000"}
PROTOCOL_VERSION_TEXT: Final = "DL/T645-2007"
METER_MODEL_TEXT: Final = "HIL-SIM645"
#: Largest data field of one frame; longer replies continue in 12H follow-up frames.
FIRST_CHUNK: Final = MAX_DATA_LENGTH - 4  # DI
FOLLOWUP_CHUNK: Final = MAX_DATA_LENGTH - 5  # DI + SEQ

#: The 1997 twins the shared mapping does not list (same quantity, older identifier).
_EXTRA_1997: Final[Mapping[int, int]] = {
    **{0x9120 + t: 0x00040000 | t << 8 for t in range(5)}, 0x912F: 0x0004FF00,
    0xB640: 0x02040000, 0xB641: 0x02040100, 0xB642: 0x02040200, 0xB643: 0x02040300,
    0xC030: 0x04000409,
}
_DEMAND_TIME_1997: Final[Mapping[int, int]] = {0xB010 + t: 0x01010000 | t << 8 for t in range(5)}


# ---------------------------------------------------------------------------------------------------
# Event history kept by the meter firmware


@dataclass
class _Episode:
    """One logged event: ``start``/``end`` (simulated epoch s) and the energies around it."""

    start: float
    end: float | None
    before: tuple[Decimal, ...]
    after: tuple[Decimal, ...] | None = None


@dataclass
class _EventHistory:
    """Newest-first episodes of one event kind, updated from the model's last-episode log."""

    seen: int = 0
    episodes: deque[_Episode] = field(default_factory=lambda: deque(maxlen=EVENT_RECORDS))

    def observe(self, count: int, start: float | None, end: float | None,
                energies: tuple[Decimal, ...]) -> None:
        if count > self.seen and start is not None:
            self.seen = count
            self.episodes.appendleft(_Episode(start, end, energies, energies if end else None))
        elif self.episodes and self.episodes[0].end is None and end is not None:
            self.episodes[0].end = end
            self.episodes[0].after = energies


def _cover_energies(s: MeterSnapshot) -> tuple[Decimal, ...]:
    """Import, export, Q1..Q4 totals — the layout of a cover-opening record (03300D01)."""
    zero = Decimal("0.00")
    return (s.energy_import.total, s.energy_export.total, s.reactive_import.total, zero,
            s.reactive_export.total, zero)


# ---------------------------------------------------------------------------------------------------
# The DI table: identifier → values, from a snapshot. One row per family, as in the catalogue.

Provider: TypeAlias = Callable[["Dlt645Meter", MeterSnapshot], "list[Value] | None"]
_ZERO = Decimal("0.00")
_ZERO_REGISTERS: Final = TariffRegisters((_ZERO, _ZERO, _ZERO, _ZERO))

#: DI2 of energy (and demand) → the model's register set. See the module docstring for quadrants.
_ENERGY_KINDS: Final[Mapping[int, Callable[[MeterSnapshot], TariffRegisters]]] = {
    0x00: lambda s: s.energy_combined,
    0x01: lambda s: s.energy_import,
    0x02: lambda s: s.energy_export,
    0x03: lambda s: s.reactive_import,
    0x04: lambda s: s.reactive_export,
    0x05: lambda s: s.reactive_import,
    0x06: lambda s: _ZERO_REGISTERS,
    0x07: lambda s: s.reactive_export,
    0x08: lambda s: _ZERO_REGISTERS,
}
TARIFFS: Final = 4

#: DI2 of instantaneous variables → per-phase attribute and total attribute of the snapshot.
_VARIABLES: Final[Mapping[int, tuple[str, str | None]]] = {
    0x01: ("voltage_v", None),
    0x02: ("current_a", None),
    0x03: ("active_kw", "active_kw"),
    0x04: ("reactive_kvar", "reactive_kvar"),
    0x05: ("apparent_kva", "apparent_kva"),
    0x06: ("power_factor", "power_factor"),
}


def _register(regs: TariffRegisters, tariff: int) -> Decimal:
    return regs.total if tariff == 0 else regs.tariffs[tariff - 1]


def _energy_provider(kind: Callable[[MeterSnapshot], TariffRegisters], tariff: int) -> Provider:
    return lambda m, s: [_register(kind(s), tariff)]


def _import_total(m: Dlt645Meter, s: MeterSnapshot) -> list[Value]:
    """The active import total register, as read: a spike armed by the rig
    (:meth:`Dlt645Meter.spike_next_read`) is added to this one read."""
    return [m.reported_import(s.energy_import.total)]


def _demand_provider(tariff: int) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value]:
        demand: MaxDemand = s.max_demand if tariff == 0 else s.max_demand_by_tariff[tariff - 1]
        return [demand.kw, m.stamp(s, demand.at)]

    return provide


def _phase_provider(attribute: str, phase: int) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value] | None:
        if phase > len(s.phase_values):
            return None
        value: Decimal = getattr(s.phase_values[phase - 1], attribute)
        return [value]

    return provide


def _total_provider(attribute: str) -> Provider:
    return lambda m, s: [getattr(s, attribute)]


def _power_down_record(n: int) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value] | None:
        return m.event_record(m._power_downs, s.power_downs.count, n, s, with_energies=False)

    return provide


def _cover_record(n: int) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value] | None:
        return m.event_record(m._covers, s.cover_openings.count, n, s, with_energies=True)

    return provide


def _freeze_provider(n: int, what: str) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value] | None:
        if n > len(s.daily_freezes):
            return None
        freeze = s.daily_freezes[n - 1]
        if what == "time":
            return [m.stamp(s, freeze.at)]
        regs = freeze.import_ if what == "import" else freeze.export
        return [regs.total, *regs.tariffs]

    return provide


def _status_word(word: int) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value]:
        st = s.status
        phases = s.phase_values
        flags: dict[str, bool] = {}
        if word == 1:
            flags = {"active_power_reverse": st.reverse_power,
                     "reactive_power_reverse": s.reactive_kvar < 0}
        elif word == 2:
            for k, letter in enumerate("abc"[: len(phases)]):
                flags[f"{letter}.active_power_reverse"] = st.reverse_phase[k]
                flags[f"{letter}.reactive_power_reverse"] = phases[k].reactive_kvar < 0
        elif word == 3:
            flags = {"relay_open": st.relay_open,
                     "relay_command_trip": st.relay_open and not st.close_allowed,
                     "pre_trip_alarm": st.pre_trip_alarm, "protect": st.protected,
                     "prepay_energy": m.prepay_kind(s) == "energy",
                     "prepay_money": m.prepay_kind(s) == "money"}
        elif word in (4, 5, 6):
            k = word - 4
            letter = "abc"[k]
            if k < len(phases):  # 失压 (bit 0): voltage gone, current flowing; 断相 (bit 7): both
                flags = {f"{letter}.voltage_loss": st.loss_of_voltage[k],
                         f"{letter}.power_reverse": st.reverse_phase[k],
                         f"{letter}.phase_break": k < len(st.phase_break) and st.phase_break[k]}
        else:  # 掉电 (bit 5) is a state bit: set only while the supply is gone, when a meter
            # without an auxiliary supply cannot answer; its trace afterwards is 03110000/01.
            flags = {"cover_open": st.cover_open, "power_down": not st.powered}
        known = {n for n in STATUS_WORD_FLAGS[word] if n}
        return [{name: flags.get(name, False) for name in known}]

    return provide


def _voltage_loss(m: Dlt645Meter, s: MeterSnapshot) -> list[Value]:
    out: list[Value] = []
    for k in range(3):
        count, minutes = m.voltage_loss(k, s.t)
        out += [Decimal(count), Decimal(minutes)]
    return out


def _prepaid_provider(quantity: str) -> Provider:
    """A prepayment item (00 90 xx xx, 0332/0333 purchase records) of a prepaid meter; a meter
    without that kind of account answers no_data, as a plain meter does."""

    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value] | None:
        value = s.prepaid.values().get(quantity) if s.prepaid is not None else None
        return None if value is None else [value]

    return provide


def _build_providers_2007() -> dict[int, Provider]:
    table: dict[int, Provider] = {}
    for kind_code, kind in _ENERGY_KINDS.items():
        for tariff in range(TARIFFS + 1):
            table[kind_code << 16 | tariff << 8] = _energy_provider(kind, tariff)
    table[0x00010000] = _import_total
    for tariff in range(TARIFFS + 1):
        table[0x01010000 | tariff << 8] = _demand_provider(tariff)
    for di2, (phase_attr, total_attr) in _VARIABLES.items():
        for phase in (1, 2, 3):
            table[0x02000000 | di2 << 16 | phase << 8] = _phase_provider(phase_attr, phase)
        if total_attr is not None:
            table[0x02000000 | di2 << 16] = _total_provider(total_attr)
    table[0x02800002] = _total_provider("frequency_hz")
    table[0x02800004] = _total_provider("demand_kw")
    table[0x03110000] = lambda m, s: [Decimal(s.power_downs.count)]
    table[0x03300D00] = lambda m, s: [Decimal(s.cover_openings.count)]
    table[0x03300E00] = lambda m, s: [Decimal(0)]
    for n in range(1, EVENT_RECORDS + 1):
        table[0x03110000 | n] = _power_down_record(n)
        table[0x03300D00 | n] = _cover_record(n)
        table[0x03300E00 | n] = lambda m, s: [None, None, *[Decimal(0)] * 12]
    table[0x03010000] = _voltage_loss
    for item in (*PREPAID_BALANCES, *PREPAID_PURCHASES):
        table[item[0]] = _prepaid_provider(item[1])
    table[0x04000101] = lambda m, s: [m.clock(s)]
    table[0x04000102] = lambda m, s: [m.clock(s)]
    table[0x0400010C] = lambda m, s: [m.clock(s)]
    table[0x04000306] = lambda m, s: [m.ct_ratio]
    table[0x04000307] = lambda m, s: [m.pt_ratio]
    table[0x04000401] = lambda m, s: [m.address]
    table[0x04000402] = lambda m, s: [m.meter_number]
    table[0x04000409] = lambda m, s: [Decimal(m.constant)]
    table[0x0400040B] = lambda m, s: [METER_MODEL_TEXT]
    table[0x0400040D] = lambda m, s: [PROTOCOL_VERSION_TEXT]
    for word in STATUS_WORD_FLAGS:
        table[0x04000500 | word] = _status_word(word)
    for n in range(1, 63):
        table[0x05060000 | n] = _freeze_provider(n, "time")
        table[0x05060100 | n] = _freeze_provider(n, "import")
        table[0x05060200 | n] = _freeze_provider(n, "export")
    return table


def _via_2007(di_2007: int, first_only: bool = False) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value] | None:
        values = PROVIDERS_2007[di_2007](m, s)
        return None if values is None else values[:1] if first_only else values

    return provide


def _demand_time_1997(di_2007: int) -> Provider:
    def provide(m: Dlt645Meter, s: MeterSnapshot) -> list[Value] | None:
        values = PROVIDERS_2007[di_2007](m, s)
        return None if values is None else values[1:]

    return provide


def _build_providers_1997() -> dict[int, Provider]:
    table: dict[int, Provider] = {}
    for di97, di07 in {**MAPPING_1997_TO_2007, **_EXTRA_1997}.items():
        if di07 in PROVIDERS_2007:  # block DIs (901F …) resolve through their members
            table[di97] = _via_2007(di07, first_only=di07 >> 24 == 0x01)
    for di97, di07 in _DEMAND_TIME_1997.items():
        table[di97] = _demand_time_1997(di07)
    table[0xC032] = lambda m, s: [m.meter_number]
    table[0xC033] = lambda m, s: [m.meter_number]
    table[0xC034] = lambda m, s: [m.address]
    return table


PROVIDERS_2007: Final = _build_providers_2007()
PROVIDERS_1997: Final = _build_providers_1997()


def _fit(item: DataItem, values: Sequence[Value]) -> list[Value]:
    """Round values to the item's formats (the -1997 formats are coarser; unsigned fields drop the
    sign) and give -1997 demand times their yearless form. Exact values pass unchanged."""
    out: list[Value] = []
    for i, value in enumerate(values):
        fmt = item.fields[min(i, len(item.fields) - 1)].format
        if isinstance(fmt, Bcd) and isinstance(value, Decimal):
            value = value.quantize(Decimal(1).scaleb(-fmt.decimals), rounding=ROUND_HALF_UP)
            if not fmt.signed:
                value = abs(value)
        elif isinstance(fmt, Timestamp) and fmt.pattern == "MMDDhhmm" and isinstance(value, dt.datetime):
            value = value.strftime("%m-%dT%H:%M")
        out.append(value)
    return out


# ---------------------------------------------------------------------------------------------------
# The meter


class Dlt645Meter:
    """One DL/T 645 meter: address, edition, passwords, clock offset, event history — and the
    :class:`~hil_tests.load_model.SimMeter` whose physics it reports.

    ``passwords`` maps password level → 6 hex digits (default level 02 = ``000000``).
    ``clock_offset_s`` is how far the meter's clock is ahead of true (simulated) time when the
    meter is created; ``clock_drift_s_per_day`` how much it gains per simulated day from then on
    (negative: it loses; a quartz within its ±0.5 s/day class is a few tenths). A time sync or a
    clock write sets the clock, and the drift carries on from the new setting. ``prepay`` (None, ``"energy"`` or ``"money"``) sets the status word 3
    prepayment bits. ``baudrates`` are the speeds a 17H request may select.
    """

    def __init__(
        self,
        sim: SimMeter,
        address: str,
        *,
        version: Version | int = V2007,
        meter_number: str | None = None,
        passwords: Mapping[int, str] | None = None,
        clock_offset_s: float = 0.0,
        clock_drift_s_per_day: float = 0.0,
        prepay: str | None = None,
        constant: int = 1200,
        baudrates: Sequence[int] = DLT645_BAUDRATES,
    ) -> None:
        if len(address) != 12 or not address.isdigit():
            raise ValueError(f"DL/T 645 address must be 12 digits, got {address!r}")
        if address == BROADCAST_ADDRESS:
            raise ValueError("999999999999 is the broadcast address; no meter may have it")
        if prepay not in (None, "energy", "money"):
            raise ValueError(f"prepay must be None, 'energy' or 'money', got {prepay!r}")
        self.sim = sim
        self._address = address
        self.version = Version(version)
        self.catalogue: Catalogue = catalogue_for(self.version)
        self._providers = PROVIDERS_2007 if self.version == V2007 else PROVIDERS_1997
        self.meter_number = meter_number or address
        self.passwords: dict[int, str] = {}
        for level, password in (passwords or DEFAULT_PASSWORDS).items():
            if not 0 <= level <= 0xFF or len(password) != 6 or not _is_hex(password):
                raise ValueError(f"password level {level}: need level 0..255 and 6 hex digits, "
                                 f"got {password!r}")
            self.passwords[level] = password.upper()
        self.clock_offset_s = clock_offset_s
        self.clock_drift_s_per_day = clock_drift_s_per_day
        #: Simulated time at which the clock was ``clock_offset_s`` ahead (set with the clock).
        self.clock_set_at = sim.sample().t
        #: Time syncs (08H broadcasts and clock writes) this meter obeyed, for test rigs.
        self.clock_syncs = 0
        self.prepay = prepay
        self.constant = constant
        #: The CT and PT ratios programmed into the meter (04000306/04000307); a rig changes
        #: them to play a meter reprogrammed in the field.
        self.ct_ratio = Decimal(1)
        self.pt_ratio = Decimal(1)
        self.baudrates = tuple(baudrates)
        self._lock = threading.RLock()
        self._power_downs = _EventHistory()
        self._covers = _EventHistory()
        self._voltage_loss_count = [0, 0, 0]
        self._voltage_loss_s = [0.0, 0.0, 0.0]
        self._voltage_lost_since: list[float | None] = [None, None, None]
        self._followups: dict[int, list[bytes]] = {}
        self._last_reply: bytes | None = None
        self._spike: Decimal | None = None
        self._observe(sim.sample())

    def prepay_kind(self, s: MeterSnapshot) -> str | None:
        """Money or energy prepayment: the account's when the model meter has one."""
        return s.prepaid.unit if s.prepaid is not None else self.prepay

    # -- identity (the line's LineMeter protocol) -------------------------------------------------

    @property
    def address(self) -> str:
        return self._address

    @property
    def edition(self) -> int:
        return int(self.version)

    # -- clock ------------------------------------------------------------------------------------

    def clock(self, s: MeterSnapshot) -> dt.datetime:
        """The meter's own clock at the snapshot (local time, naive, as DL/T 645 carries it)."""
        return self._meter_time(s, s.t)

    def stamp(self, s: MeterSnapshot, epoch: float | None) -> dt.datetime | None:
        """An instant as this meter would have time-stamped it (None stays None: no record)."""
        return None if epoch is None else self._meter_time(s, epoch)

    def offset_at(self, epoch: float) -> float:
        """How far the meter clock is ahead of true time at simulated time ``epoch`` (s)."""
        return self.clock_offset_s + self.clock_drift_s_per_day * (epoch - self.clock_set_at) / 86400

    def set_offset(self, offset_s: float, at: float | None = None) -> None:
        """Put the meter clock ``offset_s`` ahead of true time now (a rig's knob)."""
        self.clock_offset_s = offset_s
        self.clock_set_at = self.sim.sample().t if at is None else at

    def _meter_time(self, s: MeterSnapshot, epoch: float) -> dt.datetime:
        moment = dt.datetime.fromtimestamp(epoch + self.offset_at(epoch), tz=s.local_time.tzinfo)
        return moment.replace(tzinfo=None, microsecond=0)

    def _set_clock(self, s: MeterSnapshot, local: dt.datetime) -> None:
        aware = local.replace(tzinfo=s.local_time.tzinfo)
        self.set_offset(aware.timestamp() - s.t, s.t)
        self.clock_syncs += 1

    # -- events the test rig makes happen ---------------------------------------------------------

    def power_off(self) -> None:
        """Supply outage: the meter goes silent and logs a power-down event."""
        self._around(self.sim.power_off)

    def power_on(self) -> None:
        self._around(self.sim.power_on)

    def open_cover(self) -> None:
        """Meter cover opened: a cover-opening record with the energies at this instant starts."""
        self._around(self.sim.open_cover)

    def close_cover(self) -> None:
        self._around(self.sim.close_cover)

    def spike_next_read(self, kwh: Decimal) -> None:
        """The next read of the active import total (00010000, alone or in its block; 9010 on
        -1997) reports ``kwh`` too much, once — a glitched register read, as VEE must catch —
        then the true register again. The register itself is not changed."""
        with self._lock:
            self._spike = Decimal(kwh)

    def reported_import(self, total: Decimal) -> Decimal:
        """The import total as this read reports it (consumes an armed spike)."""
        spike, self._spike = self._spike, None
        return total if spike is None else total + spike

    def set_loss_of_voltage(self, phase: str, lost: bool) -> None:
        """Lose (or restore) the voltage of phase ``a``/``b``/``c``; counted in 03010000."""
        self._around(lambda: self.sim.set_loss_of_voltage(phase, lost))

    def set_phase_break(self, phase: str, broken: bool) -> None:
        """Lose (or restore) phase ``a``/``b``/``c`` of the supply: no voltage, no current
        there; a three-phase meter runs on from its other phases and reports 断相 (bit 7 of
        status word 4/5/6)."""
        self._around(lambda: self.sim.set_phase_break(phase, broken))

    def _around(self, change: Callable[[], object]) -> None:
        with self._lock:
            self._observe(self.sim.sample())
            change()
            self._observe(self.sim.sample())

    def _observe(self, s: MeterSnapshot) -> None:
        """Update the firmware's own event history from what the model reports now."""
        pd, cover = s.power_downs, s.cover_openings
        self._power_downs.observe(pd.count, pd.last_start, pd.last_end, ())
        self._covers.observe(cover.count, cover.last_start, cover.last_end, _cover_energies(s))
        for k, lost in enumerate(s.status.loss_of_voltage[:3]):
            since = self._voltage_lost_since[k]
            if lost and since is None:
                self._voltage_loss_count[k] += 1
                self._voltage_lost_since[k] = s.t
            elif not lost and since is not None:
                self._voltage_loss_s[k] += s.t - since
                self._voltage_lost_since[k] = None

    def voltage_loss(self, phase: int, now: float) -> tuple[int, int]:
        """(count, cumulative minutes) of loss of voltage on phase index ``phase`` (0 = A)."""
        seconds = self._voltage_loss_s[phase]
        since = self._voltage_lost_since[phase]
        if since is not None:
            seconds += now - since
        return self._voltage_loss_count[phase], int(seconds // 60)

    def event_record(self, history: _EventHistory, count: int, n: int, s: MeterSnapshot,
                     *, with_energies: bool) -> list[Value] | None:
        """Record ``n`` (1 = latest) of an event kind, in the layout of 0311000n / 03300D0n."""
        zeros: list[Value] = [Decimal(0)] * 12 if with_energies else []
        if n > count:
            return [None, None, *zeros]  # the standard's all-zero "never happened" record
        if n > len(history.episodes):
            return None  # happened, but before this meter started watching
        episode = history.episodes[n - 1]
        values: list[Value] = [self.stamp(s, episode.start), self.stamp(s, episode.end)]
        if with_energies:
            after: Sequence[Decimal] = episode.after or [Decimal(0)] * 6
            values += [*episode.before, *after]
        return values

    # -- reading ----------------------------------------------------------------------------------

    def read(self, di: int, s: MeterSnapshot | None = None) -> bytes | None:
        """The data field (after the DI) this meter answers for ``di`` now; None = no_data.
        Public so tests can ask "what would the meter say" without a wire."""
        parts = self._read_parts(di, s)
        return None if parts is None else b"".join(parts)

    def _read_parts(self, di: int, s: MeterSnapshot | None = None) -> list[bytes] | None:
        """The encoded data items of ``di`` (one for an item, one per member for a block)."""
        with self._lock:
            snap = s if s is not None else self.sim.sample()
            item = self.catalogue.lookup(di)
            if item is not None:
                data = self._encode_item(item, snap)
                return None if data is None else [data]
            members = self.catalogue.members(di)
            if members is None:
                return None
            parts: list[bytes] = []
            for member in members:
                data = self._encode_item(member, snap)
                if data is None:
                    break  # a block holds what the meter has: e.g. total + 4 tariffs, not 8
                parts.append(data)
            return parts or None

    def _encode_item(self, item: DataItem, s: MeterSnapshot) -> bytes | None:
        provider = self._providers.get(item.di)
        if provider is None:
            return None
        values = provider(self, s)
        if values is None:
            return None
        return encode_item(item, _fit(item, values))

    # -- request handling -------------------------------------------------------------------------

    def handle(self, frame: RawFrame) -> MeterResponse:
        """Answer one checksum-valid request frame addressed to this meter (or broadcast/wildcard).

        Undecodable requests and requests of the other edition are ignored, as real meters do.
        """
        with self._lock:
            snap = self.sim.sample()
            self._observe(snap)
            if not snap.powered:
                return MeterResponse()
            try:
                message = decode_raw(frame, self.catalogue)
            except ProtocolError:
                return MeterResponse()
            if message.version != self.version and not isinstance(message, TimeSyncRequest):
                return MeterResponse()
            handler = _HANDLERS.get(type(message), Dlt645Meter._unsupported)
            response = handler(self, message, snap)
            if frame.address == BROADCAST_ADDRESS:
                return MeterResponse()  # meters never answer a broadcast
            if response.frame is not None and not isinstance(message, RereadRequest):
                self._last_reply = response.frame
            return response

    def refusal(self, frame: RawFrame, error: str) -> bytes | None:
        """An abnormal reply to ``frame`` with the error word bit ``error`` (see :class:`Faults`)."""
        entry = FUNCTION_TABLE.get(frame.control.function)
        if entry is None or entry[1] == "broadcast_time":
            return None
        return self._error_frame(entry[1], error)

    def _error_frame(self, function: str, error: str) -> bytes:
        table = ERROR_WORD_2007 if self.version == V2007 else ERROR_WORD_1997
        equivalents = {"no_data": "bad_data_identifier", "bad_data_identifier": "no_data",
                       "other_error": "illegal_data", "illegal_data": "other_error"}
        name = error if error in table else equivalents.get(error, "other_error")
        if name not in table:
            name = table[0] or "other_error"
        word = 1 << table.index(name)
        return encode(ErrorReply(self.address, function, word, (name,), self.version))

    def _refuse(self, message: Message, error: str) -> MeterResponse:
        function = _FUNCTION_NAMES[type(message)]
        return MeterResponse(self._error_frame(function, error))

    def _authorised(self, level: int, password: str, required: int) -> bool:
        return level <= required and self.passwords.get(level) == password.upper()

    def _on_read(self, m: ReadRequest, s: MeterSnapshot) -> MeterResponse:
        if m.count is not None:
            return self._on_load_records(m, s)
        try:
            parts = self._read_parts(m.di, s)
        except LocalProtocolError as exc:
            log.warning("meter %s: cannot encode DI %X: %s", self.address, m.di, exc)
            return self._refuse(m, "other_error")
        if parts is None:
            return self._refuse(m, "no_data")
        chunks = _chunks(parts) if self.version == V2007 else [b"".join(parts)]
        if len(chunks) > 1:
            self._followups[m.di] = chunks[1:]
            reply = ReadReply(self.address, m.di, chunks[0], more_follows=True)
            return MeterResponse(encode(reply))
        self._followups.pop(m.di, None)
        return MeterResponse(encode(ReadReply(self.address, m.di, chunks[0], version=self.version)))

    def _on_load_records(self, m: ReadRequest, s: MeterSnapshot) -> MeterResponse:
        """Load records from a given time (06000001 all classes, 06040001 class 4): this meter
        records class 4 only (energy), every ``load_record_period_s`` of the model, and keeps them
        through comm faults. Times are the meter's clock; none at or after ``start``: no_data."""
        if m.di not in LOAD_RECORD_DIS or m.start is None or m.count is None:
            return self._refuse(m, "no_data")
        zone = s.local_time.tzinfo
        since = m.start.replace(tzinfo=zone).timestamp() - self.offset_at(s.t)
        entries = self.sim.load_records(since, m.count)
        if not entries:
            return self._refuse(m, "no_data")
        parts = [encode_load_records([LoadRecord(
            self._meter_time(s, e.at).replace(second=0), e.import_, e.export, e.reactive_import,
            e.reactive_export)]) for e in entries]
        chunks = _chunks(parts)
        if len(chunks) > 1:
            self._followups[m.di] = chunks[1:]
        else:
            self._followups.pop(m.di, None)
        return MeterResponse(encode(ReadReply(self.address, m.di, chunks[0],
                                              more_follows=len(chunks) > 1)))

    def _on_followup(self, m: ReadFollowupRequest, s: MeterSnapshot) -> MeterResponse:
        chunks = self._followups.get(m.di)
        if chunks is None or not 1 <= m.seq <= len(chunks):
            return self._refuse(m, "no_data")
        reply = ReadFollowupReply(self.address, m.di, chunks[m.seq - 1], seq=m.seq,
                                  more_follows=m.seq < len(chunks), version=self.version)
        return MeterResponse(encode(reply))

    def _on_reread(self, m: RereadRequest, s: MeterSnapshot) -> MeterResponse:
        return MeterResponse(self._last_reply)

    def _on_read_address(self, m: ReadAddressRequest, s: MeterSnapshot) -> MeterResponse:
        return MeterResponse(encode(ReadAddressReply(self.address)))

    def _on_time_sync(self, m: TimeSyncRequest, s: MeterSnapshot) -> MeterResponse:
        self._set_clock(s, m.moment.replace(tzinfo=None))
        return MeterResponse()

    def _on_write(self, m: WriteRequest, s: MeterSnapshot) -> MeterResponse:
        if not self._authorised(m.password_level, m.password, WRITE_LEVEL):
            return self._refuse(m, "password_error")
        di = m.di if self.version == V2007 else MAPPING_1997_TO_2007.get(m.di, -1)
        if di not in (0x04000101, 0x04000102, 0x0400010C):
            return self._refuse(m, "no_data")  # only the clock is writable on this meter
        item = self.catalogue.lookup(m.di)
        if item is None:
            return self._refuse(m, "no_data")
        try:
            value = decode_item(item, m.data)[0].value
        except ProtocolError:
            return self._refuse(m, "other_error")
        now = self.clock(s)
        if isinstance(value, dt.datetime):
            new = value
        elif isinstance(value, dt.date):
            new = dt.datetime.combine(value, now.time())
        elif isinstance(value, dt.time):
            new = dt.datetime.combine(now.date(), value)
        else:
            return self._refuse(m, "other_error")
        self._set_clock(s, new)
        return MeterResponse(encode(AckReply(self.address, "write_data", self.version)))

    def _on_change_baud(self, m: ChangeBaudRequest, s: MeterSnapshot) -> MeterResponse:
        if m.baudrate not in self.baudrates:
            return self._refuse(m, "baud_unchangeable")
        reply = encode(ChangeBaudReply(self.address, m.baudrate, self.version))
        return MeterResponse(reply, new_baudrate=m.baudrate)

    def _on_change_password(self, m: ChangePasswordRequest, s: MeterSnapshot) -> MeterResponse:
        if not self._authorised(m.old_level, m.old_password, m.new_level):
            return self._refuse(m, "password_error")
        self.passwords[m.new_level] = m.new_password.upper()
        reply = ChangePasswordReply(self.address, m.new_level, m.new_password, self.version)
        return MeterResponse(encode(reply))

    def _on_clear_demand(self, m: ClearDemandRequest, s: MeterSnapshot) -> MeterResponse:
        if self.version == V2007 and not self._authorised(m.password_level, m.password, CONTROL_LEVEL):
            return self._refuse(m, "password_error")
        self.sim.reset_max_demand()
        return MeterResponse(encode(AckReply(self.address, "clear_demand", self.version)))

    def _on_control(self, m: ControlRequest, s: MeterSnapshot) -> MeterResponse:
        if not self._authorised(m.password_level, m.password, CONTROL_LEVEL):
            return self._refuse(m, "password_error")
        if m.valid_until.replace(tzinfo=None) < self.clock(s):
            return self._refuse(m, "other_error")  # deadline passed: a stale command must not act
        outcome = _CONTROL_ACTIONS[m.action](self.sim)
        if outcome is RelayOutcome.REFUSED_PROTECTED:
            return self._refuse(m, "other_error")
        return MeterResponse(encode(AckReply(self.address, "control", self.version)))

    def _on_output(self, m: MultiFunctionOutputRequest, s: MeterSnapshot) -> MeterResponse:
        return MeterResponse(encode(MultiFunctionOutputReply(self.address, m.signal)))

    def _unsupported(self, m: Message, s: MeterSnapshot) -> MeterResponse:
        function = _FUNCTION_NAMES.get(type(m))
        if function is None:
            return MeterResponse()  # a reply someone replayed onto the line: not for a meter
        return self._refuse(m, "other_error")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


#: Load-record reads this meter answers: all classes / class 4, "from a given time".
LOAD_RECORD_DIS: Final = frozenset({0x06000001, ENERGY_RECORDS_DI})


def _chunks(parts: Sequence[bytes]) -> list[bytes]:
    """Pack data items into frames: the first holds :data:`FIRST_CHUNK` bytes, follow-ups
    :data:`FOLLOWUP_CHUNK`; an item is never split, so every frame decodes on its own."""
    chunks: list[bytes] = []
    current = b""
    for part in parts:
        limit = FIRST_CHUNK if not chunks else FOLLOWUP_CHUNK
        if current and len(current) + len(part) > limit:
            chunks.append(current)
            current = b""
        current += part
    chunks.append(current)
    return chunks


def _control(action: Callable[[SimMeter], object]) -> Callable[[SimMeter], RelayOutcome]:
    def run(sim: SimMeter) -> RelayOutcome:
        result = action(sim)
        return result if isinstance(result, RelayOutcome) else RelayOutcome.EXECUTED

    return run


_CONTROL_ACTIONS: Final[Mapping[ControlAction, Callable[[SimMeter], RelayOutcome]]] = {
    ControlAction.TRIP: _control(lambda sim: sim.trip()),
    ControlAction.ALLOW_CLOSE: _control(lambda sim: sim.allow_close()),
    ControlAction.DIRECT_CLOSE: _control(lambda sim: sim.close()),
    ControlAction.ALARM: _control(lambda sim: sim.set_alarm(True)),
    ControlAction.ALARM_RELEASE: _control(lambda sim: sim.set_alarm(False)),
    ControlAction.PROTECT: _control(lambda sim: sim.set_protect(True)),
    ControlAction.PROTECT_RELEASE: _control(lambda sim: sim.set_protect(False)),
}

_Handler: TypeAlias = Callable[[Dlt645Meter, Message, MeterSnapshot], MeterResponse]
_HANDLERS: Final[Mapping[type, _Handler]] = {
    ReadRequest: Dlt645Meter._on_read,  # type: ignore[dict-item]
    ReadFollowupRequest: Dlt645Meter._on_followup,  # type: ignore[dict-item]
    RereadRequest: Dlt645Meter._on_reread,  # type: ignore[dict-item]
    ReadAddressRequest: Dlt645Meter._on_read_address,  # type: ignore[dict-item]
    TimeSyncRequest: Dlt645Meter._on_time_sync,  # type: ignore[dict-item]
    WriteRequest: Dlt645Meter._on_write,  # type: ignore[dict-item]
    ChangeBaudRequest: Dlt645Meter._on_change_baud,  # type: ignore[dict-item]
    ChangePasswordRequest: Dlt645Meter._on_change_password,  # type: ignore[dict-item]
    ClearDemandRequest: Dlt645Meter._on_clear_demand,  # type: ignore[dict-item]
    ControlRequest: Dlt645Meter._on_control,  # type: ignore[dict-item]
    MultiFunctionOutputRequest: Dlt645Meter._on_output,  # type: ignore[dict-item]
}

#: Request type → function name (for abnormal replies). Replies are absent on purpose.
_FUNCTION_NAMES: Final[Mapping[type, str]] = {
    ReadRequest: "read_data", ReadFollowupRequest: "read_followup", RereadRequest: "reread",
    ReadAddressRequest: "read_address", WriteRequest: "write_data", ChangeBaudRequest: "change_baud",
    ChangePasswordRequest: "change_password", ClearDemandRequest: "clear_demand",
    ControlRequest: "control", MultiFunctionOutputRequest: "multi_function_output",
    WriteAddressRequest: "write_address", FreezeRequest: "freeze", ClearMeterRequest: "clear_meter",
    ClearEventsRequest: "clear_events",
}


# ---------------------------------------------------------------------------------------------------
# Building meters


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """How to create one simulated meter: ``address``, ``version`` (2007 or 1997), ``phases``,
    ``base_kw`` (None = drawn from the seed), ``meter_id`` in the load model (default: the address),
    and the :class:`Dlt645Meter` settings ``meter_number``, ``passwords``, ``clock_offset_s``,
    ``clock_drift_s_per_day``, ``prepay``, ``initial_import_kwh``."""

    address: str
    version: int = 2007
    phases: int = 3
    base_kw: float | None = None
    meter_id: str | None = None
    meter_number: str | None = None
    passwords: Mapping[int, str] | None = None
    clock_offset_s: float = 0.0
    clock_drift_s_per_day: float = 0.0
    prepay: str | None = None
    initial_import_kwh: Decimal | None = None


def build_meter(model: LoadModel, spec: MeterSpec | str) -> Dlt645Meter:
    """Create the model meter and its DL/T 645 firmware from a spec (or just an address)."""
    if isinstance(spec, str):
        spec = MeterSpec(spec)
    if spec.version not in (2007, 1997):
        raise ValueError(f"meter {spec.address}: version must be 2007 or 1997, got {spec.version}")
    sim = model.meter(spec.meter_id or spec.address, phases=spec.phases, base_kw=spec.base_kw,
                      initial_import_kwh=spec.initial_import_kwh)
    return Dlt645Meter(sim, spec.address, version=spec.version, meter_number=spec.meter_number,
                       passwords=spec.passwords, clock_offset_s=spec.clock_offset_s,
                       clock_drift_s_per_day=spec.clock_drift_s_per_day, prepay=spec.prepay)
