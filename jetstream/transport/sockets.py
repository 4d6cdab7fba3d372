"""UDP socket set-up: bind, and ask for large kernel buffers.

A long fat path needs megabytes of socket buffer; Linux silently caps requests at
net.core.rmem_max / wmem_max. As root we use SO_RCVBUFFORCE/SO_SNDBUFFORCE, which ignore
the caps; otherwise we read back what we got and warn, as quic-go does.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)

WANTED_BUFFER_BYTES = 32 * 1024 * 1024
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def set_buffer_sizes(sock: socket.socket, wanted: int = WANTED_BUFFER_BYTES) -> tuple[int, int]:
    """Request `wanted` bytes for both buffers; return what the kernel granted (rcv, snd)."""
    granted: list[int] = []
    for option, forced, sysctl in (
        (socket.SO_RCVBUF, _SO_RCVBUFFORCE, "rmem_max"),
        (socket.SO_SNDBUF, _SO_SNDBUFFORCE, "wmem_max"),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, wanted)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, option, wanted)
        got = sock.getsockopt(socket.SOL_SOCKET, option) // 2  # Linux reports double
        if got < wanted:
            log.warning(
                "UDP socket buffer capped at %d KiB (wanted %d KiB); raise net.core.%s "
                "for full speed on long paths",
                got // 1024, wanted // 1024, sysctl,
            )
        granted.append(got)
    return granted[0], granted[1]


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port) with large buffers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        set_buffer_sizes(sock)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
