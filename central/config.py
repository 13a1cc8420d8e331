"""``central.toml``: what one consumer worker needs (DESIGN §9), checked as a whole at start.

Every error names the file, the key path and what is expected, and unknown keys are errors (a
misspelt ``grace_s`` silently falling back to its default would hide a real setting). Paths are
relative to the file's directory, so a config and its keys can move together.
"""

from __future__ import annotations

import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from central.errors import ConfigError
from protocols.commands import parse_private_key, parse_public_key
from protocols.ed25519 import SigningKey

__all__ = ["AmqpSettings", "CentralConfig", "MqttSettings", "ReplaySettings", "TlsSettings",
           "load_config"]

#: ``[source] kind``: where the workers' messages come from (:mod:`central.sources`).
SOURCES = ("mqtt", "amqp")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """``[mqtt] tls``: TLS to the broker (present means on). ``cert_file``/``key_file`` are the
    worker's client certificate, for brokers that require one (configs/mosquitto/,
    docs/security.md: each worker its own ``central/NAME`` certificate)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Broker, topic prefix and the shared-subscription group the workers split load in."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "mtr/v1"
    share_group: str = "central"
    keepalive_s: int = 30
    #: How long the broker keeps a worker's session (and the messages queued for it) after it
    #: disconnects, so a worker restarted under the same ``--worker`` name loses nothing.
    session_expiry_s: int = 3600
    tls: TlsSettings | None = None


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """``[amqp]``, for ``[source] kind = "amqp"``: RabbitMQ nodes in the order they are tried
    (the first that answers; on a lost connection, the list again), the workers' shared durable
    queue and the exchange RabbitMQ's MQTT plugin publishes to."""

    urls: tuple[str, ...]
    queue: str = "central"
    exchange: str = "amq.topic"
    heartbeat_s: int = 30


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """The key replay commands are signed with (role VIEWER on each gateway) and their pacing."""

    kid: str
    private_key: SigningKey
    #: At most one replay command per gateway this often (the gateway rate-limits too).
    min_interval_s: float = 10.0
    #: An open gap is asked for again after this long without being filled.
    retry_s: float = 60.0
    #: Command lifetime (``exp - iat``): at most the gateways' ``[commands] max_age_s``
    #: (default 120), which refuses a longer one as ``lifetime_too_long``.
    ttl_s: int = 60


@dataclass(frozen=True, slots=True)
class CentralConfig:
    """The whole configuration; ``replay`` is None when the consumer only detects gaps."""

    path: Path
    database_url: str
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    #: ``mqtt`` (MQTT 5 shared subscription) or ``amqp`` (a RabbitMQ queue; ``amqp`` is set).
    source: str = "mqtt"
    amqp: AmqpSettings | None = None
    replay: ReplaySettings | None = None
    #: A hole in a stream becomes a gap after this long (lanes and workers reorder briefly).
    gap_grace_s: float = 30.0
    gap_scan_interval_s: float = 5.0
    batch_max: int = 500
    batch_wait_ms: int = 200
    result_keys: dict[str, bytes] = field(default_factory=dict)


