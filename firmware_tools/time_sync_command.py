"""``gwtool time-sync``: set meter clocks from this machine's clock, and show what it did.

Two ways, as the daemon's ``[clock] mode`` (docs/clock.md):

* ``--broadcast``: one DL/T 645 broadcast time sync (08H) — every meter on the line takes the
  time, none answers. With ``--address`` that meter's clock is read before and after.
* ``--address A`` alone: that meter's date (04000101; -1997 C010) and time (04000102; C011)
  are written with its password (14H; 04H in -1997), then read back.

The residual drift read back is what shows that the meter took the time. This machine's clock
is the reference: check it (``timedatectl``, ``chronyc tracking``) before setting a line's
meters from it. Every failure is one line and exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

import serial

from protocols import dlt645 as d
from protocols.dlt645.clock import CLOCK_DIS, clock_offset_s, meter_clock, reading_value

from .dlt645_commands import _add_serial_args, _settings, _version
from .errors import ToolError
from .meter_link import LinkError, SerialSettings, open_port, run_transaction


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _local_now(utc_offset_min: int) -> dt.datetime:
    """Local time of the meters now, to the nearest second (meters count whole seconds)."""
    zone = dt.timezone(dt.timedelta(minutes=utc_offset_min))
    return (dt.datetime.now(zone) + dt.timedelta(milliseconds=500)).replace(microsecond=0,
                                                                            tzinfo=None)


def read_offset(port: serial.SerialBase, settings: SerialSettings, address: str,
                version: d.Version, utc_offset_min: int) -> float:
    """Meter clock minus this machine's clock (s): date, time, date again
    (protocols/dlt645/clock.py)."""
    date_di, time_di = CLOCK_DIS[version]

    def item(di: int, kind: type) -> object:
        answered = run_transaction(port, d.ReadRequest(address, di, version), settings)
        return reading_value(answered.readings, kind)

    before = item(date_di, dt.date)
    time_of_day = item(time_di, dt.time)
    received = _now_ms()
    after = item(date_di, dt.date)
    assert isinstance(before, dt.date) and isinstance(after, dt.date)
    assert isinstance(time_of_day, dt.time)
    return clock_offset_s(meter_clock(before, time_of_day, after), received, utc_offset_min)


def _write_clock(port: serial.SerialBase, settings: SerialSettings, args: argparse.Namespace,
                 version: d.Version) -> None:
    catalogue = d.catalogue_for(version)
    date_di, time_di = CLOCK_DIS[version]
    for di in (date_di, time_di):
        moment = _local_now(args.utc_offset_min)
        value: dt.date | dt.time = moment.date() if di == date_di else moment.time()
        request = d.WriteRequest(args.address, di, d.encode_values(catalogue, di, [value]),
                                 args.password_level, args.password, args.operator, version)
        run_transaction(port, request, settings)


def cmd_time_sync(args: argparse.Namespace) -> int:
    version = _version(args.version)
    if not args.broadcast and not args.address:
        raise ToolError("give --address A (write that meter's clock) or --broadcast "
                        "(08H to every meter on the line)")
    if args.address and (len(args.address) != 12 or not args.address.isdigit()):
        raise ToolError(f"address {args.address!r} must be 12 digits as on the nameplate")
    for name, text, digits in (("--password", args.password, 6), ("--operator", args.operator, 8)):
        if len(text) != digits or any(c not in "0123456789ABCDEFabcdef" for c in text):
            raise ToolError(f"{name} must be {digits} hex digits, got {text!r}")
    settings = _settings(args)
    try:
        port = open_port(settings)
    except LinkError as exc:
        raise ToolError(str(exc)) from None
    result: dict[str, Any] = {"address": args.address, "method": "broadcast" if args.broadcast
                              else "write", "before_s": None, "after_s": None}
    with port:
        try:
            if args.address:
                result["before_s"] = round(read_offset(port, settings, args.address, version,
                                                       args.utc_offset_min), 1)
            if args.broadcast:
                moment = _local_now(args.utc_offset_min)
                run_transaction(port, d.TimeSyncRequest(moment, version=version), settings)
                result["sent"] = moment.isoformat()
            else:
                _write_clock(port, settings, args, version)
            if args.address:
                time.sleep(0.1)  # let a meter finish setting its clock before asking it
                result["after_s"] = round(read_offset(port, settings, args.address, version,
                                                      args.utc_offset_min), 1)
        except d.ExceptionReply as exc:
            raise ToolError(f"{exc} — check --password/--password-level (writing the clock "
                            "needs the meter's write password)") from None
        except d.ProtocolError as exc:
            raise ToolError(f"meter {args.address or 'line'}: {exc}") from None
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.address:
        print(f"meter {args.address}: clock {result['before_s']:+.1f} s before, "
              f"{result['after_s']:+.1f} s after ({'broadcast 08H' if args.broadcast else 'write 14H'})")
    else:
        print(f"broadcast time sync sent: {result['sent']} (meters do not answer a broadcast)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("time-sync", help="set meter clocks from this machine's clock "
                                         "(DL/T 645 broadcast 08H or one meter's 14H write), "
                                         "with the residual drift read back")
    _add_serial_args(p)
    p.add_argument("--baud", type=int, default=2400)
    p.add_argument("--address", default=None,
                   help="the meter to set (write) or, with --broadcast, to read back")
    p.add_argument("--broadcast", action="store_true",
                   help="send a broadcast time sync (08H) to every meter on the line")
    p.add_argument("--utc-offset-min", type=int, default=480,
                   help="the meters' zone east of UTC in minutes (default 480, China)")
    p.add_argument("--password", default="000000", help="write password, 6 hex digits")
    p.add_argument("--password-level", type=lambda t: int(t, 16), default=2,
                   help="password level PA (hex, default 02)")
    p.add_argument("--operator", default="00000000", help="operator code, 8 hex digits")
    p.set_defaults(func=cmd_time_sync)
