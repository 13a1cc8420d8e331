"""A blocking Modbus master for field tools: pymodbus's synchronous TCP and RTU clients, with
every failure turned into one line that says what to check.

The daemon's Modbus bus (``gateway.acquisition.modbus_bus``) runs pymodbus's asyncio clients
under a scheduler; a field engineer asks one unit at a time and waits, so the synchronous
clients are enough. What the registers mean stays in :mod:`protocols.modbus` (the same profile
and register map the daemon decodes with); this module only moves requests and replies.

pymodbus reports a failed connect by logging it and returning False; its log lines would reach
the terminal as noise next to our own line, so they are silenced here and the cause is found
again by opening the socket or serial port ourselves (:func:`_diagnose_tcp`,
:func:`~firmware_tools.meter_link.open_port`), which gives the errno to explain.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.config.serial_line import parity_for_port

from .errors import ToolError
from .meter_link import SerialSettings, open_port

DEFAULT_TCP_PORT = 502

#: Modbus exception codes (Modbus Application Protocol v1.1b3, §7) and what to check for each.
EXCEPTION_TEXT = {
    0x01: "illegal function (the unit does not support this function code: try --input/--holding)",
    0x02: "illegal data address (the unit has no such register: check the address and count, "
          "or the profile)",
    0x03: "illegal data value (the count or value is not accepted)",
    0x04: "server device failure",
    0x05: "acknowledge (busy with a long operation: ask again later)",
    0x06: "server device busy (ask again later)",
    0x0A: "gateway path unavailable (the TCP gateway has no route to that unit)",
    0x0B: "gateway target device failed to respond (no unit with that id behind the TCP gateway)",
}

#: Exceptions that mean "nobody is there" rather than "the unit said no" (as the daemon's bus).
ABSENT_EXCEPTIONS = frozenset({0x0A, 0x0B})


class ModbusToolError(ToolError):
    """A Modbus failure to print as one line."""


class NoReply(ModbusToolError):
    """The unit did not answer within the timeout (or the connection dropped)."""


class ExceptionReply(ModbusToolError):
    """The unit (or the TCP gateway in front of it) answered with a Modbus exception."""

    def __init__(self, unit: int, code: int) -> None:
        self.code = code
        super().__init__(f"unit {unit} answered exception {code:02X}: "
                         f"{EXCEPTION_TEXT.get(code, 'unknown exception code')}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the units are: ``host``:``tcp_port`` (Modbus TCP) or a serial ``port`` (RTU)."""

    host: str | None = None
    tcp_port: int = DEFAULT_TCP_PORT
    serial: SerialSettings | None = None
    timeout_s: float = 1.0

    @property
    def describe(self) -> str:
        if self.serial is not None:
            return f"{self.serial.port} at {self.serial.link}"
        return f"{self.host}:{self.tcp_port}"


def parse_host(text: str, option: str = "--tcp", default_port: int = DEFAULT_TCP_PORT) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a host and a port; ``option``
    names the argument in the error (``gwtool watch --broker`` parses the same way)."""
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ToolError(f"{option} {text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ToolError(f"{option} {text!r}: expected [ADDRESS]:PORT")
            port = _port_number(rest[1:], text, option)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port_number(port_text, text, option)
    if not host:
        raise ToolError(f"{option} {text!r}: no host given")
    return host, port


def _port_number(text: str, whole: str, option: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ToolError(f"{option} {whole!r}: the port must be a number 1..65535, got {text!r}")
    return int(text)


def _quiet_pymodbus() -> None:
    """pymodbus logs connection failures itself; we report them as our one line instead."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)


def _diagnose_tcp(host: str, port: int, timeout_s: float) -> str:
    """Why a TCP connect failed, found by trying it ourselves (pymodbus keeps the reason in its log)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror} — check the name or use an IP address"
    except ConnectionRefusedError:
        return (f"connection to {host}:{port} refused — nothing listens there: check the address, "
                "the port (Modbus TCP is 502) and that the meter or TCP gateway is powered")
    except TimeoutError:
        return (f"connection to {host}:{port} timed out — check the network path and any "
                "firewall in between")
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc} — check the network"
    return f"cannot connect to {host}:{port} (it accepted a second try: ask again)"


@contextmanager
def connect(target: Target) -> Iterator[ModbusTcpClient | ModbusSerialClient]:
    """An open client for ``target``, closed on exit; :class:`ModbusToolError` when it cannot open."""
    _quiet_pymodbus()
    client: ModbusTcpClient | ModbusSerialClient
    if target.serial is not None:
        settings = target.serial
        if settings.parity not in ("E", "N", "O"):
            raise ModbusToolError(f"parity must be E, N or O, got {settings.parity!r}")
        # Opening it ourselves first gives the pty parity warning and a described error.
        open_port(settings).close()
        line = parity_for_port(settings.port, settings.parity)
        client = ModbusSerialClient(settings.port, baudrate=settings.baudrate, parity=line.applied,
                                    bytesize=8, stopbits=1, timeout=target.timeout_s, retries=0)
        if not client.connect():
            raise ModbusToolError(f"cannot open serial port {settings.port} (it opened a moment "
                                  "ago: another process may have taken it)")
    else:
        assert target.host is not None
        client = ModbusTcpClient(target.host, port=target.tcp_port, timeout=target.timeout_s,
                                 retries=0)
        if not client.connect():  # type: ignore[no-untyped-call]
            raise ModbusToolError(_diagnose_tcp(target.host, target.tcp_port, target.timeout_s))
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


def read_registers(client: ModbusTcpClient | ModbusSerialClient, target: Target, unit: int,
                   function: str, address: int, count: int) -> list[int]:
    """Registers ``address``..``address+count-1`` of ``unit`` (``function`` ``holding``: FC 03,
    ``input``: FC 04). Raises :class:`NoReply` or :class:`ExceptionReply`."""
    if not client.connected:
        client.connect()  # a TCP server may drop the connection after a timeout; one new try
    read: Any = client.read_holding_registers if function == "holding" else client.read_input_registers
    try:
        response = read(address, count=count, device_id=unit)
    except (ModbusException, OSError) as exc:
        client.close()  # type: ignore[no-untyped-call]  # a late reply must not be taken for the next request's
        raise NoReply(f"unit {unit}: no reply to {function} {address}+{count} from "
                      f"{target.describe} within {target.timeout_s:g} s — check unit id, wiring, "
                      f"baud/parity ({type(exc).__name__})") from None
    if response.isError():
        raise ExceptionReply(unit, int(getattr(response, "exception_code", 0)))
    return list(response.registers)
