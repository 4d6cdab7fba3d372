"""What the server says about itself to anyone who asks (before login, like an ssh banner)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jetstream import __version__
from jetstream.config import ServerConfig
from jetstream.datachannel.native import DATAPATH
from jetstream.state.identity import ServerIdentity
from jetstream.tls import TlsIdentity

#: Bumped when the API changes incompatibly within jetstream.v1 semantics.
API_VERSION = 1

#: Features a client may test for before using them.
CAPABILITIES: tuple[str, ...] = (
    "health", "reflection", "auth.session_tokens", "auth.local_socket", "transfers.push",
    "transfers.pull", "transfers.resume", "bandwidth_limits", "files",
)


@dataclass(frozen=True)
class RelayState:
    """The link to the relay this server receives through (--recv-relay-host)."""

    address: str
    """The relay's control address, host:port."""
    connected: bool = False
    public_host: str = ""
    """Empty: peers use the address they dialled, the relay's."""
    public_port: int = 0
    error: str = ""
    """Why the link is down, when it is."""


@dataclass
class ServerInfoService:
    config: ServerConfig
    identity: ServerIdentity
    tls: TlsIdentity | None
    receive_ports: tuple[int, ...]
    api_port: int = 0
    start_time: float = field(default_factory=time.time)
    hostname: str = field(default_factory=socket.gethostname)
    relay: Callable[[], RelayState | None] = lambda: None

    @property
    def version(self) -> str:
        return __version__

    @property
    def api_version(self) -> int:
        return API_VERSION

    @property
    def data_path(self) -> str:
        """``compiled`` or ``python``: the data channel's per-packet path (native.py)."""
        return DATAPATH

    @property
    def friendly_name(self) -> str:
        return self.config.server_name or self.hostname

    @property
    def api_tokens_enabled(self) -> bool:
        return not self.config.api_disable_api_tokens

    @property
    def capabilities(self) -> tuple[str, ...]:
        return CAPABILITIES + (("api_tokens",) if self.api_tokens_enabled else ())
