"""Typed requests and replies for every DL/T 645-2007 and -1997 function.

Each message is a frozen, slotted dataclass whose docstring lists its fields and the function code it
stands for; :data:`Message` is their union. This module holds only the vocabulary: turning a message
into frame bytes is :mod:`.encoding`, turning frame bytes into a message is :mod:`.decoding`, and the
data-field layouts both follow are in :mod:`.data_fields`. The types sit apart from the codec so that
code which only names or inspects messages (the gateway's actuation and load control mostly need
:class:`ControlAction`) does not have to read several hundred lines of byte layouts to find them.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from .frame import BROADCAST_ADDRESS, WILDCARD_ADDRESS, Version
from .items import Reading

V2007: Final = Version.V2007
V1997: Final = Version.V1997


class ControlAction(enum.IntEnum):
    """Control type N1 of a 1CH frame (DL/T 645-2007 §7.13 and the 2013 filing)."""

    TRIP = 0x1A  # 跳闸
    ALLOW_CLOSE = 0x1B  # 合闸允许: the customer presses the button to close
    DIRECT_CLOSE = 0x1C  # 直接合闸
    ALARM = 0x2A  # 报警
    ALARM_RELEASE = 0x2B  # 报警解除
    PROTECT = 0x3A  # 保电
    PROTECT_RELEASE = 0x3B  # 保电解除


class OutputSignal(enum.IntEnum):
    """Multi-function terminal output of a 1DH frame."""

    CLOCK_SECOND_PULSE = 0x00
    DEMAND_PERIOD = 0x01
    TIME_SLOT_SWITCH = 0x02


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Read data (11H; 01H in -1997). Fields: ``address``, ``di``, ``version``; ``count`` (N blocks)
    and ``start`` (first record time) only for load-record identifiers (06xxxxxx)."""

    address: str
    di: int
    version: Version = V2007
    count: int | None = None
    start: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ReadReply:
    """Normal read reply (91H/B1H; 81H/A1H). Fields: ``address``, ``di``, ``data`` (raw value bytes),
    ``readings`` (decoded), ``more_follows`` (D5: send a follow-up request), ``version``."""

    address: str
    di: int
    data: bytes
    readings: tuple[Reading, ...] = ()
    more_follows: bool = False
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ReadFollowupRequest:
    """Read follow-up data (12H; 02H in -1997). ``seq`` is the frame sequence (-2007 only)."""

    address: str
    di: int
    seq: int = 1
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ReadFollowupReply:
    """Follow-up reply (92H/B2H; 82H/A2H); fields as :class:`ReadReply` plus ``seq`` (-2007).
    ``readings`` is empty: the data continues earlier frames, decoded once joined."""

    address: str
    di: int
    data: bytes
    readings: tuple[Reading, ...] = ()
    seq: int | None = None
    more_follows: bool = False
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class RereadRequest:
    """-1997 re-read (03H): ask the meter to repeat its last reply."""

    address: str
    version: Version = V1997


@dataclass(frozen=True, slots=True)
class ReadAddressRequest:
    """Read communication address (13H), sent to the AA wildcard: only valid with one meter on the line."""

    address: str = WILDCARD_ADDRESS
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ReadAddressReply:
    """Reply 93H: ``address`` is the meter's own address (also the data field)."""

    address: str
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Write data (14H; 04H in -1997). ``data`` is the raw value bytes; ``operator`` (-2007 only)."""

    address: str
    di: int
    data: bytes
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class WriteAddressRequest:
    """Write communication address (15H; 0AH in -1997), sent to the AA wildcard."""

    new_address: str
    address: str = WILDCARD_ADDRESS
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class TimeSyncRequest:
    """Broadcast time sync (08H), sent to 99..99; meters do not answer."""

    moment: dt.datetime
    address: str = BROADCAST_ADDRESS
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class FreezeRequest:
    """Freeze (16H). ``when`` is ``MMDDhhmm`` as digits with ``99`` for "every" (``99999999`` = now)."""

    address: str
    when: str = "99999999"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangeBaudRequest:
    """Change communication speed (17H; 0CH in -1997). ``baudrate`` in bits per second."""

    address: str
    baudrate: int
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangeBaudReply:
    """Reply 97H (8CH): the meter confirms ``baudrate``."""

    address: str
    baudrate: int
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangePasswordRequest:
    """Change password (18H; 0FH in -1997). ``di`` (04000C01..0A, -2007 only) names the level set."""

    address: str
    old_level: int
    old_password: str
    new_level: int
    new_password: str
    di: int = 0x04000C01
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ChangePasswordReply:
    """Reply 98H (8FH): the new level and password as now stored."""

    address: str
    new_level: int
    new_password: str
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ClearDemandRequest:
    """Clear maximum demand (19H; 10H in -1997, which carries no data)."""

    address: str
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ClearMeterRequest:
    """Clear meter (1AH): energy, demand and events back to zero."""

    address: str
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ClearEventsRequest:
    """Clear events (1BH). ``event_di`` FFFFFFFF clears all, otherwise one event class."""

    address: str
    event_di: int = 0xFFFFFFFF
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """Trip / close / alarm / protect (1CH), plaintext layout. ``valid_until`` is the command's deadline:
    the meter ignores it afterwards, so a delayed frame cannot trip a customer hours later."""

    address: str
    action: ControlAction
    valid_until: dt.datetime
    password_level: int = 0x02
    password: str = "000000"
    operator: str = "00000000"
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class MultiFunctionOutputRequest:
    """Multi-function terminal output control (1DH)."""

    address: str
    signal: OutputSignal
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class MultiFunctionOutputReply:
    """Reply 9DH confirming ``signal``."""

    address: str
    signal: OutputSignal
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class AckReply:
    """A normal reply without data (write, write address, freeze, clears, control, 1997 clear demand).
    ``function`` names what was acknowledged."""

    address: str
    function: str
    version: Version = V2007


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Abnormal reply (D6 set). ``error_word`` as sent; ``errors`` the names of its set bits."""

    address: str
    function: str
    error_word: int
    errors: tuple[str, ...] = ()
    version: Version = V2007


Message: TypeAlias = (
    ReadRequest | ReadReply | ReadFollowupRequest | ReadFollowupReply | RereadRequest
    | ReadAddressRequest | ReadAddressReply | WriteRequest | WriteAddressRequest | TimeSyncRequest
    | FreezeRequest | ChangeBaudRequest | ChangeBaudReply | ChangePasswordRequest
    | ChangePasswordReply | ClearDemandRequest | ClearMeterRequest | ClearEventsRequest
    | ControlRequest | MultiFunctionOutputRequest | MultiFunctionOutputReply | AckReply | ErrorReply
)
