"""A real mosquitto run from the shipped templates (configs/mosquitto/), with a lab PKI.

The broker's configuration is the template itself, with only the file paths and the port
rewritten, so a test of this broker is a test of what an operator installs. Certificates are
issued by ``gwtool``'s own PKI code (firmware_tools.pki); whether they are any good is then
decided by mosquitto's OpenSSL and Python's ``ssl``, not by us.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_tools.pki import build_csr, common_name, key_pem, new_key, new_lab_ca, sign_csr
from tests.broker import MosquittoBroker

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "configs" / "mosquitto"
INSTALL_DIR = "/etc/mosquitto/edge-gateway/"

#: The identities the ACL template names, plus two gateways and an operator it does not know.
IDENTITIES = (("gateway", "gw-1"), ("gateway", "gw-2"), ("operator", "op-1"),
              ("central", "central-1"), ("central", "witness"), ("operator", "op-9"))


@dataclass(frozen=True)
class Identity:
    cn: str
    cert: Path
    key: Path


@dataclass
class Pki:
    ca: Path
    identities: dict[str, Identity] = field(default_factory=dict)


def _sign(ca: Any, directory: Path, role: str, name: str, **kw: Any) -> Identity:
    key = new_key()
    cn, pem = sign_csr(ca, build_csr(key, common_name(role, name)), days=2, **kw)  # type: ignore[arg-type]
    stem = cn.replace("/", "_")
    (directory / f"{stem}.key").write_bytes(key_pem(key))
    (directory / f"{stem}.crt").write_bytes(pem)
    return Identity(cn, directory / f"{stem}.crt", directory / f"{stem}.key")


def make_pki(directory: Path, gateways: tuple[str, ...] = ()) -> Pki:
    """A lab CA, the broker's server certificate for 127.0.0.1 and a client per identity
    (IDENTITIES and the ``gateways`` named)."""
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    ca = new_lab_ca(2)
    (directory / "ca.crt").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    pki = Pki(directory / "ca.crt")
    broker = _sign(ca, directory, "broker", "test", server_names=("127.0.0.1",))
    pki.identities["broker"] = broker
    for role, name in (*IDENTITIES, *(("gateway", g) for g in gateways)):
        ident = _sign(ca, directory, role, name)
        pki.identities[ident.cn] = ident
    # The same names from a CA the broker does not trust.
    rogue = new_lab_ca(2)
    (directory / "rogue").mkdir(exist_ok=True)
    pki.identities["rogue/gw-1"] = _sign(rogue, directory / "rogue", "gateway", "gw-1")
    return pki


def secure_broker(workdir: Path, pki: Pki, prefix: str = "mtr/v1") -> MosquittoBroker:
    """mosquitto configured by configs/mosquitto/edge-gateway.{conf,acl} (not started).

    The ACL gets one more central worker, ``central/witness``, added as the template says to
    add a worker: a copy of the ``central/central-1`` block under the new name.
    """
    acl = (TEMPLATES / "edge-gateway.acl").read_text().replace("mtr/v1/", f"{prefix}/")
    block = acl[acl.index("user central/central-1\n"):].split("\n\n")[0]
    acl += "\n" + block.replace("central/central-1", "central/witness") + "\n"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "edge-gateway.acl").write_text(acl)
    conf = (TEMPLATES / "edge-gateway.conf").read_text()
    broker = pki.identities["broker"]
    conf = (conf.replace(INSTALL_DIR + "edge-gateway.acl", str(workdir / "edge-gateway.acl"))
            .replace(INSTALL_DIR + "ca.crt", str(pki.ca))
            .replace(INSTALL_DIR + "broker.crt", str(broker.cert))
            .replace(INSTALL_DIR + "broker.key", str(broker.key)))
    assert INSTALL_DIR not in conf, "a template path the test does not rewrite"
    head, _, listener = conf.partition("\nlistener 8883\n")
    assert listener, "the template's listener line moved"
    preamble = "\n".join(line for line in head.splitlines() if not line.startswith("allow_anonymous"))
    assert "allow_anonymous false" in head
    return MosquittoBroker(workdir, preamble=preamble, extra_config=listener,
                           allow_anonymous=False)


class Client:
    """An MQTT 5 client holding one identity, recording reason codes and received messages."""

    def __init__(self, broker: MosquittoBroker, pki: Pki, cn: str | None, *,
                 client_id: str = "", will: tuple[str, bytes] | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.cn = cn
        self.connack: Any = None
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self._acks: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or (cn or "anon"),
                                  protocol=mqtt.MQTTv5)
        ident = pki.identities[cn] if cn is not None else None
        self.client.tls_set(ca_certs=str(pki.ca), certfile=str(ident.cert) if ident else None,
                            keyfile=str(ident.key) if ident else None)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ack(mid, rcs)
        self.client.on_publish = lambda c, u, mid, rc, p: self._ack(mid, rc)
        self.broker = broker

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self._connected.set()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _ack(self, mid: int, reason: Any) -> None:
        with self._lock:
            self._acks[mid] = reason

    def connect(self, timeout: float = 10.0) -> bool:
        """True when the broker sent a successful CONNACK."""
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except OSError:  # ssl.SSLError included: the handshake itself was refused
            return False
        self.client.loop_start()
        got = self._connected.wait(timeout)
        return bool(got and self.connack is not None and not self.connack.is_failure)

    def _wait_ack(self, mid: int, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if mid in self._acks:
                    return self._acks[mid]
            time.sleep(0.01)
        raise AssertionError(f"{self.cn}: no acknowledgement for message {mid}")

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False) -> str:
        """Publish at QoS 1 and return the PUBACK reason (e.g. 'Success', 'Not authorized')."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return str(self._wait_ack(info.mid))

    def subscribe(self, topic: str) -> str:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        reasons = self._wait_ack(mid)
        return str(reasons[0])

    def received(self, topic: str, payload: bytes | None = None) -> bool:
        with self._lock:
            return any(t == topic and (payload is None or p == payload) for t, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
