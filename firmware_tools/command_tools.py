"""``gwtool keygen | sign-command | send-command | audit verify``: operator tooling for signed
commands (DESIGN.md §6, docs/commands.md).

* ``keygen --out NAME`` writes ``NAME.key`` (Ed25519 private key, PKCS#8 PEM, mode 0600) and
  ``NAME.pub`` (the raw 32-byte public key as 64 hex digits — what ``[[operators]] public_key``
  and ``--gateway-pub`` take).
* ``sign-command`` builds a command payload, checks it by the gateway's own parsing rules and
  signs it: one ``--key`` gives a COSE_Sign1, two give a COSE_Sign with two signatures (the
  two-person rule for mass trips). The counter is the operator's to keep: each key's ``--ctr``
  must be higher than the last one the gateway accepted from it.
* ``send-command`` publishes a signed command on ``P/G/cmd`` (QoS 1) and prints the gateway's
  results for that command id from ``P/G/cmd/result`` as JSON lines, checking the gateway's
  signature when ``--gateway-pub`` is given.
* ``audit verify DB`` checks the audit journal's hash chain; exit 1 names the first bad record.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gateway.config.operator_keys import KeyFormatError, parse_ed25519_public_key
from protocols import cose
from protocols.commands import (
    ACTIONS,
    AUDIT_APPLICATION_ID,
    CHAIN_COLUMNS,
    ROLES,
    AuditHeadMessage,
    ChainReport,
    EnvelopeError,
    ResultError,
    build_envelope,
    parse_envelope,
    parse_head,
    parse_private_key,
    raw_public_key,
    read_result_topic,
    sign_command,
    verify_chain,
)
from protocols.ed25519 import SigningKey
from protocols.topics import GatewayTopics

from .errors import ToolError

_TERMINAL = frozenset({"rejected", "executed", "failed"})


# --------------------------------------------------------------------------------------------
# keygen
# --------------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    base = Path(args.out)
    key_path = base.with_name(base.name + ".key")
    pub_path = base.with_name(base.name + ".pub")
    if not args.force:
        for path in (key_path, pub_path):
            if path.exists():
                raise ToolError(f"{path} exists; pick another --out or pass --force to replace it")
    key = SigningKey.generate()
    pem = key.to_pkcs8_pem()
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the first byte: never a moment where the key is world-readable.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if args.force else os.O_EXCL)
        fd = os.open(key_path, flags, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(key_path, 0o600)  # --force over an existing file keeps its old mode otherwise
        pub_path.write_text(raw_public_key(key).hex() + "\n")
    except OSError as exc:
        raise ToolError(f"cannot write the key pair: {exc}") from None
    print(
        json.dumps(
            {
                "private_key": str(key_path),
                "public_key_file": str(pub_path),
                "public_key": raw_public_key(key).hex(),
            },
            indent=2,
        )
    )
    return 0


# --------------------------------------------------------------------------------------------
# sign-command
# --------------------------------------------------------------------------------------------


def _targets(text: str) -> list[str] | dict[str, str]:
    text = text.strip()
    if text.startswith("group:"):
        group = text.removeprefix("group:").strip()
        if not group:
            raise ToolError("--targets group:ID needs a group id after 'group:'")
        return {"group": group}
    meters = [part.strip() for part in text.split(",") if part.strip()]
    if not meters:
        raise ToolError("--targets needs meter ids separated by commas, or group:ID")
    return meters


def _params(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolError(f"--params is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ToolError("--params must be a JSON object, e.g. '{\"limit_kw\": 120}'")
    return value


def _load_key(path: str) -> SigningKey:
    try:
        return parse_private_key(Path(path).read_bytes(), path)
    except FileNotFoundError:
        raise ToolError(f"key file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ToolError(str(exc)) from None


def cmd_sign_command(args: argparse.Namespace) -> int:
    keys = args.key
    kids = args.kid
    if len(keys) > 2:
        raise ToolError("at most two --key (the two-person rule needs two signers)")
    if len(kids) != len(keys):
        raise ToolError(f"give one --kid per --key ({len(keys)} keys, {len(kids)} kids)")
    if len(set(kids)) != len(kids):
        raise ToolError("the two signers need different --kid values")
    if args.ctr < 0:
        raise ToolError("--ctr must be 0 or more")
    if not 1 <= args.ttl <= 86400:
        raise ToolError("--ttl must be 1..86400 seconds (the gateway allows up to max_age_s)")
    command_id = None
    if args.id is not None:
        try:
            command_id = bytes.fromhex(args.id)
        except ValueError:
            raise ToolError("--id must be 32 hex digits") from None
    iat = args.iat if args.iat is not None else int(time.time())
    try:
        envelope = build_envelope(
            aud=args.aud,
            action=args.action,
            targets=_targets(args.targets),
            ctr=args.ctr,
            iat=iat,
            ttl_s=args.ttl,
            role=args.role,
            params=_params(args.params),
            command_id=command_id,
        )
    except EnvelopeError as exc:
        raise ToolError(f"command would be rejected as malformed: {exc}") from None
    private = [_load_key(path) for path in keys]
    message = sign_command(envelope, list(zip(private, kids, strict=True)))
    out = Path(args.out)
    try:
        out.write_bytes(message)
    except OSError as exc:
        raise ToolError(f"cannot write {out}: {exc}") from None
    print(
        json.dumps(
            {
                "file": str(out),
                "bytes": len(message),
                "format": "COSE_Sign1" if len(private) == 1 else "COSE_Sign",
                "id": envelope.id.hex(),
                "kids": kids,
                "aud": envelope.aud,
                "role": envelope.role,
                "action": envelope.action,
                "targets": envelope.targets_value(),
                "params": args.params and json.loads(args.params),
                "ctr": envelope.ctr,
                "iat": envelope.iat,
                "exp": envelope.exp,
            },
            indent=2,
        )
    )
    return 0


# --------------------------------------------------------------------------------------------
# send-command
# --------------------------------------------------------------------------------------------


def _command_id(message: bytes) -> bytes:
    try:
        return parse_envelope(cose.decode(message).payload).id
    except (cose.CoseDecodeError, EnvelopeError) as exc:
        raise ToolError(
            f"not a signed command (make one with gwtool sign-command): {exc}"
        ) from None


def _gateway_public_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return parse_ed25519_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ToolError(f"cannot read --gateway-pub {path}: {exc.strerror}") from None
    except KeyFormatError as exc:
        raise ToolError(f"--gateway-pub {path}: {exc}") from None


def _set_tls(client: Any, args: argparse.Namespace) -> None:
    """TLS when --cafile is given; --cert/--key add this operator's client certificate (the
    broker's ACL knows the operator by the certificate's common name)."""
    if (args.cert is None) != (args.key is None):
        raise ToolError("--cert and --key must be given together")
    if args.cafile is None:
        if args.cert is not None:
            raise ToolError("--cert/--key need --cafile (the CA that signed the broker)")
        return
    import ssl

    try:
        client.tls_set(ca_certs=args.cafile, certfile=args.cert, keyfile=args.key)
    except (OSError, ssl.SSLError) as exc:
        raise ToolError(
            f"cannot load TLS files (--cafile {args.cafile}, --cert {args.cert}, --key "
            f"{args.key}): {getattr(exc, 'strerror', None) or exc} — check the paths and that "
            "the key belongs to the certificate"
        ) from None


def cmd_send_command(args: argparse.Namespace) -> int:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    try:
        message = Path(args.file).read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read {args.file}: {exc.strerror}") from None
    command_id = _command_id(message)
    gateway_key = _gateway_public_key(args.gateway_pub)
    prefix = args.topic_prefix.rstrip("/")
    topics = GatewayTopics(prefix, args.gateway)
    cmd_topic, res_topic = topics.commands, topics.command_results

    protocol = paho.MQTTv5 if args.protocol == "5" else paho.MQTTv311
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"gwtool-{secrets.token_hex(4)}",
        protocol=protocol,
    )
    if args.username is not None:
        client.username_pw_set(args.username, args.password)
    _set_tls(client, args)
    connected = threading.Event()
    subscribed = threading.Event()
    published = threading.Event()
    connect_error: list[str] = []
    publish_refusal: list[str] = []
    inbox: queue.Queue[bytes] = queue.Queue()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            connect_error.append(str(reason))
        connected.set()

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        # Before CONNACK this is a refusal at TLS level: without a valid client certificate
        # TLS 1.3 lets the handshake finish and the broker then drops the connection.
        if not connected.is_set():
            connect_error.append(
                f"connection closed before CONNACK ({reason}) — a broker that requires client "
                "certificates does this when --cert/--key are missing or not signed by its CA")
            connected.set()

    def on_subscribe(c: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        subscribed.set()

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # MQTT 5 brokers say why they refused (e.g. the ACL: "Not authorized"); 3.1.1 cannot.
        if reason.is_failure:
            publish_refusal.append(str(reason))
        published.set()

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        if msg.topic == res_topic:
            inbox.put(bytes(msg.payload))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as exc:
        raise ToolError(f"cannot connect to the broker at {args.host}:{args.port}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(args.timeout) or connect_error:
            reason = connect_error[0] if connect_error else "no CONNACK"
            raise ToolError(f"broker {args.host}:{args.port} refused the connection: {reason}")
        # Subscribe first, so a fast gateway's result cannot arrive before we listen.
        client.subscribe(res_topic, qos=1)
        if not subscribed.wait(args.timeout):
            raise ToolError(f"broker did not confirm the subscription to {res_topic}")
        client.publish(cmd_topic, message, qos=1)
        if not published.wait(args.timeout):
            raise ToolError(f"broker did not acknowledge the command on {cmd_topic}")
        if publish_refusal:
            raise ToolError(f"broker refused the command on {cmd_topic}: {publish_refusal[0]} "
                            "— check that the broker's ACL lets this identity publish commands")
        return _await_results(inbox, command_id, gateway_key, args)
    finally:
        client.disconnect()
        client.loop_stop()


def _await_results(
    inbox: queue.Queue[bytes],
    command_id: bytes,
    gateway_key: bytes | None,
    args: argparse.Namespace,
) -> int:
    deadline = time.monotonic() + args.timeout
    last_status: str | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            data = inbox.get(timeout=remaining)
        except queue.Empty:
            break
        try:
            result = read_result_topic(data, gateway_key)
        except ResultError as exc:
            # A forged or broken result is reported and skipped; stopping here would let anyone
            # who can publish on the broker hide the gateway's real answer.
            print(f"gwtool: ignored a message on the result topic: {exc}", file=sys.stderr)
            continue
        if isinstance(result, AuditHeadMessage):
            continue  # the periodic chain head shares the topic; not an answer to this command
        if result.cmd != command_id:
            continue
        line = {
            "cmd": result.cmd.hex(),
            "status": result.status,
            "reason": result.reason,
            "signature": "verified" if result.signed_by is not None else "not checked",
            "gw": result.payload.get("gw"),
            "seq": result.payload.get("seq"),
            "ts": result.payload.get("ts"),
        }
        print(json.dumps(line), flush=True)
        last_status = result.status
        if result.status in _TERMINAL or (args.until == "accepted" and result.status == "accepted"):
            return 0 if result.status in ("accepted", "executed") else 1
    waited = f"{args.timeout:g} s"
    if last_status is None:
        raise ToolError(
            f"no result for command {command_id.hex()} within {waited}: is the gateway online "
            f"and subscribed to {args.topic_prefix}/{args.gateway}/cmd?"
        )
    raise ToolError(f"command {command_id.hex()} {last_status}, but no outcome within {waited}")


# --------------------------------------------------------------------------------------------
# audit verify
# --------------------------------------------------------------------------------------------


def verify_journal_file(path: Path, expected_head: tuple[int, bytes] | None = None) -> ChainReport:
    """Check the hash chain of the audit journal database at ``path``, opened read-only (an
    auditor's copy may be on read-only media, and checking must never change the evidence).

    The chain rules are :func:`protocols.commands.verify_chain`; this reads the rows. ToolError
    if ``path`` is not a readable audit journal.
    """
    if not path.is_file():
        raise ToolError(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ToolError(f"{path}: cannot open: {exc}") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != AUDIT_APPLICATION_ID:
            raise ToolError(f"{path} is not an audit journal (application_id {app_id:#x})")
        rows = conn.execute(f"SELECT {', '.join(CHAIN_COLUMNS)} FROM journal ORDER BY seq")
        return verify_chain(rows, expected_head)
    except sqlite3.Error as exc:
        raise ToolError(f"{path}: cannot read the journal: {exc}") from None
    finally:
        conn.close()


def cmd_audit_verify(args: argparse.Namespace) -> int:
    head = None
    if args.head is not None:
        try:
            head = parse_head(args.head)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
    report = verify_journal_file(Path(args.db), head)
    if report.problem is not None:
        raise ToolError(
            f"audit journal {args.db} is NOT intact: first bad record {report.problem.seq}: "
            f"{report.problem.what}"
        )
    shown = report.head.text() if report.head is not None else "empty"
    print(f"audit journal {args.db}: intact, {report.records} records, head {shown}")
    return 0


# --------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 key pair (NAME.key, NAME.pub)")
    p.add_argument("--out", required=True, help="file name stem: writes NAME.key and NAME.pub")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sign-command", help="build and sign a command (one or two signers)")
    p.add_argument(
        "--key", action="append", required=True, help="PEM private key; twice for two signers"
    )
    p.add_argument(
        "--kid", action="append", required=True, help="key id of each --key, in the same order"
    )
    p.add_argument("--aud", required=True, help="gateway id the command is for")
    p.add_argument("--action", required=True, choices=ACTIONS)
    p.add_argument("--targets", required=True, help="meter ids separated by commas, or group:ID")
    p.add_argument("--params", help='JSON object, e.g. \'{"limit_kw": 120, "rounds": 2}\'')
    p.add_argument(
        "--ctr", type=int, required=True, help="this key's counter, above the last one used"
    )
    p.add_argument(
        "--ttl", type=int, default=60, help="seconds until the command expires (default 60)"
    )
    p.add_argument("--role", default="OPERATOR", choices=ROLES)
    p.add_argument("--iat", type=int, help="issued-at, UTC seconds (default: now)")
    p.add_argument("--id", help="command id as 32 hex digits (default: random)")
    p.add_argument("--out", required=True, help="file to write the signed command to")
    p.set_defaults(func=cmd_sign_command)

    p = sub.add_parser("send-command", help="publish a signed command and print its results")
    p.add_argument("file", help="signed command (from sign-command)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--topic-prefix", default="mtr/v1")
    p.add_argument("--gateway", required=True, help="gateway id (the G in P/G/cmd)")
    p.add_argument("--gateway-pub", help="gateway public key (hex, raw or PEM) to verify results")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p.add_argument(
        "--until",
        choices=("outcome", "accepted"),
        default="outcome",
        help="stop at the first outcome (executed/failed, default) or already at 'accepted'",
    )
    p.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--cafile", help="CA bundle: connect with TLS")
    p.add_argument("--cert", help="client certificate (PEM) for brokers that require one")
    p.add_argument("--key", help="private key (PEM) of --cert")
    p.set_defaults(func=cmd_send_command)

    audit = sub.add_parser("audit", help="audit journal tools")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    p = asub.add_parser(
        "verify", help="check the journal's hash chain; exit 1 at the first bad record"
    )
    p.add_argument("db", help="the audit journal file (data_dir/audit.db)")
    p.add_argument("--head", help="a published chain head SEQ:HASH the journal must still contain")
    p.set_defaults(func=cmd_audit_verify)
