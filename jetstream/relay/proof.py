"""Proof that a server holds the key of the certificate the relay was told to trust.

The relay pins servers by the SHA-256 fingerprint of their API certificate, like every
other jetstream pin, so operators paste one line instead of copying certificates around.
A fingerprint alone proves nothing: the server signs a fresh challenge together with the
relay's own fingerprint, so a signature is good for one stream at one relay. The TLS link
it travels on is already pinned to the relay by the server, so nothing can sit between.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from jetstream.errors import PermissionDenied, Unauthenticated
from jetstream.tls import certificate_fingerprint

CONTEXT = b"jetstream relay register v1\0"
NONCE_BYTES = 32


def signed_message(relay_fingerprint: bytes, nonce: bytes) -> bytes:
    return CONTEXT + relay_fingerprint + nonce


def sign(key_pem: bytes, relay_fingerprint: bytes, nonce: bytes) -> bytes:
    """The server's signature over the challenge, with its API TLS key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    message = signed_message(relay_fingerprint, nonce)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    raise Unauthenticated(f"cannot sign with a {type(key).__name__} key; use EC, RSA or "
                          "Ed25519 for the API certificate")


def verify(certificate_pem: bytes, signature: bytes, relay_fingerprint: bytes, nonce: bytes,
           trusted: frozenset[bytes]) -> bytes:
    """The fingerprint of a trusted certificate whose key made `signature`; else raises."""
    try:
        fingerprint = certificate_fingerprint(certificate_pem)
        public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    except ValueError:
        raise Unauthenticated("the certificate in Register is not valid PEM") from None
    if fingerprint not in trusted:
        raise PermissionDenied(f"this relay does not serve the server with certificate "
                               f"SHA256:{fingerprint.hex()}; add it with --trust-server")
    message = signed_message(relay_fingerprint, nonce)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise Unauthenticated("the Register signature does not match the certificate") from None
    return fingerprint
