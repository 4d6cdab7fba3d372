"""Whom the relay serves right now: one registration per trusted server, each holding one
public port, and the TCP connections waiting for the server to claim them.

A server is known by the fingerprint of its certificate. Registering again replaces the
earlier registration (a server whose link broke comes back before the relay noticed), and
a server asking for no port in particular gets the one it held last, so the address peers
know it by stays the same across reconnects.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
from collections import deque
from dataclasses import dataclass, field

from jetstream.errors import AlreadyExists, NotFound, ResourceExhausted, Unauthenticated
from jetstream.relay.addresses import Address, format_address
from jetstream.relay.forwarding import Counters, Forwarder
from jetstream.relay.ports import PublicPort

log = logging.getLogger(__name__)

TUNNEL_CLAIM_TIMEOUT = 10.0
MAX_PENDING_CONNECTIONS = 64
TOKEN_BYTES = 32


@dataclass(eq=False)
class PendingConnection:
    """A TCP connection on a public port, until the server claims it with Tunnel."""

    id: int
    remote: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class Registration:
    fingerprint: bytes
    server_uid: str
    name: str
    port: PublicPort
    forwarder: Forwarder
    token: bytes = field(default_factory=lambda: os.urandom(TOKEN_BYTES))
    notices: deque[PendingConnection] = field(default_factory=deque)
    """Connections to announce to the server."""
    pending: dict[int, PendingConnection] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when there is something to send to the server, or the registration ended."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self) -> None:
        self.ended.set()
        self.wake.set()
        for connection in self.pending.values():
            _drop(connection)
        self.pending.clear()
        self.notices.clear()


class Relay:
    def __init__(self, trusted: frozenset[bytes], queue_limit: int, counters: Counters) -> None:
        self.ports: dict[int, PublicPort] = {}
        self.trusted = trusted
        self.counters = counters
        self._queue_limit = queue_limit
        self._by_port: dict[int, Registration] = {}
        self._by_fingerprint: dict[bytes, Registration] = {}
        self._last_port: dict[bytes, int] = {}
        self._peer_ids = itertools.count(1)
        self._connection_ids = itertools.count(1)
        self.tunnels = 0
        """Tunnels carrying bytes now (for the metrics)."""

    async def open_ports(self, host: str, numbers: tuple[int, ...]) -> None:
        """Bind every public port now, so a port in use stops the start."""
        for number in numbers:
            port = PublicPort(host, number, self.on_datagrams, self.on_connection)
            await port.open()
            self.ports[port.port] = port

    @property
    def registrations(self) -> list[Registration]:
        return list(self._by_port.values())

    def register(self, fingerprint: bytes, server_uid: str, name: str,
                 requested_port: int) -> Registration:
        """Give a trusted server a public port; ends its earlier registration, if any."""
        port = self._choose_port(fingerprint, requested_port)
        old = self._by_fingerprint.get(fingerprint)
        if old is not None:
            log.info("server %s registered again; ending its earlier link", server_uid)
            self.unregister(old)
        registration = Registration(
            fingerprint, server_uid, name, self.ports[port],
            Forwarder(self.counters, self._peer_ids, self._queue_limit))
        self._by_port[port] = registration
        self._by_fingerprint[fingerprint] = registration
        self._last_port[fingerprint] = port
        log.info("server %s (%s, SHA256:%s) holds public port %d", server_uid, name or "-",
                 fingerprint.hex(), port)
        return registration

    def unregister(self, registration: Registration) -> None:
        registration.end()
        port = registration.port.port
        if self._by_port.get(port) is registration:
            del self._by_port[port]
            log.info("server %s released public port %d", registration.server_uid, port)
        if self._by_fingerprint.get(registration.fingerprint) is registration:
            del self._by_fingerprint[registration.fingerprint]

    def _choose_port(self, fingerprint: bytes, requested: int) -> int:
        def free(port: int) -> bool:
            holder = self._by_port.get(port)
            return holder is None or holder.fingerprint == fingerprint

        if requested:
            if requested not in self.ports:
                offered = ", ".join(str(p) for p in sorted(self.ports))
                raise NotFound(f"this relay has no public port {requested}; it offers {offered}"
                               " (its --recv-port)")
            if not free(requested):
                holder = self._by_port[requested]
                raise AlreadyExists(f"public port {requested} is held by server "
                                    f"{holder.server_uid}; ask for another one "
                                    "(--recv-relay-public-port)")
            return requested
        last = self._last_port.get(fingerprint)
        if last is not None and free(last):
            return last
        for port in self.ports:
            if port not in self._by_port and port not in self._last_port.values():
                return port
        for port in self.ports:  # only ports others held before are left: take one
            if free(port):
                return port
        raise ResourceExhausted("every public port of this relay is held by a server; "
                                "add one with --recv-port")

    # --- the public side ---------------------------------------------------------------------

    def on_datagrams(self, port: PublicPort, datagrams: list[tuple[bytes, Address]],
                     now: float) -> None:
        registration = self._by_port.get(port.port)
        if registration is None:
            self.counters.drops["no_server"] += len(datagrams)
            return
        from_peer = registration.forwarder.from_peer
        for data, addr in datagrams:
            from_peer(data if type(data) is bytes else bytes(data), addr, now)
        registration.wake.set()

    async def on_connection(self, port: PublicPort, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        registration = self._by_port.get(port.port)
        if registration is None or len(registration.pending) >= MAX_PENDING_CONNECTIONS:
            writer.close()
            return
        remote = format_address(writer.get_extra_info("peername")[:2])
        connection = PendingConnection(next(self._connection_ids), remote, reader, writer)
        connection.timer = asyncio.get_running_loop().call_later(
            TUNNEL_CLAIM_TIMEOUT, self._unclaimed, registration, connection)
        registration.pending[connection.id] = connection
        registration.notices.append(connection)
        registration.wake.set()

    def claim(self, token: bytes, connection_id: int) -> PendingConnection:
        """The connection a Tunnel call of the registration holding `token` carries."""
        registration = next((r for r in self._by_port.values()
                             if hmac.compare_digest(r.token, token)), None)
        if registration is None:
            raise Unauthenticated("the tunnel token is not that of a live registration")
        connection = registration.pending.pop(connection_id, None)
        if connection is None:
            raise NotFound(f"connection {connection_id} is unknown, claimed or expired")
        if connection.timer is not None:
            connection.timer.cancel()
        return connection

    def _unclaimed(self, registration: Registration, connection: PendingConnection) -> None:
        if registration.pending.pop(connection.id, None) is not None:
            log.warning("server %s did not claim connection %d from %s within %.0f s",
                        registration.server_uid, connection.id, connection.remote,
                        TUNNEL_CLAIM_TIMEOUT)
            _drop(connection)

    def expire(self, now: float) -> None:
        for registration in self._by_port.values():
            registration.forwarder.expire(now)
            if registration.forwarder.pending:
                registration.wake.set()

    async def close(self) -> None:
        for registration in list(self._by_port.values()):
            self.unregister(registration)
        for port in self.ports.values():
            await port.close()


def _drop(connection: PendingConnection) -> None:
    if connection.timer is not None:
        connection.timer.cancel()
    connection.writer.close()
