"""`[vee]`: validation, estimation and editing, declared like every other table.

The rule catalogue (`edge_rules.vee_rules.RULES`) says which parameters each rule has, with
bounds and defaults; here each rule becomes one shape of a `[[vee.rules]]` entry (chosen by
its `name`), so a parameter of another rule, a value out of bounds or a misspelt key is a
config error with its key path, and the JSON Schema and docs/configuration.md list every
parameter. `vee_config()` turns the checked table into the `VeeConfig` the kernels take
(`edge_rules` never imports the gateway, so that dataclass stays there).

The same declarations read `gwtool vee --rules rules.toml` (`load_vee_rules`).
"""

# setting() returns dataclasses.field(...), which ruff takes for a call in a default (model.py).
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from edge_rules.vee_rules import KERNEL_CHOICES, RULES, RuleSpec
from gateway.config.context import Context
from gateway.config.fields import Problems, setting
from gateway.config.issues import ROOT, ConfigError, ConfigIssue, KeyPath
from gateway.config.kinds import (
    INVALID,
    Bool,
    Choice,
    Int,
    Kind,
    ListOf,
    MapOf,
    Number,
    SchemaDefs,
    Siblings,
    Str,
    Table,
    TableList,
    Variant,
    Variants,
    build_table,
    describe,
)
from gateway.config.kinds_calendar import DATES, Date, Holidays, UtcOffset

if TYPE_CHECKING:
    from edge_rules.vee_rules import VeeConfig

Severity = Literal["info", "warn", "fail"]
Kernels = Literal["auto", "numba", "numpy"]
# One grid interval is 15 minutes of grid time (NEM12); every duration in [vee] is in it.
GRID_INTERVAL_S: Final = 900
DEFAULT_UTC_OFFSET: Final = "+08:00"  # China Standard Time, where the DL/T 645 meters are
# A grid interval must be a whole number of wall-clock intervals.
_INTERVAL_CHOICES: Final = tuple(n for n in range(1, GRID_INTERVAL_S + 1) if GRID_INTERVAL_S % n == 0)


