"""jetstream.v1.RelayService, as the relay serves it: thin over `registry.Relay`.

Control: challenge, Register, then two loops until the link or the registration ends, one
carrying the server's datagrams out of the public port, one sending the server what
arrived (and the TCP connections to claim). A write waits while the server's side of the
link is full (HTTP/2 flow control); meanwhile the forwarder's bounded queue takes what
arrives and drops the rest, so a slow server costs the relay at most that queue.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from grpc import aio

from jetstream import __version__
from jetstream.api.interceptors import bearer_token
from jetstream.api.status import status_for
from jetstream.errors import JetstreamError, Unauthenticated
from jetstream.relay import proof
from jetstream.relay.addresses import format_address
from jetstream.relay.forwarding import MAX_BATCH_BYTES
from jetstream.relay.registry import PendingConnection, Registration, Relay
from jetstream.relay.tasks import first_of
from jetstream.v1 import relay_pb2 as R
from jetstream.v1 import relay_pb2_grpc

log = logging.getLogger(__name__)

TUNNEL_CHUNK = 64 << 10

Context = aio.ServicerContext[Any, Any]


class RelayServicer(relay_pb2_grpc.RelayServiceServicer):
    def __init__(self, relay: Relay, fingerprint: bytes, public_address: str) -> None:
        self._relay = relay
        self._fingerprint = fingerprint
        self._public_address = public_address

    async def Control(self, request_iterator: AsyncIterator[R.ControlRequest],
                      context: Context) -> None:
        await _mapping_errors(context, self._control(request_iterator, context))

    async def Tunnel(self, request_iterator: AsyncIterator[R.TunnelRequest],
                     context: Context) -> None:
        await _mapping_errors(context, self._tunnel(request_iterator, context))

    async def _control(self, requests: AsyncIterator[R.ControlRequest],
                       context: Context) -> None:
        nonce = os.urandom(proof.NONCE_BYTES)
        await context.write(R.ControlResponse(challenge=R.Challenge(nonce=nonce)))
        requests = aiter(requests)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("body") != "register":
            raise Unauthenticated("the first message on Control must be a Register")
        register = first.register
        fingerprint = proof.verify(register.certificate_pem, register.signature,
                                   self._fingerprint, nonce, self._relay.trusted)
        registration = self._relay.register(fingerprint, register.server_uid,
                                            register.display_name, register.public_port)
        try:
            await context.write(R.ControlResponse(registered=R.Registered(
                public_host=self._public_address, public_port=registration.port.port,
                tunnel_token=registration.token, version=__version__)))
            await first_of(self._from_server(requests, registration),
                            self._to_server(context, registration),
                            registration.ended.wait())
        finally:
            self._relay.unregister(registration)

    async def _from_server(self, requests: AsyncIterator[R.ControlRequest],
                           registration: Registration) -> None:
        forwarder, port = registration.forwarder, registration.port
        drops = self._relay.counters.drops
        async for request in requests:
            if request.WhichOneof("body") != "datagrams":
                continue
            batch = request.datagrams
            for addr, payloads in forwarder.to_peers(list(batch.peers), list(batch.payloads),
                                                     list(batch.validated_peers)):
                drops["send_failed"] += port.send(payloads, addr)

    async def _to_server(self, context: Context, registration: Registration) -> None:
        forwarder = registration.forwarder
        while not registration.ended.is_set():
            await registration.wake.wait()
            registration.wake.clear()
            while registration.notices:
                connection = registration.notices.popleft()
                await context.write(R.ControlResponse(incoming_connection=R.IncomingConnection(
                    connection_id=connection.id, remote_address=connection.remote)))
            while forwarder.pending and not registration.ended.is_set():
                batch = forwarder.take(MAX_BATCH_BYTES)
                await context.write(R.ControlResponse(datagrams=R.Datagrams(
                    peers=batch.peers, payloads=batch.payloads,
                    new_peers=[R.Peer(id=p.id, address=format_address(p.addr))
                               for p in batch.new_peers],
                    forgotten_peers=batch.forgotten_peers)))

    async def _tunnel(self, requests: AsyncIterator[R.TunnelRequest], context: Context) -> None:
        token = bearer_token(context.invocation_metadata())
        try:
            secret = bytes.fromhex(token or "")
        except ValueError:
            secret = b""
        if not secret:
            raise Unauthenticated("Tunnel needs 'authorization: Bearer <tunnel_token hex>'")
        requests = aiter(requests)
        first = await anext(requests, None)
        if first is None:
            return
        connection = self._relay.claim(secret, first.connection_id)
        self._relay.tunnels += 1
        try:
            if first.data:
                connection.writer.write(first.data)
            await first_of(_to_remote(requests, connection), _from_remote(context, connection))
        finally:
            self._relay.tunnels -= 1
            connection.writer.close()


async def _to_remote(requests: AsyncIterator[R.TunnelRequest],
                     connection: PendingConnection) -> None:
    async for request in requests:
        connection.writer.write(request.data)
        await connection.writer.drain()


async def _from_remote(context: Context, connection: PendingConnection) -> None:
    while data := await connection.reader.read(TUNNEL_CHUNK):
        await context.write(R.TunnelResponse(data=data))


async def _mapping_errors(context: Context, work: Awaitable[None]) -> None:
    try:
        await work
    except JetstreamError as exc:
        log.info("relay call refused: %s", exc)
        await context.abort(status_for(exc), str(exc))

