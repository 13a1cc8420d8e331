"""``gwtool bundle build | sign | verify``: signed update bundles (docs/bundles.md).

* ``build --seq N --gateway ID [--gateway ID ...] [--config gateway.toml] [--profile P.toml ...]
  [--wheel W.whl] --out FILE`` writes an unsigned bundle: the manifest lists each file's name,
  kind, size and SHA-256.
* ``sign FILE --key ENGINEER.key --kid KID [--out FILE]`` signs its manifest (COSE_Sign1,
  Ed25519); the key must be one the gateways list with the ENGINEER role.
* ``verify FILE --pub KID=KEY [...] [--gateway ID] [--last-seq N]`` checks a bundle the way a
  gateway will (signature, audience, anti-rollback, digests) and prints its manifest as JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gateway.config.operator_keys import KeyFormatError, parse_ed25519_public_key
from protocols.bundle import (
    MAX_BUNDLE_BYTES,
    BundleError,
    PayloadKind,
    build_bundle,
    decode_bundle,
    sign_bundle,
    verify_bundle,
)
from protocols.commands import parse_private_key

from .cli import print_json
from .errors import ToolError


def _read(path: str, what: str) -> bytes:
    try:
        file = Path(path)
        if file.stat().st_size > MAX_BUNDLE_BYTES:
            raise ToolError(f"{path}: larger than a bundle may be ({MAX_BUNDLE_BYTES} bytes)")
        return file.read_bytes()
    except OSError as exc:
        raise ToolError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ToolError(f"{path}: cannot write it ({exc.strerror})") from None


def cmd_build(args: argparse.Namespace) -> int:
    payloads: list[tuple[str, PayloadKind, bytes]] = []
    if args.config:
        payloads.append((Path(args.config).name, "config", _read(args.config, "config")))
    for profile in args.profile or ():
        payloads.append((Path(profile).name, "profile", _read(profile, "profile")))
    if args.wheel:
        payloads.append((Path(args.wheel).name, "wheel", _read(args.wheel, "wheel")))
    if not payloads:
        raise ToolError("a bundle needs --config, --profile or --wheel")
    try:
        bundle = build_bundle(args.seq, args.gateway, time.time_ns() // 1_000_000, payloads)
    except BundleError as exc:
        raise ToolError(exc.reason) from None
    _write(args.out, bundle.to_cbor())
    print(f"{args.out}: seq {args.seq}, {len(payloads)} payload(s), unsigned; sign it with "
          "`gwtool bundle sign`")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        bundle = decode_bundle(_read(args.bundle, "bundle"))
        key = parse_private_key(_read(args.key, "key"), args.key)
    except BundleError as exc:
        raise ToolError(f"{args.bundle}: {exc.reason}") from None
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    out = args.out or args.bundle
    _write(out, sign_bundle(bundle, key, args.kid).to_cbor())
    print(f"{out}: seq {bundle.manifest.seq} signed by {args.kid}")
    return 0


def _public_keys(specs: list[str]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for spec in specs:
        kid, sep, value = spec.partition("=")
        if not sep or not kid or not value:
            raise ToolError(f"--pub {spec!r}: expected KID=KEY (64 hex digits or a key file)")
        path = Path(value)
        data = _read(value, "public key") if path.is_file() else value.encode()
        try:
            keys[kid] = parse_ed25519_public_key(data)
        except KeyFormatError as exc:
            raise ToolError(f"--pub {kid}: {exc}") from None
    return keys


def cmd_verify(args: argparse.Namespace) -> int:
    data = _read(args.bundle, "bundle")
    try:
        bundle, kid = verify_bundle(data, keys=_public_keys(args.pub), gateway_id=args.gateway,
                                    last_seq=args.last_seq)
    except BundleError as exc:
        raise ToolError(f"{args.bundle}: refused ({exc.code}): {exc.reason}") from None
    m = bundle.manifest
    summary: dict[str, Any] = {
        "bundle": args.bundle, "ok": True, "signed_by": kid, "seq": m.seq,
        "gateways": list(m.gateways), "created_ms": m.created_ms, "id": bundle.digest.hex(),
        "payloads": [{"name": p.name, "kind": p.kind, "size": p.size, "sha256": p.sha256.hex()}
                     for p in m.payloads]}
    print_json(summary)
    return 0


def register(sub: Any) -> None:
    bundle = sub.add_parser("bundle", help="signed update bundles (config, profiles, wheel)")
    bsub = bundle.add_subparsers(dest="bundle_command", required=True)
    p = bsub.add_parser("build", help="build an unsigned bundle")
    p.add_argument("--seq", type=int, required=True,
                   help="sequence number, above every bundle the gateways applied before")
    p.add_argument("--gateway", action="append", required=True, help="gateway id (repeat)")
    p.add_argument("--config", help="the gateway.toml to install")
    p.add_argument("--profile", action="append", help="a profile .toml to install (repeat)")
    p.add_argument("--wheel", help="a software wheel, recorded for the installer")
    p.add_argument("--out", required=True, help="bundle file to write")
    p.set_defaults(func=cmd_build)
    p = bsub.add_parser("sign", help="sign a bundle's manifest with an ENGINEER key")
    p.add_argument("bundle", help="bundle file")
    p.add_argument("--key", required=True, help="Ed25519 private key (PEM, from gwtool keygen)")
    p.add_argument("--kid", required=True, help="the key's kid in the gateways' [[operators]]")
    p.add_argument("--out", help="signed bundle (default: replace the input)")
    p.set_defaults(func=cmd_sign)
    p = bsub.add_parser("verify", help="check a bundle as a gateway would")
    p.add_argument("bundle", help="bundle file")
    p.add_argument("--pub", action="append", required=True,
                   help="KID=KEY: a trusted ENGINEER public key (hex or file; repeat)")
    p.add_argument("--gateway", help="refuse unless the bundle is for this gateway id")
    p.add_argument("--last-seq", type=int, help="refuse unless seq is above this")
    p.set_defaults(func=cmd_verify)
