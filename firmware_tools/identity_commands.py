"""``gwtool identity`` and ``gwtool lab-ca``: the files behind a broker identity.

``identity`` runs where the key is to live (on the gateway, on the operator's laptop): the
private key never leaves that machine, only the CSR does. ``lab-ca`` is a rig's stand-in for a
real CA (see :mod:`firmware_tools.pki` for what it is not). The X.509 work is in
:mod:`firmware_tools.pki`; this module reads and writes files and reports one-line errors.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from .errors import ToolError
from .pki import (
    ROLES,
    LabCa,
    PkiError,
    build_csr,
    common_name,
    key_pem,
    load_lab_ca,
    new_key,
    new_lab_ca,
    sign_csr,
)


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 36500")
    return days


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    """Write ``data``; a private key is created with mode 0600, never readable in between."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600 if private else 0o644)
    except FileExistsError:
        raise ToolError(f"{path} exists; pass --force to replace it") from None
    except OSError as exc:
        raise ToolError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read {what} {path}: {exc.strerror}") from None


def _outdir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"cannot create directory {out}: {exc.strerror}") from None
    return out


def cmd_identity(args: argparse.Namespace) -> int:
    try:
        cn = common_name(args.role, args.name)
    except PkiError as exc:
        raise ToolError(str(exc)) from None
    out = _outdir(args.out)
    key = new_key()
    key_path, csr_path = out / f"{args.name}.key", out / f"{args.name}.csr"
    _write(key_path, key_pem(key), private=True, force=args.force)
    _write(csr_path, build_csr(key, cn), private=False, force=args.force)
    print(f"{key_path}: private key (P-256, keep it on this machine, mode 0600)")
    print(f"{csr_path}: request for CN={cn!r}; have your CA sign it (rigs: gwtool lab-ca sign)")
    return 0


def cmd_lab_ca_init(args: argparse.Namespace) -> int:
    out = _outdir(args.dir)
    ca = new_lab_ca(args.days)
    _write(out / "ca.key", key_pem(ca.key), private=True, force=args.force)
    _write(out / "ca.crt", ca.certificate.public_bytes(serialization.Encoding.PEM),
           private=False, force=args.force)
    print(f"{out / 'ca.crt'}: lab CA certificate (for rigs and labs, not production PKI); "
          f"give it to the broker (cafile) and to every client (tls.ca_file)")
    return 0


def cmd_lab_ca_sign(args: argparse.Namespace) -> int:
    ca_dir = Path(args.dir)
    ca = _load_ca(ca_dir)
    csr = _read(Path(args.csr), "request")
    try:
        cn, pem = sign_csr(ca, csr, days=args.days, server_names=tuple(args.server_name or ()))
    except PkiError as exc:
        raise ToolError(f"{args.csr}: {exc}") from None
    out = Path(args.out) if args.out else Path(args.csr).with_suffix(".crt")
    _write(out, pem, private=False, force=args.force)
    print(f"{out}: certificate for CN={cn!r}, signed by the lab CA in {ca_dir}")
    return 0


def _load_ca(ca_dir: Path) -> LabCa:
    key = _read(ca_dir / "ca.key", "lab CA key")
    cert = _read(ca_dir / "ca.crt", "lab CA certificate")
    try:
        return load_lab_ca(key, cert, str(ca_dir))
    except PkiError as exc:
        raise ToolError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "identity", help="make a broker identity: a P-256 private key and a CSR (CN from role)"
    )
    p.add_argument("role", choices=ROLES,
                   help="gateway: CN is the gateway id; operator, central, broker: CN ROLE/NAME")
    p.add_argument("name", help="gateway id, or the operator's, consumer's or broker's name")
    p.add_argument("--out", default=".", help="directory for NAME.key and NAME.csr (default .)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_identity)

    lab = sub.add_parser("lab-ca", help="a CA for test rigs and labs (not production PKI)")
    lsub = lab.add_subparsers(dest="lab_ca_command", required=True)
    p = lsub.add_parser("init", help="create DIR/ca.key and DIR/ca.crt")
    p.add_argument("dir")
    p.add_argument("--days", type=_days, default=365, help="validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="replace an existing lab CA")
    p.set_defaults(func=cmd_lab_ca_init)
    p = lsub.add_parser("sign", help="sign a CSR made by 'gwtool identity'")
    p.add_argument("dir", help="the lab CA directory (from lab-ca init)")
    p.add_argument("csr")
    p.add_argument("--out", help="certificate file (default: the CSR's name with .crt)")
    p.add_argument("--days", type=_days, default=90, help="validity in days (default 90)")
    p.add_argument("--server-name", action="append", metavar="HOST",
                   help="broker certificates: a host name or IP clients connect to (repeat)")
    p.add_argument("--force", action="store_true", help="replace an existing certificate")
    p.set_defaults(func=cmd_lab_ca_sign)
