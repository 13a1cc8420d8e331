"""Rules that relate sections of the config to each other.

References by id (meter -> bus, member -> meter, area -> group) and unique ids are declared
on the fields themselves (`Ref`, `TableList(key=...)`). What remains here are rules no single
key can state. They run on whatever validated, so a broken meter does not hide a problem
with its neighbours; each problem is reported at the key to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.config.context import Context
from gateway.config.model import (
    AreaConfig,
    BusConfig,
    GroupConfig,
    MeterConfig,
    SerialBusConfig,
)


def _items(sections: Mapping[str, Any], name: str) -> tuple[Any, ...]:
    value = sections.get(name, ())
    return value if isinstance(value, tuple) else ()


def _shown(address: str | int) -> str:
    return f'"{address}"' if isinstance(address, str) else str(address)


def unique_addresses_per_bus(sections: Mapping[str, Any], ctx: Context) -> None:
    """Two meters answering to one address on one bus would both reply and collide on the
    wire; on Modbus TCP the unit id selects the device behind the gateway the same way."""
    first: dict[tuple[str, str | int], MeterConfig] = {}
    meters: tuple[MeterConfig, ...] = _items(sections, "meters")
    for meter in meters:
        key = (meter.bus, meter.address)
        if key in first:
            ctx.report(
                ctx.path_of(meter).key("address"),
                f'meter "{first[key].id}" already has address {_shown(meter.address)} on bus '
                f'"{meter.bus}"; addresses must be unique on a bus',
            )
        else:
            first[key] = meter


def one_bus_per_serial_port(sections: Mapping[str, Any], ctx: Context) -> None:
    """One coordinator owns each RS-485 line; two bus entries on one device would interleave
    their frames on the same wire."""
    first: dict[str, BusConfig] = {}
    buses: tuple[BusConfig, ...] = _items(sections, "buses")
    for bus in buses:
        if not isinstance(bus, SerialBusConfig):
            continue
        if bus.port in first:
            ctx.report(
                ctx.path_of(bus).key("port"),
                f'bus "{first[bus.port].name}" already uses {bus.port}; '
                "one serial port carries one bus",
            )
        else:
            first[bus.port] = bus


def no_double_counted_members(sections: Mapping[str, Any], ctx: Context) -> None:
    """The same register twice in one group counts its energy twice; a meter may appear once
    for import and once for export (a net sum)."""
    groups: tuple[GroupConfig, ...] = _items(sections, "groups")
    for group in groups:
        seen: set[tuple[str, str]] = set()
        for member in group.members:
            key = (member.meter, member.direction)
            if key in seen:
                ctx.report(
                    ctx.path_of(member).key("meter"),
                    f'meter "{member.meter}" ({member.direction}) is already a member of '
                    f'group "{group.id}"; it would be counted twice',
                )
            seen.add(key)


def area_master_outside_its_subs(sections: Mapping[str, Any], ctx: Context) -> None:
    """Line loss is master minus the sub-meters' sum; a master inside that sum cancels itself
    and the loss figure means nothing."""
    groups = {group.id: group for group in _items(sections, "groups")}
    areas: tuple[AreaConfig, ...] = _items(sections, "areas")
    for area in areas:
        group = groups.get(area.subs)
        if group is not None and any(m.meter == area.master for m in group.members):
            ctx.report(
                ctx.path_of(area).key("master"),
                f'meter "{area.master}" is the master and also a member of its subs group '
                f'"{area.subs}"; the master must not be one of the sub-meters',
            )


def area_ids_distinct_from_groups(sections: Mapping[str, Any], ctx: Context) -> None:
    """Area results (reconciliation, line loss) are published on P/G/groups/{id} beside the
    group totals, so an area id equal to a group id would mix two streams on one topic."""
    group_ids = {group.id for group in _items(sections, "groups")}
    areas: tuple[AreaConfig, ...] = _items(sections, "areas")
    for area in areas:
        if area.id in group_ids:
            ctx.report(
                ctx.path_of(area).key("id"),
                f'"{area.id}" is also a group id; area and group ids share the '
                "P/G/groups/{id} topic and must differ",
            )


CROSS_CHECKS: tuple[Callable[[Mapping[str, Any], Context], None], ...] = (
    one_bus_per_serial_port,
    unique_addresses_per_bus,
    no_double_counted_members,
    area_master_outside_its_subs,
    area_ids_distinct_from_groups,
)
