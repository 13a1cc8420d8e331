"""Turns the configuration and meter profiles into bus tasks.

Every meter's profile is loaded here, once, and checked against its bus: a Modbus profile on a
DL/T 645 line is a configuration error reported with the meter's key path (exit code 2), not a
runtime surprise at the first poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.acquisition.base import BusSettings, MeterSlot, ScheduledBus, is_dlt645_meter
from gateway.acquisition.meter_clock import ClockCadence
from gateway.acquisition.modbus_bus import ModbusBus, ModbusMeter, make_meter
from gateway.acquisition.poll_result import BusEvent, PollResult
from gateway.acquisition.schedule import PollSchedule
from gateway.acquisition.serial_port import AsyncSerialPort, applied_parity
from gateway.config import (
    BusConfig,
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    MeterConfig,
    SerialBusConfig,
    TcpBusConfig,
)
from protocols import dlt645 as d
from protocols.modbus.profile import ModbusProfile
from protocols.modbus.register_map import ReadBlock, plan_reads
from protocols.profiles import Dlt645Profile, ProfileError, load_profile

if TYPE_CHECKING:
    # Imported where a DL/T 645 bus is built: a Modbus-only gateway never loads the DL/T 645 bus
    # and codec (docs/performance.md, Memory).
    from gateway.acquisition.dlt645_bus import Dlt645Meter, PlannedRead


def _issue(config: GatewayConfig, path: str, message: str) -> ConfigIssue:
    return ConfigIssue(config.source_file or Path("<config>"), path, message)


def dlt645_catalogue(profile: Dlt645Profile) -> d.Catalogue:
    """The standard catalogue of the profile's edition, with the profile's DI overrides applied.

    The edition's items are generated here, at start-up, rather than on the bus's first poll
    (a gateway without DL/T 645 meters never generates them: protocols/dlt645/catalogue.py)."""
    version = d.Version(int(profile.version))
    base = d.catalogue_for(version)
    base.generate()
    overrides: dict[int, d.DataItem] = {}
    for o in profile.overrides:
        di = int(o.di, 16)
        spec = {"format": o.format, "bytes": o.bytes, "decimals": o.decimals, "signed": o.signed,
                "unit": o.unit}
        existing = base.lookup(di)
        name = o.name or (existing.name if existing else f"di.{o.di}")
        overrides[di] = d.DataItem(di, name, (d.Field("", d.format_from_spec(spec)),))
    return base.with_overrides(overrides) if overrides else base


def plan_dlt645(profile: Dlt645Profile, address: str) -> list[PlannedRead]:
    from gateway.acquisition.dlt645_bus import PlannedRead

    version = d.Version(int(profile.version))
    return [PlannedRead(d.ReadRequest(address, int(r.di, 16), version), r.optional, r.name, r.names,
                        r.every_s, r.refresh_on)
            for r in profile.reads]


def reports_balance(meter: MeterSlot) -> bool:
    """Whether ``meter``'s profile reads a prepaid balance (``prepaid.balance.*``): such a meter
    feeds the load-control engine's prepaid rules even on a gateway without groups."""
    names: list[str] = []
    if is_dlt645_meter(meter):
        for read in meter.reads:
            names += [n for n in (read.name, *read.names) if n]
            item = meter.catalogue.lookup(read.request.di)
            members = (item,) if item is not None else meter.catalogue.members(read.request.di)
            names += [m.name for m in members or ()]
    elif isinstance(meter, ModbusMeter) and meter.profile is not None:
        names += meter.profile.quantities
    return any(n.startswith("prepaid.balance.") for n in names)


def load_profiles(config: GatewayConfig) -> dict[str, Dlt645Profile | ModbusProfile]:
    """Profiles by meter id; raises ConfigError listing every unusable profile."""
    issues: list[ConfigIssue] = []
    cache: dict[str, Dlt645Profile | ModbusProfile] = {}
    out: dict[str, Dlt645Profile | ModbusProfile] = {}
    for index, meter in enumerate(config.meters):
        key = f'meters[{index}] (id "{meter.id}").profile'
        path = str(meter.profile.path)
        if path not in cache:
            try:
                cache[path] = load_profile(path)
            except ProfileError as exc:
                issues.append(_issue(config, key, f"profile {meter.profile.name!r} is invalid: {exc}"))
                continue
        profile = cache[path]
        protocol = config.bus(meter.bus).protocol
        wanted = "dlt645" if protocol == "dlt645" else "modbus"
        if profile.kind != wanted:
            issues.append(_issue(config, key, f"profile {meter.profile.name!r} is a {profile.kind} "
                                              f"profile but bus {meter.bus!r} speaks {protocol}"))
            continue
        out[meter.id] = profile
    if issues:
        raise ConfigError(issues)
    return out


