"""The registration proof: a trusted certificate, its key's signature, this relay, this nonce."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from jetstream.errors import PermissionDenied, Unauthenticated
from jetstream.relay import proof
from jetstream.tls import TlsIdentity, load_tls_identity

RELAY = os.urandom(32)
NONCE = os.urandom(32)


def identity(directory) -> TlsIdentity:
    directory.mkdir(exist_ok=True)
    return load_tls_identity(directory, None, None)  # EC P-256, as every server makes


def rsa_identity() -> TlsIdentity:
    """An operator's certificate (--api-tls-cert) with an RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "files.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return TlsIdentity(cert.public_bytes(serialization.Encoding.PEM),
                       key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_trusted_server_proves_itself(tmp_path, kind):
    server = identity(tmp_path) if kind == "ec" else rsa_identity()
    signature = proof.sign(server.key_pem, RELAY, NONCE)
    trusted = frozenset({server.fingerprint})
    assert proof.verify(server.certificate_pem, signature, RELAY, NONCE, trusted) == \
        server.fingerprint


def test_an_untrusted_certificate_is_refused_with_its_fingerprint(tmp_path):
    server = identity(tmp_path)
    signature = proof.sign(server.key_pem, RELAY, NONCE)
    with pytest.raises(PermissionDenied,
                       match=f"SHA256:{server.fingerprint.hex()}; add it with --trust-server"):
        proof.verify(server.certificate_pem, signature, RELAY, NONCE, frozenset({b"x" * 32}))


@pytest.mark.parametrize("what", ["nonce", "relay", "key"])
def test_a_signature_is_good_for_one_nonce_one_relay_one_key(tmp_path, what):
    server, other = identity(tmp_path / "server"), identity(tmp_path / "other")
    signature = proof.sign(other.key_pem if what == "key" else server.key_pem,
                           os.urandom(32) if what == "relay" else RELAY,
                           os.urandom(32) if what == "nonce" else NONCE)
    with pytest.raises(Unauthenticated, match="does not match"):
        proof.verify(server.certificate_pem, signature, RELAY, NONCE,
                     frozenset({server.fingerprint}))


def test_garbage_instead_of_a_certificate():
    with pytest.raises(Unauthenticated, match="not valid PEM"):
        proof.verify(b"not a certificate", b"", RELAY, NONCE, frozenset())
