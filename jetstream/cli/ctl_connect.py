"""Which server a command talks to, and an authenticated, pinned connection to it.

A server is named by its address, `HOST[:PORT]` (port 8886 by default, IPv6 in brackets),
or `local`: the server on this machine, reached over its Unix socket (`--socket`, default
/run/jetstream/api.sock) where the kernel vouches for the user, so no password is needed.

TLS servers are pinned on first use: the SHA-256 of the certificate seen the first time is
written to known_hosts, and a later connection that sees another certificate is refused
(exit 7) before anything is sent.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from jetstream.cli.ctl_config import (
    LOCAL,
    ConfigFileError,
    Credentials,
    KnownHosts,
    ServerLogin,
    config_dir,
    format_fingerprint,
    load_credentials,
)
from jetstream.cli.output import (
    EXIT_AUTH,
    EXIT_FAILURE,
    EXIT_IDENTITY,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CtlError,
    Output,
    rpc_failure,
)
from jetstream.client.channel import (
    Endpoint,
    FingerprintMismatch,
    open_channel,
    open_unix_channel,
)
from jetstream.errors import JetstreamError
from jetstream.v1 import (
    auth_pb2_grpc,
    destinations_pb2_grpc,
    files_pb2_grpc,
    manifests_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    transfers_pb2_grpc,
    triggers_pb2_grpc,
    watches_pb2_grpc,
)

DEFAULT_PORT = 8886
DEFAULT_SOCKET = "/run/jetstream/api.sock"
CALL_TIMEOUT = 30.0
T = TypeVar("T")


def parse_address(text: str) -> Endpoint:
    """`host`, `host:port`, `[v6]`, `[v6]:port` -> Endpoint; ValueError if malformed."""
    value = text.strip()
    if not value:
        raise ValueError("empty server address")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not HOST[:PORT]")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    elif ":" in value:
        host, port_text = value, ""  # a bare IPv6 address
    else:
        host, port_text = value, ""
    if not host:
        raise ValueError(f"{text!r} has no host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        return Endpoint(host, int(port_text))
    return Endpoint(host, DEFAULT_PORT)


def login_name() -> str:
    """The user name to log in as by default: $JETSTREAM_API_USER, else this process's
    account (from the password database: root shells often have no $USER)."""
    return os.environ.get("JETSTREAM_API_USER") or pwd.getpwuid(os.getuid()).pw_name


def canonical(name: str) -> str:
    """The key a server is stored under: `local`, or `host:port` (`[v6]:port`)."""
    if name == LOCAL:
        return LOCAL
    return parse_address(name).target


@dataclass
class Settings:
    """What the global options said; shared by every command of one run."""

    server: str = ""
    socket: str = ""
    output: Output = field(default_factory=Output)
    config: Path = field(default_factory=config_dir)

    @property
    def socket_path(self) -> str:
        return self.socket or os.environ.get("JETSTREAM_API_SOCKET") or DEFAULT_SOCKET

    def credentials(self) -> Credentials:
        try:
            return load_credentials(self.config)
        except ConfigFileError as exc:
            raise CtlError(str(exc), EXIT_FAILURE) from None

    def known_hosts(self) -> KnownHosts:
        return KnownHosts(self.config)

    def selected(self) -> str:
        """--server, else $JETSTREAM_SERVER, else the server last logged in to, else local."""
        name = self.server or os.environ.get("JETSTREAM_SERVER", "")
        if not name:
            name = self.credentials().current or LOCAL
        try:
            return canonical(name)
        except ValueError as exc:
            raise CtlError(f"--server: {exc}", EXIT_USAGE) from None


class Connection:
    """A channel to one server plus the metadata that authenticates calls on it."""

    def __init__(self, name: str, channel: grpc.Channel, token: str | None,
                 fingerprint: bytes | None = None, username: str = "") -> None:
        self.name = name
        self.channel = channel
        self.token = token
        self.fingerprint = fingerprint
        self.username = username
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.server = server_pb2_grpc.ServerServiceStub(channel)
        self.destinations = destinations_pb2_grpc.DestinationServiceStub(channel)
        self.manifests = manifests_pb2_grpc.ManifestServiceStub(channel)
        self.transfers = transfers_pb2_grpc.TransferServiceStub(channel)
        self.files = files_pb2_grpc.FileServiceStub(channel)
        self.triggers = triggers_pb2_grpc.TriggerServiceStub(channel)
        self.watches = watches_pb2_grpc.WatchServiceStub(channel)

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def call(self, rpc: Callable[..., T], request: Any, *, timeout: float = CALL_TIMEOUT,
             authenticated: bool = True) -> T:
        """A unary call with credentials and a deadline; failures become a CtlError."""
        try:
            return rpc(request, metadata=self.metadata if authenticated else (),
                       timeout=timeout)
        except grpc.RpcError as exc:
            error = rpc_failure(exc, self.name)
            if error.status == "UNAUTHENTICATED" and self.token and authenticated:
                error = CtlError(f"{error}; log in again: jetstreamctl login {self.name}",
                                 EXIT_AUTH, error.status)
            raise error from None

    def stream(self, rpc: Callable[..., Any], request: Any) -> Any:
        """A server stream with credentials and no deadline (watching takes as long as it takes)."""
        return rpc(request, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 _tb: object) -> None:
        # After Ctrl-C grpc's own state may be mid-call: closing could wait forever, and the
        # process is about to end anyway.
        interrupted = kind is KeyboardInterrupt or (
            isinstance(error, CtlError) and error.exit_code == EXIT_INTERRUPTED)
        if not interrupted:
            self.close()


def open_local(settings: Settings) -> Connection:
    """The local server over its Unix socket: the caller is who the kernel says."""
    path = settings.socket_path
    if not Path(path).exists():
        raise CtlError(
            f"no local jetstream server: {path} does not exist (is the server running? "
            "use --socket PATH, or --server HOST after jetstreamctl login HOST)",
            EXIT_UNAVAILABLE, "UNAVAILABLE")
    return Connection(LOCAL, open_unix_channel(path), None)


def open_local_as(settings: Settings, name: str) -> Connection | None:
    """This machine's own server, called `name` but reached over its Unix socket (no
    password: the kernel vouches for the user), if the TLS certificate `name` presents is
    the one the local server holds; else None. Same certificate, same private key: the
    same server, so an API token made over the socket is only ever handed to it."""
    path = settings.socket_path
    if not Path(path).exists():
        return None
    try:
        channel, fingerprint = open_pinned(settings, name)
    except CtlError:
        return None
    channel.close()
    local = open_unix_channel(path)
    try:
        info = server_pb2_grpc.ServerServiceStub(local).GetServerInfo(
            server_pb2.GetServerInfoRequest(), timeout=CALL_TIMEOUT).server_info
    except grpc.RpcError:
        local.close()
        return None
    if fingerprint is None or info.tls_certificate_sha256 != fingerprint:
        local.close()
        return None
    return Connection(name, local, None, fingerprint)


def open_pinned(settings: Settings, name: str, *, plaintext: bool = False,
                expect: bytes | None = None) -> tuple[grpc.Channel, bytes | None]:
    """A TLS channel to `name` whose certificate must match known_hosts (or `expect`).

    On first contact the fingerprint is recorded (and announced on stderr)."""
    endpoint = parse_address(name)
    known = settings.known_hosts()
    pinned = known.get(name)
    if expect is not None and pinned is not None and expect != pinned:
        raise CtlError(f"--fingerprint {format_fingerprint(expect)} differs from the one pinned "
                       f"for {name} in {known.path}", EXIT_IDENTITY, "PERMISSION_DENIED")
    try:
        channel, fingerprint = open_channel(endpoint, plaintext=plaintext,
                                            pinned=pinned or expect)
    except FingerprintMismatch as exc:
        raise identity_changed(name, exc, known.path) from None
    except JetstreamError as exc:
        raise CtlError(f"{name}: {exc}", EXIT_UNAVAILABLE, "UNAVAILABLE") from None
    if fingerprint is not None and pinned is None:
        known.set(name, fingerprint)
        settings.output.note(f"pinned the TLS certificate of {name}: "
                             f"{format_fingerprint(fingerprint)} (in {known.path})")
    return channel, fingerprint


def identity_changed(name: str, exc: FingerprintMismatch, known_hosts: Path) -> CtlError:
    return CtlError(
        f"the TLS certificate of {name} changed: pinned {format_fingerprint(exc.pinned)}, "
        f"the server now presents {format_fingerprint(exc.presented)}. This may be another "
        "server pretending to be it; refusing to connect. If it was reinstalled, check the new "
        f"fingerprint with its administrator, then run: jetstreamctl logout --forget {name} "
        f"(or remove its line from {known_hosts})",
        EXIT_IDENTITY, "PERMISSION_DENIED")


def login_for(settings: Settings, name: str) -> ServerLogin | None:
    """Stored credentials for `name`; $JETSTREAM_API_TOKEN overrides them for any server."""
    env_token = os.environ.get("JETSTREAM_API_TOKEN", "")
    stored = settings.credentials().servers.get(name)
    if env_token:
        return ServerLogin(username=stored.username if stored else "", token=env_token,
                           kind="api_token", plaintext=stored.plaintext if stored else False)
    return stored


def connect(settings: Settings, name: str | None = None, *, anonymous: bool = False) -> Connection:
    """A connection to `name` (default: the selected server) with its stored credentials.

    Without stored credentials (and not `anonymous`), commands fail with exit 3 and a hint
    to log in, except for the local server, which needs none.
    """
    target = canonical(name) if name else settings.selected()
    if target == LOCAL:
        return open_local(settings)
    login = login_for(settings, target)
    if login is None and not anonymous:
        raise CtlError(f"not logged in to {target}: run jetstreamctl login {target}",
                       EXIT_AUTH, "UNAUTHENTICATED")
    plaintext = login.plaintext if login else False
    channel, fingerprint = open_pinned(settings, target, plaintext=plaintext)
    return Connection(target, channel, login.token if login else None, fingerprint,
                      login.username if login else "")
