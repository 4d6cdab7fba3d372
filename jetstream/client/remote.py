"""An authenticated, pinned API connection to another jetstream server.

Used by a server to reach its destinations (and by tools that want the same guarantees).
Errors come back as `jetstream.errors` so that services never see grpc exceptions.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from google.protobuf.duration_pb2 import Duration
from grpc import aio

from jetstream.api.status import error_for
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    manifests_pb2_grpc,
    peer_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)

T = TypeVar("T")
CALL_TIMEOUT = 15.0


class RemoteServer:
    """One channel to a remote API; `token` is sent on every call once set."""

    def __init__(self, channel: aio.Channel, endpoint: Endpoint, fingerprint: bytes | None) -> None:
        self.channel = channel
        self.endpoint = endpoint
        self.fingerprint = fingerprint
        """SHA-256 of the certificate the channel trusts; None for plaintext."""
        self.token: str | None = None
        self.peer = peer_pb2_grpc.PeerServiceStub(channel)
        self.manifests = manifests_pb2_grpc.ManifestServiceStub(channel)
        self._server = server_pb2_grpc.ServerServiceStub(channel)
        self._auth = auth_pb2_grpc.AuthServiceStub(channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def call(self, rpc: Callable[..., Awaitable[T]], request: object) -> T:
        """Invoke a unary RPC with credentials and a deadline, translating failures."""
        try:
            return await rpc(request, metadata=self.metadata, timeout=CALL_TIMEOUT)
        except aio.AioRpcError as exc:
            raise error_for(exc.code(), f"{self.endpoint.target}: {exc.details()}") from None

    async def server_info(self) -> tuple[server_pb2.ServerInfo, float]:
        """The remote's self-description and the round-trip time of asking, in seconds."""
        started = time.monotonic()
        reply = await self.call(self._server.GetServerInfo, server_pb2.GetServerInfoRequest())
        return reply.server_info, time.monotonic() - started

    async def login(self, username: str, password: str) -> common_pb2.Principal:
        reply = await self.call(
            self._auth.Login, auth_pb2.LoginRequest(username=username, password=password)
        )
        self.token = reply.session_token
        return reply.principal

    async def logout(self) -> None:
        await self.call(self._auth.Logout, auth_pb2.LogoutRequest())
        self.token = None

    async def whoami(self) -> common_pb2.Principal:
        return (await self.call(self._auth.WhoAmI, auth_pb2.WhoAmIRequest())).principal

    async def create_api_token(self, description: str, ttl_seconds: int) -> str:
        request = auth_pb2.CreateApiTokenRequest(
            api_token=auth_pb2.ApiToken(description=description, ttl=Duration(seconds=ttl_seconds))
        )
        return (await self.call(self._auth.CreateApiToken, request)).secret


@asynccontextmanager
async def connect(
    endpoint: Endpoint,
    *,
    plaintext: bool = False,
    pinned: bytes | None = None,
    token: str | None = None,
) -> AsyncIterator[RemoteServer]:
    """Open a pinned channel that carries `token` (if any) on every call."""
    channel, fingerprint = await open_aio_channel(endpoint, plaintext=plaintext, pinned=pinned)
    remote = RemoteServer(channel, endpoint, fingerprint)
    remote.token = token
    try:
        yield remote
    finally:
        await channel.close()