_SECTIONS: dict[str, set[str]] = {
    "mqtt": {"host", "port", "topic_prefix", "share_group", "keepalive_s", "session_expiry_s",
             "tls"},
    "source": {"kind"},
    "amqp": {"urls", "queue", "exchange", "heartbeat_s"},
    "database": {"url"},
    "replay": {"kid", "private_key", "min_interval_s", "retry_s", "ttl_s"},
    "gaps": {"grace_s", "scan_interval_s"},
    "ingest": {"batch_max", "batch_wait_ms"},
    "gateways": {"id", "result_key"},
}
_TLS_KEYS = {"ca_file", "cert_file", "key_file"}


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, at: str, expected: str, got: object) -> ConfigError:
        return ConfigError(f"{self.path}: {at}: expected {expected}, got {got!r}")

    def table(self, doc: dict[str, Any], name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "a table", value)
        self.known(value, name, _SECTIONS[name])
        return value

    def known(self, table: dict[str, Any], at: str, keys: set[str]) -> None:
        for key in table:
            if key not in keys:
                raise ConfigError(
                    f"{self.path}: {at}.{key}: unknown key; allowed: {', '.join(sorted(keys))}"
                )

    def text(self, table: dict[str, Any], at: str, key: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{at}.{key}", "non-empty text", value)
        return value

    def number(self, table: dict[str, Any], at: str, key: str, default: float,
               low: float, high: float, *, integer: bool = False) -> Any:
        value = table.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            raise self.fail(f"{at}.{key}", f"{kind} in {low:g}..{high:g}", value)
        return value

    def file(self, table: dict[str, Any], at: str, key: str) -> bytes:
        name = self.text(table, at, key)
        path = (self.path.parent / name).resolve()
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self.path}: {at}.{key}: cannot read {path}: {exc.strerror}") from None


