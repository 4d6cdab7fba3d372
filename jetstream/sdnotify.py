"""The sd_notify protocol (systemd's Type=notify) without libsystemd.

A service manager that wants to know when the server is ready sets $NOTIFY_SOCKET to a
Unix datagram socket; the server sends `READY=1` there once every port is open, and
`STOPPING=1` when it begins to shut down. systemd does this for Type=notify units, and
`jetstream start` (the supervisor where systemd is not running) listens the same way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from jetstream import gcpolicy

log = logging.getLogger(__name__)
T = TypeVar("T")


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


async def serve_until_signalled(start: Callable[[], Awaitable[T]],
                                stop: Callable[[T], Awaitable[None]],
                                status: Callable[[T], str], manager: str) -> None:
    """Start a service, tell `manager` it is ready, run until SIGTERM or SIGINT, say it
    is stopping, stop it: the life of `jetstream server` and of `jetstream relay_server`."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = await start()
    gcpolicy.settle()
    notify(manager, "READY=1", f"STATUS={status(running)}")
    await stopping.wait()
    notify(manager, "STOPPING=1")
    await stop(running)
