"""``edge-central``: the reference consumer's command line (DESIGN §9, docs/central.md).

* ``run --config central.toml [--worker NAME]`` — one worker of the shared subscription; start
  as many as the load needs, each with its own ``--worker`` name (its MQTT session).
* ``status --config central.toml [--detail] [--watch S]`` — per gateway: last seq, open gaps,
  lag, last birth/death (JSON lines). ``--detail`` adds values stored per meter and the newest
  gaps and alarm events (:mod:`central.storage.activity`); ``--watch S`` prints the lines again
  every S seconds until interrupted (the demo's live view reads them).
* ``export nem12 --config central.toml --date YYYY-MM-DD --out DIR [--tz ZONE] [--interval 15]``
* ``outages --config central.toml --since ISO8601`` — the CRM outage feed, JSON lines.

Exit codes: 0 done, 2 bad configuration or arguments, 1 anything else; always one line on
stderr saying why, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from central.config import load_config
from central.errors import CentralError, ConfigError
from central.storage import open_database

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-central", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one consumer worker")
    run.add_argument("--config", type=Path, default=Path("central.toml"),
                     help="the consumer configuration (default: ./central.toml)")
    run.add_argument("--worker", default="1",
                     help="this worker's name, unique in the share group (its MQTT session)")
    status = sub.add_parser("status", help="per-gateway sequence, gaps, lag, birth/death")
    status.add_argument("--config", type=Path, default=Path("central.toml"),
                     help="the consumer configuration (default: ./central.toml)")
    status.add_argument("--detail", action="store_true",
                        help="add values stored per meter, the newest gaps and alarm events "
                             "(counts every stored read: for small databases)")
    status.add_argument("--watch", type=_positive_seconds, default=None, metavar="S",
                        help="print the status again every S seconds until interrupted")
    export = sub.add_parser("export", help="export stored reads")
    formats = export.add_subparsers(dest="format", required=True)
    nem = formats.add_parser("nem12", help="one NEM12 interval file per meter for one day")
    nem.add_argument("--config", type=Path, default=Path("central.toml"),
                     help="the consumer configuration (default: ./central.toml)")
    nem.add_argument("--date", required=True, type=dt.date.fromisoformat)
    nem.add_argument("--out", required=True, type=Path)
    nem.add_argument("--tz", default="UTC", help="time zone the day is in (IANA name)")
    nem.add_argument("--interval", type=int, default=15, choices=(5, 15, 30),
                     help="interval length in minutes (the gateways' VEE grid)")
    outages = sub.add_parser("outages", help="outage and comm alarms as JSON lines (CRM feed)")
    outages.add_argument("--config", type=Path, default=Path("central.toml"),
                     help="the consumer configuration (default: ./central.toml)")
    outages.add_argument("--since", required=True, help="ISO 8601 time; UTC when no offset")
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _since_ms(text: str) -> int:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected an ISO 8601 time, e.g. "
                          "2026-12-07T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _run(args: argparse.Namespace) -> int:
    from central.worker import Worker

    config = load_config(args.config)
    db = open_database(config.database_url)
    worker = Worker(config, args.worker, db)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    stats = worker.run()
    db.close()
    logging.getLogger("edge-central").info("worker %s stopped: %s", args.worker, stats)
    return 0


def _status(args: argparse.Namespace) -> int:
    from central.storage.activity import gateway_activity
    from central.storage.queries import gateway_status

    config = load_config(args.config)
    db = open_database(config.database_url)
    stop = threading.Event()
    if args.watch is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        while True:
            now = time.time_ns() // 1_000_000
            for gateway in gateway_status(db):
                line = gateway.as_json(now)
                if args.detail:
                    line.update(gateway_activity(db, gateway.gw).as_json(), now_ms=now)
                print(json.dumps(line), flush=args.watch is not None)
            if args.watch is None or stop.wait(args.watch):
                return 0
    except BrokenPipeError:  # the reader went away (the demo stopping, `| head`): done
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0
    finally:
        db.close()


def _export(args: argparse.Namespace) -> int:
    from central.nem12 import export_nem12

    try:
        tz = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz {args.tz!r}: not a known time zone (e.g. Australia/Brisbane)") \
            from None
    config = load_config(args.config)
    db = open_database(config.database_url)
    for path in export_nem12(db, args.date, args.out, tz=tz, minutes=args.interval):
        print(path)
    db.close()
    return 0


def _outages(args: argparse.Namespace) -> int:
    from central.storage.queries import outage_alarms

    since = _since_ms(args.since)
    config = load_config(args.config)
    db = open_database(config.database_url)
    for record in outage_alarms(db, since):
        print(json.dumps(record, sort_keys=True))
    db.close()
    return 0


_COMMANDS = {"run": _run, "status": _status, "export": _export, "outages": _outages}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code != 2 else 2
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"edge-central: {exc}", file=sys.stderr)
        return 2
    except CentralError as exc:
        print(f"edge-central: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    except Exception as exc:  # a bug: one line to the user, the detail to the debug log
        logging.getLogger("edge-central").debug("internal error", exc_info=True)
        print(f"edge-central: internal error ({type(exc).__name__}: {exc}); nothing "
              "unacknowledged was lost — please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
