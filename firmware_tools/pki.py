"""X.509 identities for the MQTT broker: keys, CSRs, and a lab CA that signs them for rigs.

The broker authenticates each client by its TLS certificate and takes the certificate's common
name as the MQTT user name (mosquitto ``use_identity_as_username``); the ACL then grants topics
by that name (``configs/mosquitto/``, docs/security.md). So the common name *is* the identity:

* a gateway's CN is its gateway id, the ``G`` of ``P/G/...`` (the ACL's ``%u`` patterns);
* an operator's CN is ``operator/<name>``, the central consumer's ``central/<name>``, the
  broker's ``broker/<name>``. The ``/`` is deliberate: gateway ids never contain one, so when a
  gateway pattern such as ``P/%u/reads/+`` is expanded for a non-gateway identity it yields a
  topic with an extra level (``P/operator/op-1/reads/+``) that no consumer's ``P/+/...``
  filter matches and no gateway id can name. Patterns apply to every user in mosquitto; this
  keeps them harmless for the identities that are not gateways.

Keys are EC P-256 (ECDSA): mosquitto's OpenSSL, Python's ``ssl`` (paho) and the secure elements
a gateway board may carry (ATECC608, TPM 2.0) all support it. OpenSSL would take Ed25519 too,
but those secure elements do not, and a key that can move into one later is worth having.

The lab CA (:func:`new_lab_ca`, :func:`sign_csr`) is for test rigs and labs only: its key lies
unencrypted in a file, it keeps no record of what it issued and it cannot revoke. Production
PKI (an offline root, an issuing CA, CRL or OCSP) is the operator's own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config.ids import ID_PATTERN, IDENT

IdentityRole = Literal["gateway", "operator", "central", "broker"]
ROLES: Final[tuple[IdentityRole, ...]] = ("gateway", "operator", "central", "broker")
#: Every identity name is shaped like a gateway id of the daemon's config: one MQTT topic
#: segment without wildcards, at most 64 characters.
NAME_PATTERN: Final = re.compile(ID_PATTERN)
NAME_MAX: Final = 64 if IDENT.max_length is None else IDENT.max_length
LAB_CA_NAME: Final = "edge-gateway lab CA (rigs only, not production)"


class PkiError(ValueError):
    """A name, file or request the identity tools cannot use; the message says what to fix."""


def common_name(role: IdentityRole, name: str) -> str:
    """The certificate CN (and so the broker user name) of identity ``name`` in ``role``."""
    if not NAME_PATTERN.fullmatch(name) or len(name) > NAME_MAX:
        raise PkiError(
            f"{role} name {name!r}: use letters, digits, '.', '_' or '-' starting with a letter "
            "or digit, at most 64 characters (it becomes an MQTT topic segment)"
        )
    return name if role == "gateway" else f"{role}/{name}"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8: the daemon and mosquitto load it unattended at boot."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def build_csr(key: ec.EllipticCurvePrivateKey, cn: str) -> bytes:
    """A PEM certificate signing request for ``cn``, signed by ``key`` (proof of possession)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class LabCa:
    """The lab CA's key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def new_lab_ca(days: int, now: dt.datetime | None = None) -> LabCa:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LAB_CA_NAME)])
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return LabCa(key, cert)


def load_lab_ca(key_pem_bytes: bytes, cert_pem_bytes: bytes, where: str) -> LabCa:
    try:
        key = serialization.load_pem_private_key(key_pem_bytes, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem_bytes)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{where}: not a lab CA made by 'gwtool lab-ca init' ({exc})") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or \
            key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise PkiError(f"{where}: ca.key does not belong to ca.crt")
    return LabCa(key, cert)


def _role_of(cn: str) -> IdentityRole:
    prefix, sep, _ = cn.partition("/")
    for role in ROLES:
        if sep and prefix == role:
            return role
    return "gateway"


def sign_csr(ca: LabCa, csr_pem: bytes, *, days: int, server_names: tuple[str, ...] = (),
             now: dt.datetime | None = None) -> tuple[str, bytes]:
    """Check a CSR made by ``gwtool identity`` and issue its certificate: (CN, PEM).

    A ``broker/...`` CSR becomes a TLS server certificate for ``server_names`` (the host names
    and IP addresses clients connect to, which the TLS client checks); every other role becomes
    a client certificate. A CSR whose signature does not verify, or whose CN is not one of the
    shapes :func:`common_name` makes, is refused rather than signed as it stands.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate signing request ({exc})") from None
    try:
        valid = csr.is_signature_valid
    except InvalidSignature:
        valid = False
    if not valid:
        raise PkiError("the request's signature does not verify (damaged or forged CSR)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if len(cns) == 1 else ""
    role = _role_of(cn)
    name = cn.partition("/")[2] if role != "gateway" else cn
    try:
        expected = common_name(role, name)
    except PkiError:
        expected = ""
    if not cn or expected != cn:
        raise PkiError(f"request CN {cn!r} is not an identity name made by 'gwtool identity' "
                       "(a gateway id, or operator/, central/ or broker/ and a name)")
    if role == "broker" and not server_names:
        raise PkiError("a broker certificate needs --server-name (each host name or IP "
                       "address clients connect to)")
    if role != "broker" and server_names:
        raise PkiError(f"--server-name is for broker certificates, not {role} {cn!r}")
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = min(start + dt.timedelta(days=days), ca.certificate.not_valid_after_utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "broker" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    return cn, cert.public_bytes(serialization.Encoding.PEM)


def _general_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return x509.DNSName(text)
