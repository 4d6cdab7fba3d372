"""The asyncio driver: real UDP sockets under sans-IO data-channel connections.

One `DataEndpoint` owns one UDP socket and any number of connections on it: the server's
receive port (connections arrive with a ticket the control API issued) or the outgoing
port of a destination (connections we start). For every connection the driver follows the
core's contract (jetstream/datachannel/connection.py): feed datagrams with `loop.time()`,
drain events, send what the core returns, re-arm one timer.

Datagrams may also arrive another way than the socket: a relay link (jetstream/relay/)
hands them to `deliver` and registers itself with `route` as the `DatagramPath` replies to
those peers take. The rest of the endpoint cannot tell the difference.

Efficiency is per packet: datagrams are read in batches (GRO where offered) and each touched
connection is pumped once per batch, not once per datagram; sends go out as GSO batches.
A paced WAN flow delivers its datagrams one at a time, though, and waking the event loop
for each costs several times the datagram's own processing; so while datagrams keep coming
the endpoint reads the socket every `POLL_INTERVAL` instead (interrupt moderation, as NICs
do), and goes back to waiting for readability once a poll finds the socket empty.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from jetstream.datachannel import wire
from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.connection import Connection
from jetstream.datachannel.events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    StreamDataReceived,
)
from jetstream.datachannel.handshake import Role, SessionTicket
from jetstream.datachannel.stats import ConnectionStats
from jetstream.errors import JetstreamError, Unavailable
from jetstream.transport.udpio import BatchSocket

log = logging.getLogger(__name__)

Address = tuple[str, int]
EventHandler = Callable[[Event], None]
RECEIVE_BATCH = 512
LOOPBACK_DATAGRAM_SIZE = 32_000
"""Two of them fill one GSO send (64 KiB)."""
CONNECTION_REJECTIONS = ("malformed", "auth", "replay")
"""Why a connection drops a datagram (`ConnectionStats.rejected_*`)."""
POLL_INTERVAL = 0.001
"""Seconds between reads while datagrams keep arriving: adds at most this much to the RTT,
far below the queueing delay rate control tolerates (docs/protocol.md section 9)."""
_MIN_SHORT = wire.SHORT_HEADER_SIZE + wire.AEAD_TAG_LENGTH
_CID_END = 1 + wire.CID_LENGTH


class DatagramPath(Protocol):
    """Another way to a peer than the endpoint's own socket (a relay link)."""

    def send(self, payloads: list[bytes], addr: Address) -> None:
        """Send the datagrams to `addr` soon, in order; a path may drop them, as UDP may."""


class LinkClosed(Unavailable):
    """The data channel ended before the application finished with it."""