@dataclass(frozen=True)
class MeterClassName(Kind):
    """The name of a meter class: "default" or a `[vee.classes]` table, as written in the file
    (checked against what the user wrote, like `Ref`, so one bad class does not also make
    every rule naming it an error); `any_class` also allows "*" (every class)."""

    any_class: bool = False

    def _known(self, ctx: Context) -> list[str]:
        vee = ctx.raw.get("vee")
        classes = vee.get("classes") if isinstance(vee, dict) else None
        named = list(classes) if isinstance(classes, dict) else []
        return ["default", *(name for name in named if name != "default")]

    def expected(self) -> str:
        text = "a class defined under vee.classes"
        return f'"*" or {text}' if self.any_class else text

    def check(self, value: object, at: KeyPath, ctx: Context, siblings: Siblings) -> object:
        if isinstance(value, str) and (
            value in self._known(ctx) or (self.any_class and value == "*")
        ):
            return value
        known = ", ".join(self._known(ctx))
        ctx.report(at, f"expected {self.expected()} ({known}), got {describe(value)}")
        return INVALID

    def json_schema(self, defs: SchemaDefs) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class EstimationSection:
    """[vee.estimation]: how missing and failed intervals are estimated."""

    linear_max_minutes: int = setting(
        Int(minimum=0, maximum=24 * 60, unit="minutes, a multiple of 15"),
        default=120,
        doc="Longest gap of missing reads filled by linear interpolation.",
    )
    like_weeks: int = setting(
        Int(minimum=1, maximum=8, unit="weeks"),
        default=4,
        doc="Weeks of like days behind a like-day estimate.",
    )
    seasonal_factor: bool = setting(
        Bool(), default=True, doc="Scale like-day averages by last year's seasonal trend."
    )
    snap_seconds: int = setting(
        Int(minimum=0, maximum=450, unit="seconds"),
        default=60,
        doc="How far from an interval boundary a read may be and still count as that "
        "boundary's read.",
    )

    def table_problems(self) -> Problems:
        if self.linear_max_minutes % 15:
            yield "linear_max_minutes", "must be a multiple of 15 (whole intervals)"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillSection:
    """[vee.backfill]: reading back a silent meter's own load records (DL/T 645-2007 A.7) so
    actuals supersede the intervals estimated meanwhile.

    Each backfill transaction rides in the meter's poll slot, one per poll: a class-4 record
    is 32 bytes, 0.15 s at 2400 baud, so the default 4 adds about 0.7 s to that poll.
    """

    enabled: bool = setting(
        Bool(), default=True, doc="Fetch load records for estimated intervals."
    )
    max_records: int = setting(
        Int(minimum=1, maximum=96), default=4,
        doc="Records read back per poll of a meter, in exchanges no longer than the bus's "
        "longest poll read (so a control frame never waits behind a long read-back).",
    )
    max_age_hours: int = setting(
        Int(minimum=1, maximum=48, unit="grid hours"),
        default=24,
        doc="Estimated intervals older than this stay estimates (a meter back after a week "
        "does not hold its bus for hours).",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterClassSection:
    """[vee.classes.<name>]: facts about a class of meters that rules need ("default" always
    exists; a table of that name changes it)."""

    contract_kw: float | None = setting(
        Number(minimum=0, exclusive_minimum=True, unit="kW"),
        default=None,
        doc="Contracted power, for the impossible-delta rule (unset: that rule is off).",
    )
    register_digits: int = setting(
        Int(minimum=1, maximum=12),
        default=6,
        doc="Integer digits of the energy registers (6 wraps at 10^6 kWh).",
    )
    lsb_kwh: float = setting(
        Number(minimum=0, exclusive_minimum=True, unit="kWh"),
        default=0.01,
        doc="Register resolution; estimates are published at it.",
    )
    generating: bool = setting(
        Bool(), default=False, doc="Export is expected (the reverse-energy rule is off)."
    )
    members: tuple[str, ...] = setting(
        ListOf(Str(hint="a meter id pattern (fnmatch)")),
        default=(),
        doc="Meter id patterns (fnmatch) of the class, for tools without per-meter classes.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterFactsSection:
    """[vee.meters.<meter id>]: facts of one meter that override its class."""

    meter_class: str | None = setting(
        MeterClassName(), default=None, key="class", doc="The meter's class."
    )
    contract_kw: float | None = setting(
        Number(minimum=0, exclusive_minimum=True, unit="kW"),
        default=None,
        doc="The customer's contracted power.",
    )
    register_digits: int | None = setting(
        Int(minimum=1, maximum=12), default=None, doc="Integer digits of its energy registers."
    )


def _rule_entry(spec: RuleSpec) -> type:
    """The `[[vee.rules]]` shape of one catalogue rule: the common keys and its parameters.

    Parameters default to unset: an entry overrides only the keys it names, later entries of
    the timeline on top of earlier ones (docs/vee.md), so "unset" and "the catalogue default"
    must stay distinguishable.
    """
    common: list[tuple[str, Any, Any]] = [
        ("name", str, setting(Choice((spec.name,)), doc="The rule (docs/vee.md lists them).")),
        (
            "meter_class",
            str,
            setting(
                MeterClassName(any_class=True),
                default="*",
                key="class",
                doc='The meter class the entry applies to ("*": every class).',
            ),
        ),
        (
            "effective",
            "dt.date | None",
            setting(Date(), default=None, doc="From this local day on (unset: always)."),
        ),
        (
            "severity",
            "str | None",
            setting(
                Choice(get_args(Severity)),
                default=None,
                doc=f"info | warn | fail (catalogue: {spec.severity}).",
            ),
        ),
    ]
    for key, param in spec.params.items():
        high = None if param.high == float("inf") else param.high
        kind = (
            Int(minimum=int(param.low), maximum=None if high is None else int(high), unit=param.unit)
            if param.integer
            else Number(minimum=param.low, maximum=high, unit=param.unit)
        )
        doc = f"{param.doc[:1].upper()}{param.doc[1:]} (catalogue default {param.default:g})."
        common.append((key, "float | None", setting(kind, default=None, doc=doc)))
    title = "".join(part.title() for part in spec.name.split("_")) + "Rule"
    cls = dataclasses.make_dataclass(title, common, frozen=True, slots=True, kw_only=True)
    cls.__doc__ = f"[[vee.rules]] with name = \"{spec.name}\": {spec.doc}"
    cls.__module__ = __name__
    return cls


RULE_ENTRIES: Final = Variants(
    discriminator="name",
    options={name: Variant(_rule_entry(spec)) for name, spec in RULES.items()},
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VeeSection:
    """[vee]: validation, estimation and editing; every read published carries its NEM12
    quality, method and reason codes (docs/vee.md).

    Every key has a default, so an empty table is a complete configuration. Durations are in
    grid time (see interval_seconds).
    """

    utc_offset: str | None = setting(
        UtcOffset(),
        default=None,
        doc='Meters\' local time: days, day types and tariffs follow it (unset: "+08:00"; '
        "gwtool reconcile then takes [reconcile] utc_offset_min).",
    )
    holidays: str | tuple[dt.date, ...] = setting(
        Holidays(), default="cn", doc="Holiday table: built-in cn, none, or a list of dates."
    )
    extra_holidays: tuple[dt.date, ...] = setting(
        DATES, default=(), doc="Days added to the holiday table."
    )
    workdays: tuple[dt.date, ...] = setting(
        DATES, default=(), doc="Weekend days worked (make-up workdays) added to the table."
    )
    kernels: Kernels = setting(
        Choice(KERNEL_CHOICES),
        default="auto",
        doc="Rule kernels the daemon runs: numba, numpy (their twins, proven equal by the "
        "tests), or auto (numba from numba_min_meters meters up: numba alone costs about "
        "70 MB of RSS). gwtool vee ignores it.",
    )
    numba_min_meters: int = setting(
        Int(minimum=0, maximum=10**7),
        default=500,
        doc="With kernels = auto: meters from which numba is used.",
    )
    interval_seconds: int = setting(
        Int(choices=_INTERVAL_CHOICES, unit="seconds: the divisors of 900"),
        default=GRID_INTERVAL_S,
        doc="Wall-clock length of one 15-minute grid interval: 900 in production; test rigs "
        "set a few seconds so a simulated day passes in minutes.",
    )
    estimation: EstimationSection = setting(
        Table(EstimationSection), default=EstimationSection(), doc="Estimation settings."
    )
    backfill: BackfillSection = setting(
        Table(BackfillSection), default=BackfillSection(), doc="Load-record backfill."
    )
    classes: dict[str, MeterClassSection] = setting(
        MapOf(Table(MeterClassSection), name="class name"),
        default={},
        doc="Meter classes by name.",
    )
    rules: tuple[Any, ...] = setting(
        TableList(RULE_ENTRIES),
        default=(),
        doc="Rule overrides: severity and parameters per class, from an effective date.",
    )
    check_meters: dict[str, str] = setting(
        MapOf(Str(hint="the id of another meter"), name="meter id"),
        default={},
        doc="Check meters: meter id = the id of the meter that checks it.",
    )
    meters: dict[str, MeterFactsSection] = setting(
        MapOf(Table(MeterFactsSection), name="meter id"),
        default={},
        doc="Per-meter facts that override the meter's class.",
    )

    def table_problems(self) -> Problems:
        for meter, check in self.check_meters.items():
            if check == meter:
                yield ("check_meters", meter), "expected the id of another meter, not itself"


def vee_config(section: VeeSection) -> VeeConfig:
    """The kernels' `VeeConfig` from a checked `[vee]` table (nothing left to reject)."""
    from edge_rules.calendar import CN_HOLIDAYS, CN_WORKDAYS, Calendar, parse_utc_offset
    from edge_rules.vee_rules import (
        BackfillSettings,
        DaemonSettings,
        EstimationSettings,
        MeterClass,
        MeterFacts,
        RuleSetting,
        VeeConfig,
    )

    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]
    if isinstance(section.holidays, tuple):
        holidays, workdays = frozenset(section.holidays), frozenset()
    elif section.holidays == "cn":
        holidays, workdays = CN_HOLIDAYS, CN_WORKDAYS
    else:  # "none"
        holidays, workdays = frozenset(), frozenset()
    holidays |= frozenset(section.extra_holidays)
    workdays |= frozenset(section.workdays)
    classes = {"default": MeterClass("default")}
    for name, body in section.classes.items():
        classes[name] = MeterClass(
            name, body.contract_kw, body.register_digits, body.lsb_kwh, body.generating,
            body.members,
        )
    rules = tuple(
        RuleSetting(
            entry.name,
            entry.meter_class,
            entry.effective,
            entry.severity,
            {
                key: float(getattr(entry, key))
                for key in RULES[entry.name].params
                if getattr(entry, key) is not None
            },
        )
        for entry in section.rules
    )
    est = section.estimation
    backfill = section.backfill
    return VeeConfig(
        calendar=Calendar(parse_utc_offset(section.utc_offset or DEFAULT_UTC_OFFSET), holidays, workdays),
        classes=classes,
        settings=rules,
        estimation=EstimationSettings(
            est.linear_max_minutes, est.like_weeks, est.seasonal_factor, est.snap_seconds
        ),
        check_meters=dict(section.check_meters),
        meters={
            meter: MeterFacts(facts.meter_class, facts.contract_kw, facts.register_digits)
            for meter, facts in section.meters.items()
        },
        daemon=DaemonSettings(
            section.kernels,
            section.numba_min_meters,
            section.interval_seconds,
            BackfillSettings(backfill.enabled, backfill.max_records, backfill.max_age_hours),
        ),
    )


def vee_section(table: object, file: Path) -> VeeSection:
    """Check a raw `[vee]` table on its own (a rules file, a test's dict); raises
    `ConfigError` with every problem, at key paths starting `vee.`."""
    raw = {"vee": table}
    ctx = Context(file=file, base_dir=file.parent, raw=raw)
    section = build_table(VeeSection, table, ROOT.key("vee"), ctx)
    if ctx.issues or section is INVALID or not isinstance(section, VeeSection):
        raise ConfigError(ctx.issues or [ConfigIssue(file, "vee", "expected a table")])
    return section


def vee_config_from_table(table: object, file: Path = Path("[vee]")) -> VeeConfig:
    """A raw `[vee]` table (a dict as tomllib gives it) checked and turned into the kernels'
    `VeeConfig`, for tools and tests that have no gateway config around it."""
    return vee_config(vee_section(table, file))


def load_vee_rules(path: Path) -> VeeConfig:
    """The `[vee]` table of a TOML file (a rules file or a gateway config: other tables are
    ignored), for `gwtool vee --rules`. Raises `ConfigError`."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(path, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(path, "", f"cannot read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(path, "", f"not valid TOML: {exc}")]) from None
    table = document.get("vee")
    if not isinstance(table, dict):
        raise ConfigError(
            [ConfigIssue(path, "", "no [vee] table (see docs/vee.md for the format)")]
        )
    return vee_config_from_table(table, path)