def load_config(path: Path) -> CentralConfig:
    """Read and check ``path``; :class:`ConfigError` names the first problem."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    r = _Reader(path)
    r.known(doc, "(top level)", set(_SECTIONS))
    mq = r.table(doc, "mqtt")
    mqtt = MqttSettings(
        host=r.text(mq, "mqtt", "host", "127.0.0.1"),
        port=r.number(mq, "mqtt", "port", 1883, 1, 65535, integer=True),
        topic_prefix=r.text(mq, "mqtt", "topic_prefix", "mtr/v1"),
        share_group=r.text(mq, "mqtt", "share_group", "central"),
        keepalive_s=r.number(mq, "mqtt", "keepalive_s", 30, 5, 3600, integer=True),
        session_expiry_s=r.number(mq, "mqtt", "session_expiry_s", 3600, 0, 2**32 - 1,
                                  integer=True),
        tls=_tls(r, mq),
    )
    if any(c in mqtt.share_group for c in "/+#"):
        raise r.fail("mqtt.share_group", "a name without '/', '+' or '#'", mqtt.share_group)
    source, amqp = _source(r, doc)
    db = r.table(doc, "database")
    url = r.text(db, "database", "url", "sqlite:///var/central.sqlite")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        # Relative SQLite paths are relative to the config file, like every other path here.
        url = "sqlite:///" + str((path.parent / url[len("sqlite:///"):]).resolve())
    gaps = r.table(doc, "gaps")
    ingest = r.table(doc, "ingest")
    return CentralConfig(
        path=path,
        database_url=url,
        mqtt=mqtt,
        source=source,
        amqp=amqp,
        replay=_replay(r, doc),
        gap_grace_s=r.number(gaps, "gaps", "grace_s", 30.0, 0.1, 86400),
        gap_scan_interval_s=r.number(gaps, "gaps", "scan_interval_s", 5.0, 0.1, 3600),
        batch_max=r.number(ingest, "ingest", "batch_max", 500, 1, 100000, integer=True),
        batch_wait_ms=r.number(ingest, "ingest", "batch_wait_ms", 200, 1, 60000, integer=True),
        result_keys=_result_keys(r, doc),
    )


def _tls(r: _Reader, mq: dict[str, Any]) -> TlsSettings | None:
    """Checked by loading it as the worker will, so a wrong path or a key that does not match
    its certificate is a config error at start, not a reconnect loop."""
    if "tls" not in mq:
        return None
    table = mq["tls"]
    if not isinstance(table, dict):
        raise r.fail("mqtt.tls", "a table, e.g. { ca_file = \"ca.crt\" }", table)
    r.known(table, "mqtt.tls", _TLS_KEYS)
    paths = {k: (r.path.parent / r.text(table, "mqtt.tls", k)).resolve()
             for k in ("ca_file", "cert_file", "key_file") if k in table}
    if ("cert_file" in paths) != ("key_file" in paths):
        raise ConfigError(f"{r.path}: mqtt.tls: cert_file and key_file must be given together")
    try:
        context = ssl.create_default_context(cafile=paths.get("ca_file"))
        if "cert_file" in paths:
            context.load_cert_chain(paths["cert_file"], paths["key_file"])
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{r.path}: mqtt.tls: cannot load {', '.join(map(str, paths.values()))}"
                          f": {detail} — check the paths and that the key belongs to the "
                          "certificate") from None
    return TlsSettings(**paths)


def _source(r: _Reader, doc: dict[str, Any]) -> tuple[str, AmqpSettings | None]:
    """``[source] kind`` and, for ``amqp``, the ``[amqp]`` table it needs (and only then)."""
    kind = r.text(r.table(doc, "source"), "source", "kind", "mqtt")
    if kind not in SOURCES:
        raise r.fail("source.kind", " or ".join(f'"{k}"' for k in SOURCES), kind)
    if kind != "amqp":
        if "amqp" in doc:
            raise ConfigError(f'{r.path}: amqp: set, but source.kind is "{kind}"; add '
                              '[source] kind = "amqp" to consume from RabbitMQ, or remove [amqp]')
        return kind, None
    if "amqp" not in doc:
        raise ConfigError(f'{r.path}: source.kind = "amqp" needs an [amqp] table with urls = '
                          '["amqp://user:password@host:5672/%2F", ...]')
    t = r.table(doc, "amqp")
    urls = t.get("urls")
    if (not isinstance(urls, list) or not urls
            or not all(isinstance(u, str) and u.startswith(("amqp://", "amqps://")) for u in urls)):
        raise r.fail("amqp.urls", 'a non-empty array of "amqp://…" or "amqps://…" URLs, tried in '
                     "order", urls)
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{r.path}: amqp.urls: a URL is listed twice")
    queue = r.text(t, "amqp", "queue", "central")
    if queue.startswith("amq."):
        raise r.fail("amqp.queue", "a name not starting with 'amq.' (reserved by RabbitMQ)",
                     queue)
    return kind, AmqpSettings(
        urls=tuple(urls),
        queue=queue,
        exchange=r.text(t, "amqp", "exchange", "amq.topic"),
        heartbeat_s=r.number(t, "amqp", "heartbeat_s", 30, 0, 3600, integer=True),
    )


def _replay(r: _Reader, doc: dict[str, Any]) -> ReplaySettings | None:
    if "replay" not in doc:
        return None
    rp = r.table(doc, "replay")
    pem = r.file(rp, "replay", "private_key")
    try:
        key = parse_private_key(pem, f"{r.path}: replay.private_key")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ReplaySettings(
        kid=r.text(rp, "replay", "kid"),
        private_key=key,
        min_interval_s=r.number(rp, "replay", "min_interval_s", 10.0, 0.0, 86400),
        retry_s=r.number(rp, "replay", "retry_s", 60.0, 0.1, 86400),
        ttl_s=r.number(rp, "replay", "ttl_s", 60, 1, 86400, integer=True),
    )


def _result_keys(r: _Reader, doc: dict[str, Any]) -> dict[str, bytes]:
    entries = doc.get("gateways", [])
    if not isinstance(entries, list):
        raise r.fail("gateways", "an array of tables ([[gateways]])", entries)
    keys: dict[str, bytes] = {}
    for i, entry in enumerate(entries):
        at = f"gateways[{i}]"
        if not isinstance(entry, dict):
            raise r.fail(at, "a table", entry)
        r.known(entry, at, _SECTIONS["gateways"])
        gw = r.text(entry, at, "id")
        if gw in keys:
            raise ConfigError(f"{r.path}: {at}.id: gateway {gw!r} is listed twice")
        try:
            keys[gw] = parse_public_key(r.file(entry, at, "result_key"))
        except ValueError as exc:
            raise ConfigError(f"{r.path}: {at}.result_key: {exc}") from None
    return keys