class DataLink:
    """One connection as the application sees it: streams in, streams out, flow control.

    Events are delivered synchronously to `on_event` (set it before data can arrive), which
    keeps per-packet cost to one function call.
    """

    def __init__(self, endpoint: DataEndpoint, connection: Connection) -> None:
        self._endpoint = endpoint
        self.connection = connection
        self.on_event: EventHandler = _ignore
        self.established: asyncio.Future[None] = endpoint.loop.create_future()
        self.terminated: asyncio.Future[ConnectionTerminated] = endpoint.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False
        self._space_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    # --- application side ----------------------------------------------------------------------

    def send(self, stream_id: int, data: bytes | memoryview, *, offset: int | None = None,
             end_stream: bool = False) -> None:
        """Queue stream data (the core keeps a reference, no copy); it goes out soon."""
        self.connection.send_stream_data(stream_id, data, offset=offset, end_stream=end_stream)
        self._schedule_flush()

    async def wait_for_space(self, nbytes: int) -> None:
        """Return once the core will take `nbytes` more without overfilling its buffers."""
        if self.connection.send_buffer_space() >= nbytes:
            return
        self._raise_if_closed()
        waiter = self._endpoint.loop.create_future()
        self._space_waiters.append((nbytes, waiter))
        await waiter

    async def send_when_room(self, stream_id: int, data: bytes | memoryview, *,
                             offset: int | None = None, end_stream: bool = False) -> None:
        """`send` once the core has room for `data` (a writer that must not overfill it)."""
        await self.wait_for_space(len(data))
        self.send(stream_id, data, offset=offset, end_stream=end_stream)

    def consumed(self, nbytes: int) -> None:
        """Received bytes were written: give the peer that much flow-control credit back."""
        self.connection.data_consumed(nbytes)
        self._schedule_flush()

    def statistics(self) -> ConnectionStats:
        return self.connection.statistics()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        self.connection.close(error_code, reason)
        self.pump()

    async def wait_closed(self) -> ConnectionTerminated:
        return await asyncio.shield(self.terminated)

    # --- driver side ---------------------------------------------------------------------------

    def pump(self) -> None:
        """Drain events, send what is due, re-arm the timer: after every input."""
        self._flush_scheduled = False
        connection = self.connection
        endpoint = self._endpoint
        events = connection.events
        while events:  # a handler may pump again (close): both pop the same queue, in order
            event = events.popleft()
            if type(event) is not StreamDataReceived:  # the per-packet event needs no look
                if isinstance(event, HandshakeCompleted) and not self.established.done():
                    self.established.set_result(None)
                elif isinstance(event, ConnectionTerminated):
                    self._on_terminated(event)
            self.on_event(event)
        now = endpoint.loop.time()
        while True:
            datagrams = connection.datagrams_to_send(now)
            if not datagrams:
                break
            endpoint.transmit(datagrams)
            if len(datagrams) < connection.config.max_batch:
                break
        self._wake_writers()
        self._arm_timer()
        if connection.is_closed:
            endpoint.forget(self)

    def _on_timer(self) -> None:
        self._timer = None
        self.connection.handle_timer(self._endpoint.loop.time())
        self.pump()

    def _arm_timer(self) -> None:
        deadline = self.connection.get_timer()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._endpoint.loop.call_at(deadline, self._on_timer)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._endpoint.loop.call_soon(self.pump)

    def _wake_writers(self) -> None:
        waiters = self._space_waiters
        if not waiters:
            return
        space = self.connection.send_buffer_space()
        while waiters and (waiters[0][1].done() or waiters[0][0] <= space):
            _nbytes, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _on_terminated(self, event: ConnectionTerminated) -> None:
        if not self.terminated.done():
            self.terminated.set_result(event)
        why = event.reason or f"code {event.error_code}"
        error = LinkClosed(f"data channel closed: {why}")
        if not self.established.done():
            self.established.set_exception(error)
            self.established.exception()  # retrieved: an unawaited failure is not an error
        while self._space_waiters:
            _n, waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _raise_if_closed(self) -> None:
        if self.terminated.done():
            event = self.terminated.result()
            raise LinkClosed(f"data channel closed: {event.reason or event.error_code}")

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass
class _Pending:
    """A ticket the control API issued and the callback for its connection."""

    ticket: SessionTicket
    on_link: Callable[[DataLink], None]
    config: DataChannelConfig
    links: list[DataLink] = field(default_factory=list)


