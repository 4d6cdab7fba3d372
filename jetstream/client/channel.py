"""Open a gRPC channel to a jetstream API, pinning its certificate like ssh pins host keys.

A server's certificate is usually self-signed, so trust comes from its fingerprint: the
first contact records it, later contacts must present the same one. The certificate is
fetched with a plain TLS handshake, compared, and then used as the only trusted root.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from grpc import aio

from jetstream.errors import PermissionDenied, Unavailable
from jetstream.tls import certificate_fingerprint


class FingerprintMismatch(PermissionDenied):
    """The server presented a different certificate than the one pinned for it."""

    def __init__(self, message: str, *, pinned: bytes = b"", presented: bytes = b"") -> None:
        super().__init__(message)
        self.pinned = pinned
        self.presented = presented


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SecureTarget:
    credentials: grpc.ChannelCredentials
    options: tuple[tuple[str, str], ...]
    fingerprint: bytes


def fetch_certificate(endpoint: Endpoint, timeout: float = 5.0) -> bytes:
    """The PEM certificate the server presents, without verifying it (that is pinning's job)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise Unavailable(f"cannot reach a TLS API at {endpoint.target}: {exc}") from None
    if der is None:
        raise Unavailable(f"{endpoint.target} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


def secure_target(endpoint: Endpoint, pinned: bytes | None = None) -> SecureTarget:
    """Credentials that trust exactly the certificate the server has now (checked vs `pinned`)."""
    pem = fetch_certificate(endpoint)
    fingerprint = certificate_fingerprint(pem)
    if pinned is not None and fingerprint != pinned:
        raise FingerprintMismatch(
            f"the API certificate of {endpoint.target} changed: pinned SHA256:{pinned.hex()}, "
            f"got SHA256:{fingerprint.hex()}; if the server was reinstalled, remove the pin",
            pinned=pinned, presented=fingerprint,
        )
    options: tuple[tuple[str, str], ...] = ()
    name = _certificate_dns_name(pem)
    if name is not None:
        options = (("grpc.ssl_target_name_override", name),)
    return SecureTarget(grpc.ssl_channel_credentials(root_certificates=pem), options, fingerprint)


async def open_aio_channel(
    endpoint: Endpoint, *, plaintext: bool = False, pinned: bytes | None = None,
    options: tuple[tuple[str, Any], ...] = (),
) -> tuple[aio.Channel, bytes | None]:
    """An asyncio channel and the fingerprint it trusts (None for plaintext); `options`
    are extra gRPC channel arguments (keepalive for long-lived calls).

    The certificate is fetched on a worker thread; the channel is made on the loop's thread,
    which grpc.aio requires.
    """
    if plaintext:
        return aio.insecure_channel(endpoint.target, options=options), None
    target = await asyncio.to_thread(secure_target, endpoint, pinned)
    channel = aio.secure_channel(endpoint.target, target.credentials,
                                 options=target.options + options)
    return channel, target.fingerprint


def open_channel(
    endpoint: Endpoint, *, plaintext: bool = False, pinned: bytes | None = None
) -> tuple[grpc.Channel, bytes | None]:
    """The blocking twin of `open_aio_channel`, for command-line tools."""
    if plaintext:
        return grpc.insecure_channel(endpoint.target), None
    target = secure_target(endpoint, pinned)
    channel = grpc.secure_channel(endpoint.target, target.credentials, options=target.options)
    return channel, target.fingerprint


def open_unix_channel(path: str) -> grpc.Channel:
    """A channel to a server's local Unix socket (`--api-socket`): no TLS, no password; the
    server knows the caller from the kernel's peer credentials."""
    return grpc.insecure_channel(f"unix:{path}")


def _certificate_dns_name(pem: bytes) -> str | None:
    """A name the certificate is valid for, to verify against instead of the dialled host."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return None
    names = san.value.get_values_for_type(x509.DNSName)
    return names[0] if names else None
