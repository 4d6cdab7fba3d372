"""The relay's public ports: for each port number a UDP socket (data channels) and a TCP
listener (peers calling the server's control API), both bound at start so a busy port fails
the start, not the first registration.

Reading follows the data endpoint's rule (transport/endpoint.py): while datagrams keep
coming the socket is read every `POLL_INTERVAL` in batches instead of on every wake-up,
which is also what makes the relay's frames to the server carry many datagrams each.
Sending never queues: a datagram the kernel will not take now is dropped and counted, as a
router would, so no backlog can grow in the relay's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from jetstream.relay.addresses import Address
from jetstream.transport.sockets import bind_udp
from jetstream.transport.udpio import BatchSocket

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.005
"""Longer than the data endpoint's millisecond: every batch becomes one message to the
server (and usually one back, its acknowledgements), and a message costs about as much CPU
as twenty datagrams; 5 ms makes messages of about 85 datagrams at 200 Mbit/s, for at most
5 ms more round-trip time on the paths a relay serves, which are long (WAN senders).
Measured on profile b (bench.relay): 1 ms gave 72 % of the direct path's goodput, 3 ms 90 %,
5 ms 93 %."""
RECEIVE_BATCH = 512

DatagramHandler = Callable[["PublicPort", list[tuple[bytes, Address]], float], None]
ConnectionHandler = Callable[["PublicPort", asyncio.StreamReader, asyncio.StreamWriter],
                             Awaitable[None]]


class PublicPort:
    def __init__(self, host: str, port: int, on_datagrams: DatagramHandler,
                 on_connection: ConnectionHandler) -> None:
        self.host = host
        self.port = port
        self._on_datagrams = on_datagrams
        self._on_connection = on_connection
        self._udp: BatchSocket | None = None
        self._tcp: asyncio.Server | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    async def open(self) -> None:
        try:
            sock = bind_udp(self.host, self.port)
        except OSError as exc:
            raise OSError(f"cannot open public UDP port {self.host}:{self.port}: "
                          f"{exc.strerror}") from None
        self.port = int(sock.getsockname()[1])  # the kernel's choice for port 0 (tests)
        self._udp = BatchSocket(sock)
        try:
            self._tcp = await asyncio.start_server(self._accepted, self.host, self.port)
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot open public TCP port {self.host}:{self.port}: "
                          f"{exc.strerror}") from None
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def send(self, payloads: list[bytes], addr: Address) -> int:
        """Send now; how many the kernel refused (dropped)."""
        assert self._udp is not None
        try:
            return len(payloads) - self._udp.send(payloads, addr)
        except OSError as exc:
            log.debug("UDP send to %s failed: %s", addr, exc)
            return len(payloads)

    async def _accepted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        await self._on_connection(self, reader, writer)

    def _on_readable(self) -> None:
        start = self._loop.time()
        if self._read(start):
            assert self._udp is not None
            self._loop.remove_reader(self._udp.sock.fileno())
            self._poll = self._loop.call_at(start + POLL_INTERVAL, self._on_poll)

    def _on_poll(self) -> None:
        start = self._loop.time()
        if self._read(start):
            self._poll = self._loop.call_at(start + POLL_INTERVAL, self._on_poll)
        else:
            assert self._udp is not None
            self._poll = None
            self._loop.add_reader(self._udp.sock.fileno(), self._on_readable)

    def _read(self, now: float) -> int:
        assert self._udp is not None
        datagrams = self._udp.receive(RECEIVE_BATCH)
        if datagrams:
            self._on_datagrams(self, datagrams, now)  # type: ignore[arg-type]
        return len(datagrams)

    async def close(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        if self._udp is not None:
            if self._poll is not None:
                self._poll.cancel()
            else:
                self._loop.remove_reader(self._udp.sock.fileno())
            self._udp.close()
