"""The sd_notify protocol (systemd's Type=notify) without libsystemd.

A service manager that wants to know when the server is ready sets $NOTIFY_SOCKET to a
Unix datagram socket; the server sends `READY=1` there once every port is open, and
`STOPPING=1` when it begins to shut down. systemd does this for Type=notify units, and
`jetstream start` (the supervisor where systemd is not running) listens the same way.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)


def notify(address: str, *states: str) -> bool:
    """Send `states` (e.g. "READY=1") to the socket at `address`; False if there is none
    or it cannot be reached (never an error: the server works unsupervised too)."""
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError as exc:
        log.warning("cannot tell the service manager %s: %s", ", ".join(states), exc)
        return False
    return True