class DataEndpoint:
    """One UDP socket and the connections multiplexed on it."""

    def __init__(self, sock: socket.socket, config: DataChannelConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.socket = BatchSocket(sock)
        self._by_cid: dict[bytes, DataLink] = {}
        self._tickets: dict[bytes, _Pending] = {}
        self._backlog: deque[tuple[list[bytes], Address]] = deque()
        self._rng = random.SystemRandom()
        self._unproven: dict[DataLink, bytes] = {}
        self._paths: dict[Address, DatagramPath] = {}
        self.rejected = 0
        """Datagrams no connection took: an unknown connection id or ticket, or no packet."""
        self._retired: dict[str, int] = dict.fromkeys(CONNECTION_REJECTIONS, 0)
        """What the connections forgotten so far dropped, by reason."""
        self._poll: asyncio.TimerHandle | None = None
        self.loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def port(self) -> int:
        return int(self.socket.sock.getsockname()[1])

    def expect(self, ticket: SessionTicket, on_link: Callable[[DataLink], None],
               config: DataChannelConfig | None = None) -> None:
        """Accept connections presenting `ticket` (server role). `config`: the accepted
        connection's own settings, for a side that will send on it (a pull's sender sets its
        rate policy and limits); the endpoint's otherwise."""
        self._tickets[ticket.ticket_id] = _Pending(ticket, on_link, config or self.config)

    def withdraw(self, ticket_id: bytes) -> None:
        self._tickets.pop(ticket_id, None)

    def connect(self, addr: Address, ticket: SessionTicket,
                config: DataChannelConfig | None = None) -> DataLink:
        """Start a connection to `addr` with a ticket from the peer's control API."""
        connection = Connection(for_path(config or self.config, addr), role=Role.CLIENT,
                                ticket=ticket, rng=self._rng)
        link = DataLink(self, connection)
        self._by_cid[connection.local_cid] = link
        connection.connect(addr, self.loop.time())
        link.pump()
        return link

    def transmit(self, datagrams: list[tuple[bytes, wire.Address]]) -> None:
        addr = datagrams[0][1]
        payloads = [d for d, a in datagrams if a == addr]
        if len(payloads) != len(datagrams):  # never happens for one connection's batch
            for data, target in datagrams:
                self._send([data], target)  # type: ignore[arg-type]
            return
        self._send(payloads, addr)  # type: ignore[arg-type]

    def route(self, addr: Address, path: DatagramPath | None) -> None:
        """Send to `addr` through `path` from now on (None: through the socket again)."""
        if path is None:
            self._paths.pop(addr, None)
        else:
            self._paths[addr] = path

    def deliver(self, datagrams: Sequence[tuple[bytes | memoryview, Address]]) -> None:
        """Datagrams that arrived through a path, handled as if read from the socket."""
        self._process(datagrams, self.loop.time())

    def peer_authenticated(self, data: bytes, addr: Address) -> bool:
        """Whether `data` (a datagram just delivered) belongs to a connection that has
        authenticated its peer at `addr`: the address validation of docs/protocol.md 14."""
        if len(data) < _MIN_SHORT or data[0] & wire.FLAG_LONG:
            return False
        link = self._by_cid.get(bytes(data[1:_CID_END]))
        return (link is not None and link.connection.authenticated
                and link.connection.peer_address == addr)

    def _send(self, payloads: list[bytes], addr: Address) -> None:
        if self._paths:
            path = self._paths.get(addr)
            if path is not None:
                path.send(payloads, addr)
                return
        if self._backlog:
            self._backlog.append((payloads, addr))
            return
        try:
            sent = self.socket.send(payloads, addr)
        except OSError as exc:
            log.debug("UDP send to %s failed: %s", addr, exc)
            return
        if sent < len(payloads):
            self._backlog.append((payloads[sent:], addr))
            self.loop.add_writer(self.socket.sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        while self._backlog:
            payloads, addr = self._backlog[0]
            try:
                sent = self.socket.send(payloads, addr)
            except OSError:
                sent = len(payloads)
            if sent < len(payloads):
                self._backlog[0] = (payloads[sent:], addr)
                return
            self._backlog.popleft()
        self.loop.remove_writer(self.socket.sock.fileno())

    def _on_readable(self) -> None:
        start = self.loop.time()
        if self._read(start):
            self.loop.remove_reader(self.socket.sock.fileno())
            self._poll = self.loop.call_at(start + POLL_INTERVAL, self._on_poll)

    def _on_poll(self) -> None:
        start = self.loop.time()
        if self._read(start):  # the interval runs from the start: a busy reader never idles
            self._poll = self.loop.call_at(start + POLL_INTERVAL, self._on_poll)
        else:
            self._poll = None
            self.loop.add_reader(self.socket.sock.fileno(), self._on_readable)

    def _read(self, now: float) -> int:
        """Process the datagrams waiting on the socket; how many there were."""
        datagrams = self.socket.receive(RECEIVE_BATCH)
        self._process(datagrams, now)
        return len(datagrams)

    def _process(self, datagrams: Sequence[tuple[bytes | memoryview, Address]],
                 now: float) -> None:
        touched: dict[int, DataLink] = {}
        by_cid = self._by_cid
        index = 0
        count = len(datagrams)
        while index < count:
            data, addr = datagrams[index]
            if len(data) >= _MIN_SHORT and not data[0] & wire.FLAG_LONG:
                link = by_cid.get(bytes(data[1:_CID_END]))  # a short header: route by cid
            else:
                link = self._route(data, addr)
            if link is None or link.connection.is_closed:  # closed: forgotten at its pump
                self.rejected += 1
                index += 1
                continue
            index = link.connection.receive_run(datagrams, index, now)
            touched[id(link)] = link
        for link in touched.values():
            link.pump()
            if link in self._unproven and link.connection.authenticated:
                self._consume_ticket(link)

    def _route(self, data: bytes | memoryview, addr: Address) -> DataLink | None:
        try:
            ticket_id = wire.peek_ticket_id(data)
            if ticket_id is None:
                return self._by_cid.get(wire.peek_destination_cid(data))
        except JetstreamError:
            return None
        pending = self._tickets.get(ticket_id)
        if pending is None:
            return None
        for link in pending.links:
            if link.connection.peer_address == addr:
                return link
        if len(pending.links) >= 4:  # unauthenticated attempts per ticket: bounded state
            return None
        connection = Connection(for_path(pending.config, addr), role=Role.SERVER,
                                ticket=pending.ticket, rng=self._rng)
        link = DataLink(self, connection)
        pending.links.append(link)
        self._unproven[link] = ticket_id
        self._by_cid[connection.local_cid] = link
        return link

    def _consume_ticket(self, link: DataLink) -> None:
        """A ticket is spent once a connection proves it holds the secret (server role)."""
        pending = self._tickets.pop(self._unproven.pop(link), None)
        if pending is None:
            return
        for other in pending.links:
            if other is not link:
                self.forget(other)
        pending.on_link(link)

    def forget(self, link: DataLink) -> None:
        link.cancel_timer()
        self._unproven.pop(link, None)
        if self._by_cid.get(link.connection.local_cid) is link:
            del self._by_cid[link.connection.local_cid]
            _add_rejections(self._retired, link.connection.statistics())

    def rejections(self) -> dict[str, int]:
        """Datagrams dropped without reply since the endpoint opened, by reason: the
        connections' own (malformed, auth, replay) and "unrouted" (see `rejected`). Safe to
        call from another thread (a metrics scrape)."""
        totals = dict(self._retired)
        for link in list(self._by_cid.values()):
            _add_rejections(totals, link.connection.statistics())
        totals["unrouted"] = self.rejected
        return totals

    def close(self) -> None:
        for link in list(self._by_cid.values()):
            link.connection.close(0, "endpoint closing")
            link.pump()
            self.forget(link)
        if self._poll is not None:
            self._poll.cancel()
        else:
            self.loop.remove_reader(self.socket.sock.fileno())
        if self._backlog:
            self.loop.remove_writer(self.socket.sock.fileno())
        self.socket.close()


def for_path(config: DataChannelConfig, addr: Address) -> DataChannelConfig:
    """Large datagrams on a loopback path: its MTU is lo's 64 KiB and nothing on the way can
    drop a large one, and per-packet work, not bytes, bounds a local copy (TCP's loopback
    segments are 64 KiB for the same reason). Elsewhere the configured size (1500-byte MTU)
    holds. Both ends advertise their size in the handshake and the smaller one is used."""
    if config.max_datagram_size < LOOPBACK_DATAGRAM_SIZE and _is_loopback(addr[0]):
        return replace(config, max_datagram_size=LOOPBACK_DATAGRAM_SIZE)
    return config


def _is_loopback(host: object) -> bool:
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _add_rejections(totals: dict[str, int], stats: ConnectionStats) -> None:
    totals["malformed"] += stats.rejected_malformed
    totals["auth"] += stats.rejected_auth
    totals["replay"] += stats.rejected_replay


def _ignore(event: Event) -> None:
    del event


def random_ticket() -> SessionTicket:
    return SessionTicket.generate(os.urandom)
