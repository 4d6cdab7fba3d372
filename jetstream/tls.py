"""The API's TLS certificate: the operator's, or a self-signed one made on first start.

Clients identify a server by the SHA-256 fingerprint of its certificate (pinned on first
use, like ssh's known_hosts), so a self-signed certificate is as safe as a CA-issued one
once pinned, and needs no set-up.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jetstream.errors import ConfigError

CERT_NAME = "api-tls.crt"
KEY_NAME = "api-tls.key"
#: The name every self-signed jetstream certificate carries; clients that pin the
#: fingerprint verify against it instead of the host name they dialled.
SELF_SIGNED_NAME = "jetstream"
VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class TlsIdentity:
    certificate_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def fingerprint(self) -> bytes:
        return certificate_fingerprint(self.certificate_pem)

    @property
    def days_left(self) -> int:
        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        return max(0, remaining.days)


def certificate_fingerprint(certificate_pem: bytes) -> bytes:
    """SHA-256 over the DER encoding, as browsers and `openssl x509 -fingerprint` show it."""
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).digest()


def load_tls_identity(state_dir: Path, cert: Path | None, key: Path | None) -> TlsIdentity:
    """The configured pair, else the one in the state directory, made if absent."""
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise ConfigError("--api-tls-cert and --api-tls-key must be given together")
        return _read_pair(cert, key)
    cert, key = state_dir / CERT_NAME, state_dir / KEY_NAME
    if not (cert.exists() and key.exists()):
        _write_self_signed(cert, key)
    return _read_pair(cert, key)


def _read_pair(cert: Path, key: Path) -> TlsIdentity:
    try:
        identity = TlsIdentity(cert.read_bytes(), key.read_bytes())
    except OSError as exc:
        flag = "--api-tls-key" if exc.filename == str(key) else "--api-tls-cert"
        raise ConfigError(f"{flag} {exc.filename}: {exc.strerror}") from None
    try:
        x509.load_pem_x509_certificate(identity.certificate_pem)
        serialization.load_pem_private_key(identity.key_pem, password=None)
    except ValueError as exc:
        message = (f"--api-tls-cert {cert} or --api-tls-key {key}: not a valid PEM "
                   f"certificate and key ({exc})")
        raise ConfigError(message) from None
    return identity


def _write_self_signed(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    names: list[x509.GeneralName] = [
        x509.DNSName(SELF_SIGNED_NAME),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if host and host != "localhost":
        names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SELF_SIGNED_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first, then certificate: a crash in between leaves no certificate, so the next
    # start makes a fresh pair instead of pairing a new certificate with an old key.
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