def _settings(bus: BusConfig, concurrency: int = 1) -> BusSettings:
    return BusSettings(
        timeout_s=bus.timeout_ms / 1000,
        turnaround_s=bus.turnaround_ms / 1000,
        retries=bus.retries,
        comm_loss_after=bus.comm_loss_after,
        priority_limit=bus.queue_limit,
        concurrency=concurrency,
    )


def _clock_cadence(config: GatewayConfig, profile: object, clocked: list[str], meter_id: str,
                   now: float) -> ClockCadence | None:
    """When this meter's clock is read ([clock] read_interval_s, gateway/acquisition/
    meter_clock.py), staggered among the bus's meters whose profile maps theirs; None when
    [clock] mode is off or the profile maps no clock."""
    if meter_id not in clocked:
        return None
    dis = None
    if isinstance(profile, Dlt645Profile) and profile.clock is not None:
        dis = int(profile.clock[0], 16), int(profile.clock[1], 16)
    return ClockCadence.staggered(dis, config.clock.read_interval_s, config.clock.read_spread_s,
                                  clocked.index(meter_id), len(clocked), now)


def _clocked(config: GatewayConfig, meters: Sequence[MeterConfig],
             profiles: dict[str, Dlt645Profile | ModbusProfile]) -> list[str]:
    """The meters of one bus whose clocks are read, in configuration order."""
    if config.clock.mode == "off":
        return []
    return [m.id for m in meters if profiles[m.id].clock is not None]


def build_buses(config: GatewayConfig, outbound: asyncio.Queue[PollResult | BusEvent]) -> list[ScheduledBus]:  # type: ignore[type-arg]
    profiles = load_profiles(config)
    mono, wall = time.monotonic(), time.time()
    buses: list[ScheduledBus] = []  # type: ignore[type-arg]
    #: Read plans by profile (``profiles`` keeps every profile alive, so ids stay unique).
    read_plans: dict[int, list[ReadBlock]] = {}
    for bus in config.buses:
        meters_cfg = config.meters_on(bus.name)
        settings = _settings(bus, getattr(bus, "max_concurrency", 1))

        def schedule(interval: float, backoff_after: int = settings.comm_loss_after) -> PollSchedule:
            return PollSchedule.aligned(interval, mono, wall, backoff_after=backoff_after)

        if bus.protocol == "dlt645":
            from gateway.acquisition.dlt645_bus import Dlt645Bus, Dlt645Meter

            meters: list[Dlt645Meter] = []
            clocked = _clocked(config, meters_cfg, profiles)
            for m in meters_cfg:
                profile = profiles[m.id]
                assert isinstance(profile, Dlt645Profile)
                address = str(m.address)
                meters.append(Dlt645Meter(
                    meter_id=m.id, address=address, schedule=schedule(m.poll_interval_s),
                    version=d.Version(int(profile.version)), reads=plan_dlt645(profile, address),
                    catalogue=dlt645_catalogue(profile), load_records=profile.load_records,
                    clock=_clock_cadence(config, profile, clocked, m.id, mono)))
            assert isinstance(bus, SerialBusConfig)
            port = AsyncSerialPort(bus.port, bus.baudrate, bus.parity, bus.bytesize, bus.stopbits)
            dlt_bus = Dlt645Bus(bus.name, port, meters, outbound, settings)
            dlt_bus.meter_utc_offset_min = config.commands.meter_utc_offset_min
            buses.append(dlt_bus)
        else:
            mb_meters = []
            clocked = _clocked(config, meters_cfg, profiles)
            for m in meters_cfg:
                profile = profiles[m.id]
                assert isinstance(profile, ModbusProfile)
                # One read plan per profile, not per meter: 100 meters of one profile held 100
                # equal plans, each with its own decode plans (struct formats per register).
                blocks = read_plans.get(id(profile))
                if blocks is None:
                    blocks = read_plans[id(profile)] = plan_reads(profile)
                mb_meter = make_meter(m.id, int(m.address), profile, schedule(m.poll_interval_s),
                                      blocks=blocks)
                mb_meter.clock = _clock_cadence(config, profile, clocked, m.id, mono)
                mb_meters.append(mb_meter)
            if isinstance(bus, TcpBusConfig):
                mb_bus = ModbusBus(bus.name, mb_meters, outbound, settings,
                                   host=bus.host, port=bus.port)
            else:
                serial = {"port": bus.port, "baudrate": bus.baudrate,
                          "parity": applied_parity(bus.port, bus.parity),
                          "bytesize": bus.bytesize, "stopbits": bus.stopbits}
                mb_bus = ModbusBus(bus.name, mb_meters, outbound, settings, serial=serial)
            mb_bus.meter_utc_offset_min = config.commands.meter_utc_offset_min
            buses.append(mb_bus)
    return buses
