"""Opening the UDP flows of a session this server asked for (Open*Session on the peer).

The caller of OpenReceiveSession (a push) or OpenSendSession (a pull) always opens the
flows, from its own ports towards the peer's, with the one-time tickets the peer issued.
The application attaches to the first flow's link before the handshake ends, so no early
data is missed. A push's further flows (`FurtherFlow`) each run in a worker thread of their
own, so that their per-packet work runs on other cores, and pace as the first flow's
controller says (`jetstream.datachannel.grouprate`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.handshake import SessionTicket
from jetstream.datachannel.stats import ConnectionStats
from jetstream.errors import Unavailable
from jetstream.services.destinations import Destination
from jetstream.transport.endpoint import DataEndpoint, DataLink
from jetstream.transport.flowgroup import FlowWorker, follow_leader
from jetstream.transport.sockets import bind_udp

ESTABLISH_TIMEOUT = 15.0
CLOSE_GRACE = 0.1
"""Seconds a further flow's socket stays open after its CLOSE was sent: it leaves at once
unless the socket's buffer is full."""


@dataclass
class Flow:
    endpoint: DataEndpoint
    link: DataLink

    def close(self) -> None:
        self.link.close(0, "done")
        asyncio.get_running_loop().call_later(1.0, self.endpoint.close)  # let CLOSE go out

    async def shutdown(self) -> None:
        """Close, and the socket too before returning (a worker's loop ends after this)."""
        self.link.close(0, "done")
        await asyncio.sleep(CLOSE_GRACE)
        self.endpoint.close()


@dataclass
class FurtherFlow:
    """A flow of a push beyond the first, driven by its worker's thread, the only one that
    touches its link: the push's loop hands it chunks (`send`)."""

    worker: FlowWorker
    flow: Flow

    async def send(self, stream_id: int, data: bytes | memoryview, *, offset: int,
                   end_stream: bool = False) -> None:
        """Queue `data` on this flow once it has room (LinkClosed if it ended)."""
        link = self.flow.link
        await self.worker.run(lambda: link.send_when_room(stream_id, data, offset=offset,
                                                          end_stream=end_stream))

    def statistics(self) -> ConnectionStats:
        """Read from the push's thread: a snapshot of counters, consistent enough."""
        return self.flow.link.statistics()

    async def close(self) -> None:
        try:
            await self.worker.run(self.flow.shutdown)
        finally:
            self.worker.stop()


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


async def open_further_flow(destination: Destination, host: str, port: int, ticket: bytes,
                            config: DataChannelConfig, leader: DataLink, name: str
                            ) -> FurtherFlow:
    """Open a further flow in a worker of its own; it follows `leader`'s pacing."""
    worker = FlowWorker(name)
    try:
        flow = await worker.run(lambda: open_flow(destination, host, port, ticket, config,
                                                  lambda link: None))
    except BaseException:
        worker.stop()
        raise
    asyncio.run_coroutine_threadsafe(follow_leader(lambda: leader, flow.link), worker.loop)
    return FurtherFlow(worker, flow)
