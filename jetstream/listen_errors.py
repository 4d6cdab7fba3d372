"""Start-up failures to listen, worded once: what could not listen, where, which setting.

A bare `[Errno 98] Address already in use` leaves an operator guessing which of the
server's three listeners (API, data channel, metrics) collided. Every bind at start-up goes
through `listen_error`, so each failure names the port and the flag that moves it, e.g.
`metrics port 9886 is in use: --metrics-port or --disable-telemetry`.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from jetstream.errors import ConfigError


@dataclass(frozen=True)
class Listener:
    """One thing the server listens on, and the settings that move it."""

    what: str
    """How the message names it: "API", "data channel UDP", "metrics"."""
    port_remedy: str
    host_flag: str
    kind: int = socket.SOCK_STREAM


API = Listener("API", "--api-port", "--api-host")
DATA = Listener("data channel UDP", "--recv-port", "--recv-host", socket.SOCK_DGRAM)
METRICS = Listener("metrics", "--metrics-port or --disable-telemetry", "--metrics-host")
HEALTH = Listener("health", "--health-port (0: off)", "--health-port")


def listen_error(listener: Listener, host: str, port: int, exc: OSError) -> ConfigError:
    """A one-line ConfigError for a failed bind of `listener` on (host, port)."""
    shown = host or "all interfaces"
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"{listener.what} host {shown!r} cannot be resolved: "
                           f"{listener.host_flag}")
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"{listener.what} port {port} is in use on {shown}: "
                           f"{listener.port_remedy}")
    if exc.errno == errno.EACCES:
        return ConfigError(f"{listener.what} port {port} needs root (ports below 1024): "
                           f"{listener.port_remedy}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{listener.what} address {shown} is not an address of this "
                           f"machine: {listener.host_flag}")
    reason = exc.strerror or str(exc)
    return ConfigError(f"{listener.what} cannot listen on {shown} port {port}: {reason}: "
                       f"{listener.host_flag}, {listener.port_remedy}")


def probe_bind(listener: Listener, host: str, port: int) -> ConfigError | None:
    """Why (host, port) cannot be bound, found by trying (None: it can), for libraries
    (grpc) that only log that binding failed. Uses SO_REUSEADDR as servers do, so only a
    listener, not a connection in TIME_WAIT, counts as in use."""
    address = host.strip("[]")
    try:
        infos = socket.getaddrinfo(address or None, port, type=listener.kind,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _name, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        return listen_error(listener, host, port, exc)
    return None


def cannot_listen(listener: Listener, host: str, port: int) -> ConfigError:
    """The failure to report when a bind failed for a reason `probe_bind` cannot see."""
    return ConfigError(f"{listener.what} cannot listen on {host or 'all interfaces'} port "
                       f"{port}: {listener.host_flag}, {listener.port_remedy}")
