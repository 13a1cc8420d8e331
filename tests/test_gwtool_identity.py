"""``gwtool identity`` and ``gwtool lab-ca``: keys, CSRs and certificates that OpenSSL (the
independent judge, ``openssl verify``/``openssl x509``) accepts, and one-line refusals for
every bad input tried. The broker accepting them is tests/test_broker_acl.py."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_tools.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(capsys, "lab-ca", "init", str(tmp_path / "ca"))[0] == 0
    return tmp_path / "ca"


def test_identity_key_csr_and_lab_signed_certificates(
        tmp_path: Path, lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for role, name in (("gateway", "gw-0001"), ("operator", "op-1"), ("central", "central-1")):
        code, out, err = run(capsys, "identity", role, name, "--out", str(tmp_path / "id"))
        assert code == 0, err
        key = tmp_path / "id" / f"{name}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        cn = name if role == "gateway" else f"{role}/{name}"
        assert f"CN='{cn}'" in out
        code, out, err = run(capsys, "lab-ca", "sign", str(lab), str(tmp_path / "id" / f"{name}.csr"))
        assert code == 0, err
        crt = tmp_path / "id" / f"{name}.crt"
        assert openssl("verify", "-CAfile", str(lab / "ca.crt"), str(crt)).strip().endswith("OK")
        text = openssl("x509", "-in", str(crt), "-noout", "-subject", "-ext", "extendedKeyUsage")
        assert f"CN = {cn}" in text and "TLS Web Client Authentication" in text
        # The key in the file is the certificate's key (what mosquitto and paho check).
        assert openssl("pkey", "-in", str(key), "-pubout") == \
            openssl("x509", "-in", str(crt), "-noout", "-pubkey")
    ca_text = openssl("x509", "-in", str(lab / "ca.crt"), "-noout", "-text")
    assert re.search(r"CA:TRUE, pathlen:0", ca_text) and "not production" in ca_text


def test_broker_certificate_names_its_hosts(
        tmp_path: Path, lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "identity", "broker", "mqtt1", "--out", str(tmp_path))[0] == 0
    code, _, err = run(capsys, "lab-ca", "sign", str(lab), str(tmp_path / "mqtt1.csr"),
                       "--server-name", "127.0.0.1", "--server-name", "mqtt.example.net")
    assert code == 0, err
    text = openssl("x509", "-in", str(tmp_path / "mqtt1.crt"), "-noout", "-ext",
                   "subjectAltName,extendedKeyUsage")
    assert "IP Address:127.0.0.1" in text and "DNS:mqtt.example.net" in text
    assert "TLS Web Server Authentication" in text


def _foreign_csr(path: Path, cn: str, *, tamper: bool = False) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    if tamper:
        der[der.index(cn.encode())] ^= 0x01  # one bit of the signed subject
    path.write_bytes(x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM))
    return path


def test_every_bad_input_is_one_line(tmp_path: Path, lab: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "identity", "gateway", "gw-1", "--out", str(tmp_path))[0] == 0
    assert run(capsys, "identity", "broker", "b", "--out", str(tmp_path))[0] == 0
    other = tmp_path / "other"
    assert run(capsys, "lab-ca", "init", str(other))[0] == 0
    (other / "ca.key").write_bytes((lab / "ca.key").read_bytes())  # key of another CA
    (tmp_path / "empty").mkdir()
    cases = {
        "slash in a name": (("identity", "operator", "op/1", "--out", str(tmp_path)),
                            "op/1"),
        "name too long": (("identity", "gateway", "g" * 65, "--out", str(tmp_path)),
                          "at most 64"),
        "existing key": (("identity", "gateway", "gw-1", "--out", str(tmp_path)),
                         "--force"),
        "no CA there": (("lab-ca", "sign", str(tmp_path / "empty"), str(tmp_path / "gw-1.csr")),
                        "cannot read lab CA key"),
        "CA key of another CA": (("lab-ca", "sign", str(other), str(tmp_path / "gw-1.csr")),
                                 "does not belong"),
        "a key is no CSR": (("lab-ca", "sign", str(lab), str(tmp_path / "gw-1.key")),
                            "not a PEM certificate signing request"),
        "forged CSR": (("lab-ca", "sign", str(lab),
                        str(_foreign_csr(tmp_path / "forged.csr", "gw-2", tamper=True))),
                       "signature does not verify"),
        "CN not from gwtool": (("lab-ca", "sign", str(lab),
                                str(_foreign_csr(tmp_path / "odd.csr", "gw 2 #"))),
                               "not an identity name"),
        "unknown role prefix": (("lab-ca", "sign", str(lab),
                                 str(_foreign_csr(tmp_path / "role.csr", "admin/root"))),
                                "not an identity name"),
        "broker without host": (("lab-ca", "sign", str(lab), str(tmp_path / "b.csr")),
                                "--server-name"),
        "host on a gateway": (("lab-ca", "sign", str(lab), str(tmp_path / "gw-1.csr"),
                               "--server-name", "x"), "for broker certificates"),
    }
    for label, (args, hint) in cases.items():
        code, _, err = run(capsys, *args)
        assert code == 1, label
        assert len(err.strip().splitlines()) == 1 and hint in err, (label, err)
    with pytest.raises(SystemExit) as exc:  # argparse's usage error, exit 2
        run(capsys, "lab-ca", "init", str(tmp_path / "x"), "--days", "0")
    assert exc.value.code == 2 and "number of days" in capsys.readouterr().err


def test_send_command_tls_options_are_checked(tmp_path: Path, lab: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    signed = tmp_path / "cmd.cose"
    assert run(capsys, "keygen", "--out", str(tmp_path / "op"))[0] == 0
    assert run(capsys, "sign-command", "--key", str(tmp_path / "op.key"), "--kid", "op-1",
               "--aud", "gw-1", "--action", "trip", "--targets", "m-1", "--ctr", "1",
               "--out", str(signed))[0] == 0
    base = ("send-command", str(signed), "--gateway", "gw-1", "--timeout", "2")
    cases = {
        "cert without key": ((*base, "--cafile", str(lab / "ca.crt"), "--cert", "c"),
                             "--cert and --key must be given together"),
        "cert without cafile": ((*base, "--cert", "c", "--key", "k"), "need --cafile"),
        "missing files": ((*base, "--cafile", str(lab / "ca.crt"), "--cert",
                           str(tmp_path / "nope.crt"), "--key", str(tmp_path / "nope.key")),
                          "cannot load TLS files"),
        "key of another cert": ((*base, "--cafile", str(lab / "ca.crt"), "--cert",
                                 str(lab / "ca.crt"), "--key", str(tmp_path / "x.key")),
                                "cannot load TLS files"),
    }
    (tmp_path / "x.key").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    for label, (args, hint) in cases.items():
        code, _, err = run(capsys, *args)
        assert code == 1, label
        assert len(err.strip().splitlines()) == 1 and hint in err, (label, err)
