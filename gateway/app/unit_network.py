"""``edge-gateway ip-allow``: the systemd unit's network allow list, from the configuration.

The unit says ``IPAddressDeny=any`` and ``IPAddressAllow=localhost`` (systemd/edge-gateway.service):
a compromised daemon can reach nothing else. A unit file cannot read the gateway's TOML, so this
command writes the drop-in that allows exactly the peers the configuration names: the MQTT
broker and every Modbus TCP bus. Host names are resolved now (systemd filters addresses, not
names), and since the daemon resolves them again at every connect, the DNS servers of
/etc/resolv.conf are allowed too. Re-run it after the configuration or DNS changes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.config import GatewayConfig, TcpBusConfig
from gateway.config.mqtt import split_host_port

DROP_IN: Final = "/etc/systemd/system/edge-gateway.service.d/ip-allow.conf"
RESOLV_CONF: Final = Path("/etc/resolv.conf")

Resolver = Callable[[str], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PeerUnresolvable(Exception):
    """A host name of the configuration does not resolve: no address to allow."""


@dataclass(frozen=True, slots=True)
class Peer:
    """Someone the daemon connects to: ``role`` (e.g. "MQTT broker"), ``host`` as configured,
    and the ``addresses`` to allow (loopback ones left out: the unit allows localhost)."""

    role: str
    host: str
    addresses: tuple[str, ...]


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to now."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise PeerUnresolvable(f"cannot resolve {host}: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


def _routable(addresses: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for text in addresses:
        address: IPAddress = ipaddress.ip_address(text.split("%", 1)[0])
        if not address.is_loopback and str(address) not in out:
            out.append(str(address))
    return tuple(out)


def _addresses(host: str, resolver: Resolver) -> tuple[str, ...]:
    try:
        return _routable([host])
    except ValueError:  # not an IP literal: a name
        return _routable(resolver(host))


def nameservers(resolv_conf: Path = RESOLV_CONF) -> tuple[str, ...]:
    """The ``nameserver`` lines of resolv.conf (loopback ones, e.g. systemd-resolved's stub,
    need nothing: the unit allows localhost)."""
    try:
        lines = resolv_conf.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ()
    found = [ln.split()[1] for ln in lines if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1]
    try:
        return _routable(found)
    except ValueError:
        return ()


def peers(config: GatewayConfig, resolver: Resolver = resolve,
          resolv_conf: Path = RESOLV_CONF) -> list[Peer]:
    """The network peers of ``config``, each with the addresses to allow."""
    named: list[tuple[str, str]] = [("MQTT broker", config.mqtt.host)]
    named += [("MQTT fallback broker", split_host_port(entry)[0])
              for entry in config.mqtt.fallback_hosts]
    named += [(f"Modbus TCP bus {bus.name}", bus.host)
              for bus in config.buses if isinstance(bus, TcpBusConfig)]
    out = [Peer(role, host, _addresses(host, resolver)) for role, host in named]
    if any(not _is_literal(host) for _role, host in named):
        servers = nameservers(resolv_conf)
        if servers:
            out.append(Peer("DNS server", str(resolv_conf), servers))
    return out


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def render_drop_in(config_path: Path, found: list[Peer]) -> str:
    """The drop-in file's text."""
    lines = [f"# {DROP_IN}",
             f"# made by `edge-gateway ip-allow --config {config_path}`; re-run it after the",
             "# configuration or DNS changes, then `systemctl daemon-reload` and restart.",
             "[Service]"]
    for peer in found:
        if not peer.addresses:
            lines.append(f"# {peer.role} {peer.host}: loopback, allowed by the unit")
            continue
        lines.append(f"# {peer.role} {peer.host}")
        lines.append("IPAddressAllow=" + " ".join(peer.addresses))
    return "\n".join(lines) + "\n"
