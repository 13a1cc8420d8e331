"""What a meter profile publishes, as a payload-v2 alias table (protocols/payload/aliases.py).

The table lists the quantities a poll of the profile yields, in the order the bus task emits
them, each with its unit, the decimal exponent its values are kept at and whether they are exact
registers or instantaneous floats. It is a prediction, not a rule: a record the table does not
foresee (a renamed block member, an estimate of another quantity, a value at another exponent)
still travels exactly, only in the record's longer form (docs/payloads.md). Here because the
acquisition layer is what knows how a profile turns into named values.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from gateway.acquisition.factory import dlt645_catalogue
from protocols.dlt645.formats import Bcd
from protocols.modbus.profile import ModbusProfile, RegisterSpec
from protocols.payload import AliasEntry, AliasTable
from protocols.payload.aliases import table_of
from protocols.profiles import Dlt645Profile


def _power_of_ten(value: Decimal | None) -> int | None:
    """The exponent of 10**k ``value`` is, else None."""
    if value is None or not value.is_finite() or value <= 0:
        return None
    normal = value.normalize()
    _, digits, exponent = normal.as_tuple()
    return exponent if digits == (1,) and isinstance(exponent, int) else None


def _modbus_entry(spec: RegisterSpec) -> AliasEntry:
    exponent = _power_of_ten(spec.resolution)
    if exponent is None and not spec.data_type.is_float:
        exponent = _power_of_ten(spec.scale)  # an integer register times 10**k
    return AliasEntry(spec.quantity, spec.unit, exponent, spec.is_register)


def _dlt645_entries(profile: Dlt645Profile) -> list[AliasEntry]:
    catalogue = dlt645_catalogue(profile)
    entries: list[AliasEntry] = []
    for read in profile.reads:
        di = int(read.di, 16)
        item = catalogue.lookup(di)
        items = (item,) if item is not None else (catalogue.members(di) or ())
        fields = [(f"{it.name}.{f.suffix}" if f.suffix else it.name, f.format)
                  for it in items for f in it.fields]
        for i, (name, fmt) in enumerate(fields):
            # The bus task's naming rule (dlt645_bus.py): profile names first.
            if i < len(read.names):
                name = read.names[i]
            elif read.name and len(fields) == 1:
                name = read.name
            if isinstance(fmt, Bcd):
                entries.append(AliasEntry(name, fmt.unit or "", -fmt.decimals, True))
    return entries


def alias_table(profile: Dlt645Profile | ModbusProfile) -> AliasTable:
    """The alias table of ``profile``."""
    if isinstance(profile, ModbusProfile):
        specs = sorted(profile.registers, key=lambda s: (s.function.value, s.address))
        return table_of([_modbus_entry(spec) for spec in specs])
    return table_of(_dlt645_entries(profile))


def alias_tables(profiles: Mapping[str, Dlt645Profile | ModbusProfile]) -> dict[str, AliasTable]:
    """Alias tables by meter id (one table object per distinct profile)."""
    cache: dict[int, AliasTable] = {}
    out: dict[str, AliasTable] = {}
    for meter, profile in profiles.items():
        key = id(profile)
        if key not in cache:
            cache[key] = alias_table(profile)
        out[meter] = cache[key]
    return out


__all__ = ["alias_table", "alias_tables"]
