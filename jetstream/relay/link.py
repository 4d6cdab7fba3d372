"""The server's link to its relay: dial out, prove who we are, then carry datagrams and
tunnelled API connections until the link breaks; after any failure, dial again.

Reconnection uses exponential backoff with full jitter (a random wait between 0 and the
current bound, which doubles from `INITIAL_BACKOFF` up to `MAX_BACKOFF`), so servers that
lost the same relay do not all come back in the same instant; a link that stayed up for
`STABLE_AFTER` seconds starts the next bound from the beginning again.

A call that reached our API through the relay came over one of our tunnels: its peer is a
local socket of ours. `data_address` tells such callers to send data to the relay's public
port, and `client_address` gives the remote peer's real address to login throttling.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc import aio

from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.errors import Unavailable
from jetstream.relay import proof
from jetstream.relay.addresses import Address, grpc_peer_address
from jetstream.relay.path import RelayPath
from jetstream.relay.tasks import first_of
from jetstream.services.server_info import RelayState
from jetstream.tls import TlsIdentity
from jetstream.transport.endpoint import DataEndpoint
from jetstream.v1 import relay_pb2 as R
from jetstream.v1 import relay_pb2_grpc

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0
TUNNEL_CHUNK = 64 << 10
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


class Backoff:
    """Exponential backoff with full jitter: each wait is uniform in [0, bound), the bound
    doubles up to `MAX_BACKOFF`, and a link that lasted `STABLE_AFTER` resets it."""

    def __init__(self, rng: Callable[[], float]) -> None:
        self._rng = rng
        self.bound = INITIAL_BACKOFF

    def next(self, *, lasted: float) -> float:
        if lasted >= STABLE_AFTER:
            self.bound = INITIAL_BACKOFF
        delay = self._rng() * self.bound
        self.bound = min(self.bound * 2, MAX_BACKOFF)
        return delay


@dataclass(frozen=True)
class RelaySettings:
    host: str
    port: int
    fingerprint: bytes
    public_port: int = 0


class RelayLink:
    def __init__(self, settings: RelaySettings, tls: TlsIdentity, endpoint: DataEndpoint, *,
                 server_uid: str, name: str, api: Callable[[], Address],
                 rng: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._tls = tls
        self._endpoint = endpoint
        self._server_uid = server_uid
        self._name = name
        self._api = api
        self._rng = rng
        self._public_port = settings.public_port
        self._tunnelled: dict[Address, str] = {}
        """Our end of each tunnel to the API -> the remote peer's `ip:port`."""
        self.state = RelayState(Endpoint(settings.host, settings.port).target)
        self._path = RelayPath(endpoint)
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        """Set while registered; tests and the first start wait on it."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay-link")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._path.close()

    def status(self) -> RelayState:
        return self.state

    def data_address_or(self, direct: Callable[[str], Address]) -> Callable[[str], Address]:
        """Where a caller sends data: the relay's public port if the call came through the
        relay (host empty: the address the caller dialled, the relay's), else `direct`."""

        def data_address(peer: str) -> Address:
            local = grpc_peer_address(peer)
            if local is None or local not in self._tunnelled or not self.state.connected:
                return direct(peer)
            return self.state.public_host, self.state.public_port

        return data_address

    def client_address(self, peer: str) -> str:
        """The caller's real address, `ipv4:1.2.3.4:5` like a grpc peer, for tunnelled calls."""
        local = grpc_peer_address(peer)
        remote = self._tunnelled.get(local) if local is not None else None
        if remote is None:
            return peer
        return ("ipv6:" if remote.startswith("[") else "ipv4:") + remote

    # --- the connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self._rng)
        while True:
            started = time.monotonic()
            try:
                await self._session()
                error = "the relay ended the link"
            except Exception as exc:  # noqa: BLE001 - whatever broke the link: dial again
                error = _describe(exc)
                log.debug("relay link failed", exc_info=True)
            finally:
                self.registered.clear()
            self.state = RelayState(self.state.address, error=error)
            delay = backoff.next(lasted=time.monotonic() - started)
            log.warning("relay %s: %s; dialling again in %.1f s", self.state.address, error,
                        delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        settings = self._settings
        channel, _ = await open_aio_channel(Endpoint(settings.host, settings.port),
                                            pinned=settings.fingerprint,
                                            options=CHANNEL_OPTIONS)
        path = self._path
        tunnels: set[asyncio.Task[None]] = set()
        try:
            stub = relay_pb2_grpc.RelayServiceStub(channel)
            call = stub.Control()
            registered = await self._register(call)
            self._public_port = registered.public_port
            self.state = RelayState(self.state.address, True, registered.public_host,
                                    registered.public_port)
            self.registered.set()
            log.info("registered at relay %s: peers reach this server at %s port %d "
                     "(TCP: API, UDP: data)", self.state.address,
                     registered.public_host or "the relay's address", registered.public_port)

            def tunnel(notice: R.IncomingConnection) -> None:
                task = asyncio.create_task(self._tunnel(stub, registered.tunnel_token, notice))
                tunnels.add(task)
                task.add_done_callback(tunnels.discard)

            await first_of(_from_relay(call, path, tunnel), _to_relay(call, path))
        finally:
            path.reset()
            for task in tunnels:
                task.cancel()
            await asyncio.gather(*tunnels, return_exceptions=True)
            await channel.close()

    async def _register(self, call: aio.StreamStreamCall) -> R.Registered:  # type: ignore[type-arg]
        first = await call.read()
        if first is aio.EOF or first.WhichOneof("body") != "challenge":
            raise Unavailable("the relay did not start with a challenge")
        signature = proof.sign(self._tls.key_pem, self._settings.fingerprint,
                               first.challenge.nonce)
        await call.write(R.ControlRequest(register=R.Register(
            certificate_pem=self._tls.certificate_pem, signature=signature,
            server_uid=self._server_uid, display_name=self._name,
            public_port=self._public_port)))
        reply = await call.read()
        if reply is aio.EOF or reply.WhichOneof("body") != "registered":
            raise Unavailable("the relay did not answer the registration")
        return reply.registered  # type: ignore[no-any-return]

    # --- tunnels to our own API ----------------------------------------------------------------

    async def _tunnel(self, stub: relay_pb2_grpc.RelayServiceStub, token: bytes,
                      notice: R.IncomingConnection) -> None:
        host, port = self._api()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            log.warning("relay tunnel from %s: cannot reach our API at %s:%d: %s",
                        notice.remote_address, host, port, exc)
            return
        local = writer.get_extra_info("sockname")[:2]
        self._tunnelled[local] = notice.remote_address
        call = stub.Tunnel(metadata=(("authorization", f"Bearer {token.hex()}"),))
        try:
            await call.write(R.TunnelRequest(connection_id=notice.connection_id))
            await first_of(_api_to_relay(reader, call), _relay_to_api(call, writer))
        finally:
            call.cancel()
            writer.close()
            del self._tunnelled[local]


async def _from_relay(call: aio.StreamStreamCall, path: RelayPath,  # type: ignore[type-arg]
                      tunnel: Callable[[R.IncomingConnection], None]) -> None:
    while (message := await call.read()) is not aio.EOF:  # read() began the registration
        kind = message.WhichOneof("body")
        if kind == "datagrams":
            path.received(message.datagrams)
        elif kind == "incoming_connection":
            tunnel(message.incoming_connection)


async def _to_relay(call: aio.StreamStreamCall, path: RelayPath) -> None:  # type: ignore[type-arg]
    while True:
        batch = await path.next_batch()
        await call.write(R.ControlRequest(datagrams=batch))


async def _api_to_relay(reader: asyncio.StreamReader,
                        call: aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
    while data := await reader.read(TUNNEL_CHUNK):
        await call.write(R.TunnelRequest(data=data))
    await call.done_writing()
    await asyncio.Event().wait()  # the relay ends the call once the peer has closed


async def _relay_to_api(call: aio.StreamStreamCall,  # type: ignore[type-arg]
                        writer: asyncio.StreamWriter) -> None:
    async for message in call:
        writer.write(message.data)
        await writer.drain()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aio.AioRpcError):
        code = exc.code()
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        return f"{name}: {exc.details()}"
    return str(exc) or type(exc).__name__
