"""Who may command what: operator keys, their roles, what each role may do, and which meters
are out of reach.

Roles follow IEC 62351-8 (role-based access control for power systems). The standard gives each
role a set of *rights*; an action needs one right. Every command this gateway executes changes
the state of a customer's supply, which 62351-8 calls CONTROL, and of the four roles the command
contract names only OPERATOR holds CONTROL: a VIEWER only looks, an ENGINEER configures and a
SECADM administers security — none of them switches customers. The table is spelled out so that a
reviewer can check it against the standard line by line rather than trust a summary.

The key table is built from the loaded config (`[[operators]]`, `[[meters]]` with `protected`,
`[[groups]]`); the public keys were parsed and checked when the config was loaded, so nothing here
touches a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from gateway.control.errors import ControlError
from protocols.commands.envelope import ACTIONS, ROLES, GroupTarget, Role, Targets

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

Right = Literal[
    "VIEW",
    "READ",
    "DATASET",
    "REPORTING",
    "FILEREAD",
    "FILEWRITE",
    "FILEMNGT",
    "CONTROL",
    "CONFIG",
    "SETTINGGROUP",
    "SECURITY",
]

#: Role → rights for the four roles the command contract uses, after the pre-defined role table
#: of IEC 62351-8:2011 (§5, table 3). The property that matters here: CONTROL belongs to
#: OPERATOR alone.
ROLE_RIGHTS: Final[Mapping[Role, frozenset[Right]]] = MappingProxyType(
    {
        "VIEWER": frozenset({"VIEW", "REPORTING"}),
        "OPERATOR": frozenset({"VIEW", "READ", "REPORTING", "CONTROL"}),
        "ENGINEER": frozenset(
            {
                "VIEW",
                "READ",
                "DATASET",
                "REPORTING",
                "FILEREAD",
                "FILEWRITE",
                "FILEMNGT",
                "CONFIG",
                "SETTINGGROUP",
            }
        ),
        "SECADM": frozenset(
            {
                "VIEW",
                "READ",
                "DATASET",
                "REPORTING",
                "FILEREAD",
                "FILEWRITE",
                "FILEMNGT",
                "CONFIG",
                "SETTINGGROUP",
                "SECURITY",
            }
        ),
    }
)

#: Actions granted to named roles rather than through a 62351-8 right. ``planned_outage``
#: switches nothing: it tells the gateway that an outage in a window is the utility's own work,
#: so the CRM does not treat it as a fault. Planning maintenance is the job of operators and of
#: engineers (who hold CONFIG, not CONTROL); no pre-defined right names it, and granting it by a
#: right every ENGINEER holds would hand it to SECADM too, whose job is keys, not the network.
#: ``replay`` switches nothing either: it asks the gateway to publish again messages it already
#: published (a consumer found a gap), so whoever may read them may ask — a VIEWER (the
#: central consumer's own key), an OPERATOR or an ENGINEER. SECADM, again, is left out.
ACTION_ROLES: Final[Mapping[str, frozenset[Role]]] = MappingProxyType(
    {
        "planned_outage": frozenset({"OPERATOR", "ENGINEER"}),
        "replay": frozenset({"VIEWER", "OPERATOR", "ENGINEER"}),
    }
)

#: The right each other action needs. All of them switch or restrict a customer's supply.
ACTION_RIGHT: Final[Mapping[str, Right]] = MappingProxyType(
    {action: "CONTROL" for action in ACTIONS if action not in ACTION_ROLES}
)


def allowed_actions(role: Role) -> frozenset[str]:
    """The actions a command claiming ``role`` may carry."""
    rights = ROLE_RIGHTS[role]
    by_right = {action for action, right in ACTION_RIGHT.items() if right in rights}
    by_role = {action for action, roles in ACTION_ROLES.items() if role in roles}
    return frozenset(by_right | by_role)


def roles_for(action: str) -> frozenset[Role]:
    """The roles that may carry ``action`` (for the rejection's hint)."""
    return frozenset(role for role in ROLES if action in allowed_actions(role))


class UnknownTargetError(ControlError, LookupError):
    """A command names a meter or group the gateway does not have."""


@dataclass(frozen=True, slots=True)
class OperatorKey:
    """One `[[operators]]` entry: ``kid`` (text; its UTF-8 bytes are the COSE kid), ``public_key``
    (32 raw bytes) and the ``roles`` it may claim."""

    kid: str
    public_key: bytes
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeyTable:
    """The gateway's command authority: operator keys by COSE kid, the meters it knows, the
    protected ones, and group membership for ``{"group": id}`` targets. ``areas``: the
    ``[[areas]]`` (master meter, then the sub-meters of its ``subs`` group), which only
    ``planned_outage`` may name as ``{"group": area id}`` (area ids never equal group ids)."""

    operators: Mapping[bytes, OperatorKey]
    meters: frozenset[str]
    protected_meters: frozenset[str]
    groups: Mapping[str, tuple[str, ...]]
    areas: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(
        cls,
        operators: Iterable[OperatorKey],
        meters: Iterable[str],
        protected_meters: Iterable[str] = (),
        groups: Mapping[str, Iterable[str]] | None = None,
        areas: Mapping[str, Iterable[str]] | None = None,
    ) -> KeyTable:
        table: dict[bytes, OperatorKey] = {}
        for op in operators:
            kid = op.kid.encode("utf-8")
            if kid in table:
                raise ValueError(f"operator kid {op.kid!r} appears twice")
            bad = sorted(set(op.roles) - set(ROLES))
            if bad:
                raise ValueError(f"operator {op.kid!r}: unknown role(s) {bad}")
            table[kid] = op
        known = frozenset(meters)
        protected = frozenset(protected_meters)
        if not protected <= known:
            raise ValueError(f"protected meter(s) {sorted(protected - known)} are not configured")
        members = {gid: tuple(dict.fromkeys(ms)) for gid, ms in (groups or {}).items()}
        area_meters = {aid: tuple(dict.fromkeys(ms)) for aid, ms in (areas or {}).items()}
        return cls(
            operators=MappingProxyType(table),
            meters=known,
            protected_meters=protected,
            groups=MappingProxyType(members),
            areas=MappingProxyType(area_meters),
        )

    @classmethod
    def from_config(cls, config: GatewayConfig) -> KeyTable:
        """The key table of a loaded config."""
        return cls.build(
            operators=(
                OperatorKey(kid=op.kid, public_key=op.public_key, roles=frozenset(op.roles))
                for op in config.operators
            ),
            meters=(m.id for m in config.meters),
            protected_meters=(m.id for m in config.meters if m.protected),
            groups={g.id: [member.meter for member in g.members] for g in config.groups},
            areas={
                a.id: [a.master, *(member.meter for member in config.group(a.subs).members)]
                for a in config.areas
            },
        )

    def key(self, kid: bytes) -> OperatorKey | None:
        """The operator key with COSE kid ``kid``, or None."""
        return self.operators.get(kid)

    def expand(self, targets: Targets, *, areas: bool = False) -> tuple[str, ...]:
        """The meter ids a command's targets name, in order, each once; raises
        :class:`UnknownTargetError` naming what is not configured. With ``areas`` a
        ``{"group": id}`` may also name an ``[[areas]]`` id (its master and sub-meters)."""
        if isinstance(targets, GroupTarget):
            members = self.groups.get(targets.group)
            if members is None and areas:
                members = self.areas.get(targets.group)
            if members is None:
                what = "group or area" if areas else "group"
                raise UnknownTargetError(f"{what} {targets.group!r} is not configured")
            return members
        unknown = [m for m in targets.meters if m not in self.meters]
        if unknown:
            shown = ", ".join(repr(m) for m in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UnknownTargetError(f"meter(s) {shown}{more} are not configured")
        return targets.meters
