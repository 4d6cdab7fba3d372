"""Opening the UDP flow of a session this server asked for (Open*Session on the peer).

The caller of OpenReceiveSession (a push) or OpenSendSession (a pull) always opens the
flow, from its own port towards the peer's, with the one-time ticket the peer issued. The
application attaches to the link before the handshake ends, so no early data is missed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.handshake import SessionTicket
from jetstream.errors import Unavailable
from jetstream.services.destinations import Destination
from jetstream.transport.endpoint import DataEndpoint, DataLink
from jetstream.transport.sockets import bind_udp

ESTABLISH_TIMEOUT = 15.0


@dataclass
class Flow:
    endpoint: DataEndpoint
    link: DataLink

    def close(self) -> None:
        self.link.close(0, "done")
        asyncio.get_running_loop().call_later(1.0, self.endpoint.close)  # let CLOSE go out


async def open_flow(destination: Destination, host: str, port: int, ticket: bytes,
                    config: DataChannelConfig, attach: Callable[[DataLink], None]) -> Flow:
    """Connect to the peer's `host`/`port` (the destination's UDP port overrides it) and
    wait for the handshake; `attach` gets the link at once."""
    if len(ticket) != 48:
        raise Unavailable(f"{destination.endpoint.target} sent a malformed session ticket")
    host = host or destination.host
    port = destination.udp_port or port
    try:
        family, _, _, _, address = (await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_DGRAM))[0]
    except OSError as exc:
        raise Unavailable(f"cannot resolve {host}: {exc}") from None
    bind = "::" if family == socket.AF_INET6 else "0.0.0.0"
    endpoint = DataEndpoint(bind_udp(bind, destination.local_udp_port), config)
    flow = Flow(endpoint, endpoint.connect((str(address[0]), int(address[1])),
                                           SessionTicket(ticket[:16], ticket[16:])))
    attach(flow.link)
    try:
        await asyncio.wait_for(asyncio.shield(flow.link.established), ESTABLISH_TIMEOUT)
    except TimeoutError:
        flow.close()
        raise Unavailable(
            f"no data-channel answer from {host} UDP {port} within {ESTABLISH_TIMEOUT:.0f} s"
            " (is the UDP port open?)"
        ) from None
    except BaseException:
        flow.close()
        raise
    return flow
