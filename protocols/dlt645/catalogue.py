"""The DI catalogue as data: which identifier means which quantity, in which format.

Tables, not if-chains: every family of identifiers is one row (DI prefix, name pattern, format), and
the catalogue is generated from the rows once, at its first use (a gateway that polls no DL/T 645
meter never holds the 2,878 items of the 2007 edition, about 1.4 MB of RSS; docs/performance.md).
Sources: DL/T 645-2007 appendix A (tables A.1 energy, A.2 demand, A.3 variables, A.4 events, A.5
parameters, A.6 freeze, A.7 load records) with the 2013 filing (备案文件) status word layout;
DL/T 645-1997 appendix B for the 2-byte identifiers.

Quantity names are the gateway's vocabulary (also used on MQTT): ``energy.active.import.total``,
``energy.active.import.t1`` … (tariff 1 = sharp 尖, 2 = peak 峰, 3 = flat 平, 4 = valley 谷),
``.settleN`` for the N-th previous settlement day, ``voltage.a``, ``power.active.total`` …
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from .formats import Ascii, Bcd, Digits, Flags, Format, Timestamp
from .frame import Version
from .items import DataItem, Field, Reading, block_members, decode_item, unknown_item

# ---------------------------------------------------------------------------------------------------
#: DI of status word n is ``STATUS_WORDS_DI | n`` (04000501..04000507).
STATUS_WORDS_DI: Final = 0x04000500
#: Status word 3 (DI 04000503): the relay bits a 1CH command is verified against.
STATUS_WORD_3: Final = STATUS_WORDS_DI | 3

# Status words 1-7 (04000501..04000507), bit i → flag name. DL/T 645-2007 appendix A.5 note and the
# 2013 filing. Relay bits of word 3 are what load control checks after a 1CH command.
STATUS_WORD_FLAGS: Final[Mapping[int, tuple[str | None, ...]]] = {
    1: (None, "demand_interval_mode", "clock_battery_low", "reading_battery_low",
        "active_power_reverse", "reactive_power_reverse"),
    2: ("a.active_power_reverse", "b.active_power_reverse", "c.active_power_reverse", None,
        "a.reactive_power_reverse", "b.reactive_power_reverse", "c.reactive_power_reverse"),
    3: ("time_slot_table_2", "supply_auxiliary", "supply_battery", "programming_allowed",
        "relay_open", "time_zone_table_2", "relay_command_trip", "pre_trip_alarm",
        "prepay_energy", "prepay_money", "tariff_schedule_2", "step_schedule_2", "protect"),
    4: ("a.voltage_loss", "a.under_voltage", "a.over_voltage", "a.current_loss",
        "a.over_current", "a.overload", "a.power_reverse", "a.phase_break", "a.current_break"),
    5: ("b.voltage_loss", "b.under_voltage", "b.over_voltage", "b.current_loss",
        "b.over_current", "b.overload", "b.power_reverse", "b.phase_break", "b.current_break"),
    6: ("c.voltage_loss", "c.under_voltage", "c.over_voltage", "c.current_loss",
        "c.over_current", "c.overload", "c.power_reverse", "c.phase_break", "c.current_break"),
    7: ("voltage_sequence_reverse", "current_sequence_reverse", "voltage_imbalance",
        "current_imbalance", "auxiliary_power_loss", "power_down", "demand_over_limit",
        "power_factor_low", "current_severe_imbalance", "cover_open", "terminal_cover_open"),
}

#: Error word bits of an abnormal reply (DL/T 645-2007 §7.1.3 / -1997 §5.3), bit i → name.
ERROR_WORD_2007: Final = ("other_error", "no_data", "password_error", "baud_unchangeable",
                          "year_zones_exceeded", "day_slots_exceeded", "tariffs_exceeded")
ERROR_WORD_1997: Final = ("illegal_data", "bad_data_identifier", "password_error", None,
                          "year_zones_exceeded", "day_slots_exceeded", "tariffs_exceeded")

# ---------------------------------------------------------------------------------------------------
# Energy (DI3 = 00) and maximum demand (DI3 = 01): DI2 = kind, DI1 = tariff (0 total), DI0 = settlement
# day (0 current, 1..12 previous settlement days). (DI2, name, unit, demand unit, signed)
ENERGY_KINDS: Final = (
    (0x00, "active.combined", "kWh", "kW", True),
    (0x01, "active.import", "kWh", "kW", False),
    (0x02, "active.export", "kWh", "kW", False),
    (0x03, "reactive.combined1", "kvarh", "kvar", True),
    (0x04, "reactive.combined2", "kvarh", "kvar", True),
    (0x05, "reactive.q1", "kvarh", "kvar", False),
    (0x06, "reactive.q2", "kvarh", "kvar", False),
    (0x07, "reactive.q3", "kvarh", "kvar", False),
    (0x08, "reactive.q4", "kvarh", "kvar", False),
    (0x09, "apparent.import", "kVAh", "kVA", False),
    (0x0A, "apparent.export", "kVAh", "kVA", False),
)
TARIFF_NAMES: Final = ("total", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8")
SETTLEMENT_DAYS: Final = 12

# Instantaneous variables (DI3 = 02): (DI2, DI1 values → suffix, name, format)
_PHASES: Final = {1: "a", 2: "b", 3: "c"}
_TOTAL_AND_PHASES: Final = {0: "total", 1: "a", 2: "b", 3: "c"}
VARIABLES: Final[tuple[tuple[int, Mapping[int, str], str, Format], ...]] = (
    (0x01, _PHASES, "voltage", Bcd(2, 1, "V")),
    (0x02, _PHASES, "current", Bcd(3, 3, "A", signed=True)),
    (0x03, _TOTAL_AND_PHASES, "power.active", Bcd(3, 4, "kW", signed=True)),
    (0x04, _TOTAL_AND_PHASES, "power.reactive", Bcd(3, 4, "kvar", signed=True)),
    (0x05, _TOTAL_AND_PHASES, "power.apparent", Bcd(3, 4, "kVA", signed=True)),
    (0x06, _TOTAL_AND_PHASES, "power.factor", Bcd(2, 3, None, signed=True)),
    (0x07, _PHASES, "phase_angle", Bcd(2, 1, "deg")),
    (0x08, _PHASES, "voltage.thd", Bcd(2, 2, "%")),
    (0x09, _PHASES, "current.thd", Bcd(2, 2, "%")),
)
# 0280 00xx single items
SPECIAL_VARIABLES: Final[tuple[tuple[int, str, Format], ...]] = (
    (0x02800001, "current.neutral", Bcd(3, 3, "A", signed=True)),
    (0x02800002, "frequency", Bcd(2, 2, "Hz")),
    (0x02800003, "power.active.avg_1min", Bcd(3, 4, "kW", signed=True)),
    (0x02800004, "demand.active.present", Bcd(3, 4, "kW", signed=True)),
    (0x02800005, "demand.reactive.present", Bcd(3, 4, "kvar", signed=True)),
    (0x02800006, "demand.apparent.present", Bcd(3, 4, "kVA", signed=True)),
    (0x02800007, "temperature.meter", Bcd(2, 1, "degC", signed=True)),
    (0x02800008, "battery.clock", Bcd(2, 2, "V")),
    (0x02800009, "battery.reading", Bcd(2, 2, "V")),
    (0x0280000A, "battery.work_time", Bcd(4, 0, "min")),
    (0x0280000B, "price.step.current", Bcd(4, 4, "CNY/kWh")),
)

_TS6: Final = Timestamp("YYMMDDhhmmss")
_COUNT: Final = Bcd(3, 0, "count")
_ENERGY_4: Final = Bcd(4, 2, "kWh")
_REACTIVE_4: Final = Bcd(4, 2, "kvarh")

# Cover-open style records: start, end, then energies before and after (DL/T 645-2007 A.4, 03300D01).
_COVER_RECORD: Final = (
    Field("start", _TS6), Field("end", _TS6),
    Field("before.energy.active.import", _ENERGY_4), Field("before.energy.active.export", _ENERGY_4),
    Field("before.energy.reactive.q1", _REACTIVE_4), Field("before.energy.reactive.q2", _REACTIVE_4),
    Field("before.energy.reactive.q3", _REACTIVE_4), Field("before.energy.reactive.q4", _REACTIVE_4),
    Field("after.energy.active.import", _ENERGY_4), Field("after.energy.active.export", _ENERGY_4),
    Field("after.energy.reactive.q1", _REACTIVE_4), Field("after.energy.reactive.q2", _REACTIVE_4),
    Field("after.energy.reactive.q3", _REACTIVE_4), Field("after.energy.reactive.q4", _REACTIVE_4),
)
EVENT_RECORDS: Final = 10

# Parameters (DI3 = 04)
PARAMETERS: Final[tuple[tuple[int, str, Format], ...]] = (
    (0x04000101, "clock.date", Timestamp("YYMMDDWW")),
    (0x04000102, "clock.time", Timestamp("hhmmss")),
    (0x0400010C, "clock.datetime", Timestamp("YYMMDDWWhhmmss")),
    # Appendix A, display and transformer parameters: the CT and PT ratios programmed into the
    # meter (NNNNNN), which the gateway compares with [[meters]] ct_ratio / pt_ratio.
    (0x04000306, "ratio.ct", Bcd(3, 0, "")),
    (0x04000307, "ratio.pt", Bcd(3, 0, "")),
    (0x04000401, "meter.address", Digits(6)),
    (0x04000402, "meter.number", Digits(6)),
    (0x04000403, "meter.asset_code", Ascii(32)),
    (0x04000404, "meter.rated_voltage", Ascii(6)),
    (0x04000405, "meter.rated_current", Ascii(6)),
    (0x04000406, "meter.max_current", Ascii(6)),
    (0x04000407, "meter.accuracy_active", Ascii(4)),
    (0x04000408, "meter.accuracy_reactive", Ascii(4)),
    (0x04000409, "meter.constant_active", Bcd(3, 0, "imp/kWh")),
    (0x0400040A, "meter.constant_reactive", Bcd(3, 0, "imp/kvarh")),
    (0x0400040B, "meter.model", Ascii(10)),
    (0x0400040C, "meter.production_date", Ascii(10)),
    (0x0400040D, "meter.protocol_version", Ascii(16)),
)

# Prepayment (费控/预付费, DL/T 645-2007 A.3 00 90 xx xx and the 2013 filing): the balance the
# meter holds and what it lets the customer overdraw, in money (元, XXXXXX.XX) or energy
# (XXXXXX.XX kWh). A money-prepaid meter answers the 009002xx pair, an energy-prepaid one the
# 009001xx pair (status word 3 bits 8/9 say which); 009001FF / 009002FF read a pair at once.
_MONEY_4: Final = Bcd(4, 2, "CNY")
PREPAID_BALANCES: Final[tuple[tuple[int, str, Format], ...]] = (
    (0x00900100, "prepaid.balance.energy", _ENERGY_4),
    (0x00900101, "prepaid.overdraft.energy", _ENERGY_4),
    (0x00900200, "prepaid.balance.money", _MONEY_4),
    (0x00900201, "prepaid.overdraft.money", _MONEY_4),
)
# Purchase records (A.4 0332 energy purchases, 0333 money purchases; DI0 01 = the last one):
# the purchase counter (XXXX) changes at every recharge, so reading it each poll tells the
# gateway when to read the balance again; then the cumulative amount bought after it.
PREPAID_PURCHASES: Final[tuple[tuple[int, str, Format], ...]] = (
    (0x03320201, "prepaid.purchase.energy.count", Bcd(2, 0, "count")),
    (0x03320601, "prepaid.purchase.energy.total", _ENERGY_4),
    (0x03330201, "prepaid.purchase.money.count", Bcd(2, 0, "count")),
    (0x03330601, "prepaid.purchase.money.total", _MONEY_4),
)
# Prepayment parameters (A.5 04000F0x energy, 0400100x money): the meter's own thresholds.
PREPAID_PARAMETERS: Final[tuple[tuple[int, str, Format], ...]] = (
    (0x04000F01, "prepaid.limit.energy.alarm1", _ENERGY_4),
    (0x04000F02, "prepaid.limit.energy.alarm2", _ENERGY_4),
    (0x04000F03, "prepaid.limit.energy.hoard", _ENERGY_4),
    (0x04000F04, "prepaid.limit.energy.overdraft", _ENERGY_4),
    (0x04001001, "prepaid.limit.money.alarm1", _MONEY_4),
    (0x04001002, "prepaid.limit.money.alarm2", _MONEY_4),
    (0x04001003, "prepaid.limit.money.overdraft", _MONEY_4),
    (0x04001004, "prepaid.limit.money.hoard", _MONEY_4),
    (0x04001005, "prepaid.limit.money.close_allowed", _MONEY_4),
)

FREEZE_DAYS: Final = 62  # 05060001..0506003E: the last 62 daily freezes


def _generate_2007() -> dict[int, DataItem]:
    items: dict[int, DataItem] = {}

    def add(item: DataItem) -> None:
        assert item.di not in items, f"duplicate DI {item.di:08X}"
        items[item.di] = item

    for di2, kind, unit, demand_unit, signed in ENERGY_KINDS:
        for tariff, tariff_name in enumerate(TARIFF_NAMES):
            for day in range(SETTLEMENT_DAYS + 1):
                suffix = "" if day == 0 else f".settle{day}"
                energy_di = (0x00 << 24) | (di2 << 16) | (tariff << 8) | day
                add(DataItem(energy_di, f"energy.{kind}.{tariff_name}{suffix}",
                             (Field("", Bcd(4, 2, unit, signed)),)))
                add(DataItem(0x01000000 | energy_di, f"demand.{kind}.{tariff_name}{suffix}",
                             (Field("", Bcd(3, 4, demand_unit, signed)),
                              Field("time", Timestamp("YYMMDDhhmm")))))
    for di2, members, name, fmt in VARIABLES:
        for di1, suffix in members.items():
            add(DataItem(0x02000000 | di2 << 16 | di1 << 8, f"{name}.{suffix}", (Field("", fmt),)))
    for di, name, fmt in SPECIAL_VARIABLES + PREPAID_BALANCES + PREPAID_PURCHASES:
        add(DataItem(di, name, (Field("", fmt),)))
    # Events
    add(DataItem(0x03110000, "events.power_down.count", (Field("", _COUNT),)))
    for n in range(1, EVENT_RECORDS + 1):
        add(DataItem(0x03110000 | n, f"events.power_down.last{n}",
                     (Field("start", _TS6), Field("end", _TS6))))
    for di_base, name in ((0x03300D00, "cover_open"), (0x03300E00, "terminal_cover_open")):
        add(DataItem(di_base, f"events.{name}.count", (Field("", _COUNT),)))
        for n in range(1, EVENT_RECORDS + 1):
            add(DataItem(di_base | n, f"events.{name}.last{n}", _COVER_RECORD))
    # 03010000: loss-of-voltage count and cumulative minutes for phases A, B, C.
    add(DataItem(0x03010000, "events.voltage_loss", tuple(
        Field(f"{phase}.{what}", Bcd(3, 0, unit))
        for phase in ("a", "b", "c") for what, unit in (("count", "count"), ("minutes", "min"))
    )))
    for di, name, fmt in PARAMETERS + PREPAID_PARAMETERS:
        add(DataItem(di, name, (Field("", fmt),)))
    for word, names in STATUS_WORD_FLAGS.items():
        add(DataItem(STATUS_WORDS_DI | word, f"status.word{word}", (Field("", Flags(2, names)),)))
    # Daily freeze: time of freeze, and frozen energy blocks (total + tariffs, as many as the meter has).
    for n in range(1, FREEZE_DAYS + 1):
        add(DataItem(0x05060000 | n, f"freeze.daily.last{n}.time",
                     (Field("", Timestamp("YYMMDDhhmm")),)))
        add(DataItem(0x05060100 | n, f"freeze.daily.last{n}.energy.active.import",
                     (Field("total", _ENERGY_4),), TARIFF_NAMES[1:]))
        add(DataItem(0x05060200 | n, f"freeze.daily.last{n}.energy.active.export",
                     (Field("total", _ENERGY_4),), TARIFF_NAMES[1:]))
    return items


# ---------------------------------------------------------------------------------------------------
# DL/T 645-1997 (2-byte DIs written DI1 DI0, e.g. 9010; a last nibble F is a block).
def _generate_1997() -> dict[int, DataItem]:
    items: dict[int, DataItem] = {}
    for base, kind, unit in ((0x9010, "active.import", "kWh"), (0x9020, "active.export", "kWh"),
                             (0x9110, "reactive.import", "kvarh"), (0x9120, "reactive.export", "kvarh")):
        for tariff in range(5):
            items[base + tariff] = DataItem(base + tariff, f"energy.{kind}.{TARIFF_NAMES[tariff]}",
                                            (Field("", Bcd(4, 2, unit)),))
    for base, kind, unit in ((0xA010, "active.import", "kW"), (0xA020, "active.export", "kW")):
        for tariff in range(5):
            items[base + tariff] = DataItem(base + tariff, f"demand.{kind}.{TARIFF_NAMES[tariff]}",
                                            (Field("", Bcd(3, 4, unit)),))
            items[base + 0x1000 + tariff] = DataItem(
                base + 0x1000 + tariff, f"demand.{kind}.{TARIFF_NAMES[tariff]}.time",
                (Field("", Timestamp("MMDDhhmm")),))
    for phase, suffix in _PHASES.items():
        items[0xB610 + phase] = DataItem(0xB610 + phase, f"voltage.{suffix}", (Field("", Bcd(2, 0, "V")),))
        items[0xB620 + phase] = DataItem(0xB620 + phase, f"current.{suffix}", (Field("", Bcd(2, 2, "A")),))
    for idx, suffix in _TOTAL_AND_PHASES.items():
        items[0xB630 + idx] = DataItem(0xB630 + idx, f"power.active.{suffix}", (Field("", Bcd(3, 4, "kW")),))
        items[0xB640 + idx] = DataItem(0xB640 + idx, f"power.reactive.{suffix}", (Field("", Bcd(2, 2, "kvar")),))
        items[0xB650 + idx] = DataItem(0xB650 + idx, f"power.factor.{suffix}", (Field("", Bcd(2, 3)),))
    items[0xC010] = DataItem(0xC010, "clock.date", (Field("", Timestamp("YYMMDDWW")),))
    items[0xC011] = DataItem(0xC011, "clock.time", (Field("", Timestamp("hhmmss")),))
    items[0xC030] = DataItem(0xC030, "meter.constant_active", (Field("", Bcd(3, 0, "imp/kWh")),))
    items[0xC032] = DataItem(0xC032, "meter.number", (Field("", Digits(6)),))
    items[0xC033] = DataItem(0xC033, "meter.user_number", (Field("", Digits(6)),))
    items[0xC034] = DataItem(0xC034, "meter.device_code", (Field("", Digits(6)),))
    return items


#: -1997 identifier → the -2007 identifier of the same quantity (for mixed fleets and the profiles).
MAPPING_1997_TO_2007: Final[Mapping[int, int]] = {
    **{0x9010 + t: 0x00010000 | t << 8 for t in range(5)}, 0x901F: 0x0001FF00,
    **{0x9020 + t: 0x00020000 | t << 8 for t in range(5)}, 0x902F: 0x0002FF00,
    **{0x9110 + t: 0x00030000 | t << 8 for t in range(5)}, 0x911F: 0x0003FF00,
    **{0xA010 + t: 0x01010000 | t << 8 for t in range(5)},
    0xB611: 0x02010100, 0xB612: 0x02010200, 0xB613: 0x02010300, 0xB61F: 0x0201FF00,
    0xB621: 0x02020100, 0xB622: 0x02020200, 0xB623: 0x02020300, 0xB62F: 0x0202FF00,
    0xB630: 0x02030000, 0xB631: 0x02030100, 0xB632: 0x02030200, 0xB633: 0x02030300,
    0xB63F: 0x0203FF00,
    0xB650: 0x02060000, 0xB651: 0x02060100, 0xB652: 0x02060200, 0xB653: 0x02060300,
    0xB65F: 0x0206FF00,
    0xC010: 0x04000101, 0xC011: 0x04000102, 0xC032: 0x04000402,
}


class GeneratedItems(Mapping[int, DataItem]):
    """The items of one edition, generated from the tables on first access, then kept.

    Why lazy: every gateway imports this module (the control layer names DL/T 645 control
    actions), but only one with a DL/T 645 meter reads the table.
    """

    __slots__ = ("_generate", "_table")

    def __init__(self, generate: Callable[[], dict[int, DataItem]]) -> None:
        self._generate = generate
        self._table: dict[int, DataItem] | None = None

    def table(self) -> dict[int, DataItem]:
        """The generated items (generated now when this is the first use)."""
        if self._table is None:
            self._table = self._generate()
        return self._table

    def __getitem__(self, di: int) -> DataItem:
        return self.table()[di]

    def __iter__(self) -> Iterator[int]:
        return iter(self.table())

    def __len__(self) -> int:
        return len(self.table())

    def __contains__(self, di: object) -> bool:
        return di in self.table()


@dataclass
class Catalogue:
    """The DI table of one edition, with block resolution and per-meter overrides.

    ``overrides`` (from a meter profile) replace standard items, for vendors that reuse a standard DI
    with another encoding.
    """

    version: Version
    items: Mapping[int, DataItem]
    overrides: Mapping[int, DataItem] = field(default_factory=dict)
    _blocks: dict[int, tuple[DataItem, ...] | None] = field(default_factory=dict, repr=False)

    def generate(self) -> None:
        """Generate the standard items now if they are generated on first use (GeneratedItems):
        at start-up, so the first poll does not pay for it."""
        if isinstance(self.items, GeneratedItems):
            self.items.table()

    def with_overrides(self, overrides: Mapping[int, DataItem]) -> Catalogue:
        return Catalogue(self.version, self.items, {**self.overrides, **overrides})

    def __iter__(self) -> Iterator[DataItem]:
        yield from self.items.values()

    @property
    def di_digits(self) -> int:
        return 8 if self.version == Version.V2007 else 4

    def lookup(self, di: int) -> DataItem | None:
        items = self.items
        table = items.table() if isinstance(items, GeneratedItems) else items
        return self.overrides.get(di) or table.get(di)

    def members(self, di: int) -> tuple[DataItem, ...] | None:
        """Members of block ``di`` (cached), or None when ``di`` is not a block."""
        if di not in self._blocks:
            merged = {**self.items, **self.overrides}
            self._blocks[di] = block_members(di, merged, nibble_block=self.version == Version.V1997)
        return self._blocks[di]

    def decode(self, di: int, data: bytes) -> list[Reading]:
        """Decode a data field. Unknown DIs keep their raw bytes (``unit`` None), never raise."""
        item = self.lookup(di)
        if item is not None:
            return decode_item(item, data)
        members = self.members(di)
        if members is None:
            return decode_item(unknown_item(di, len(data), self.di_digits), data)
        out: list[Reading] = []
        pos = 0
        for member in members:
            if pos >= len(data):
                break
            out.extend(decode_item(member, data[pos : pos + member.size]))
            pos += member.size
        if pos < len(data):
            out.extend(decode_item(unknown_item(di, len(data) - pos, self.di_digits), data[pos:]))
        return out


CATALOGUE_2007: Final = Catalogue(Version.V2007, GeneratedItems(_generate_2007))
CATALOGUE_1997: Final = Catalogue(Version.V1997, GeneratedItems(_generate_1997))


def catalogue_for(version: Version) -> Catalogue:
    return CATALOGUE_2007 if version == Version.V2007 else CATALOGUE_1997
