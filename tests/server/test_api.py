"""The gRPC surface of a real in-process server: health, reflection, info, auth gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from jetstream.app import Server, start_server
from jetstream.auth.principal import Principal
from jetstream.auth.throttle import Standing
from jetstream.client.channel import Endpoint, FingerprintMismatch, open_aio_channel
from jetstream.config import datapath_choice
from jetstream.errors import Unauthenticated
from jetstream.tls import certificate_fingerprint
from jetstream.v1 import auth_pb2, auth_pb2_grpc, server_pb2, server_pb2_grpc
from tests.support.servers import server_config


class RefusingAuthenticator:
    """Stands in for PAM where these tests do not log in (tests/auth covers real PAM)."""

    async def authenticate(self, username: str, password: str, *, source: str,
                           standing: Standing = Standing.UNKNOWN) -> Principal:
        raise Unauthenticated("invalid username or password")


@asynccontextmanager
async def running(tmp_path) -> AsyncIterator[tuple[Server, aio.Channel]]:
    config = server_config(tmp_path / "state", metrics_port=0, disable_telemetry=False)
    server = await start_server(config, authenticator=RefusingAuthenticator())
    channel, _fingerprint = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.stop()


def run(tmp_path, body: Callable[[Server, aio.Channel], Awaitable[None]]) -> None:
    async def main() -> None:
        async with running(tmp_path) as (server, channel):
            await body(server, channel)

    asyncio.run(main())


def test_health_serving_for_every_service(tmp_path):
    async def body(server: Server, channel: aio.Channel) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "jetstream.v1.ServerService", "jetstream.v1.AuthService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

    run(tmp_path, body)


def test_reflection_lists_jetstream_services(tmp_path):
    async def body(server: Server, channel: aio.Channel) -> None:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: set[str] = set()
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names |= {s.name for s in reply.list_services_response.service}
        assert {"jetstream.v1.ServerService", "jetstream.v1.AuthService",
                "grpc.health.v1.Health"} <= names

    run(tmp_path, body)


def test_get_server_info_answers_without_credentials(tmp_path):
    async def body(server: Server, channel: aio.Channel) -> None:
        stub = server_pb2_grpc.ServerServiceStub(channel)
        info = (await stub.GetServerInfo(server_pb2.GetServerInfoRequest())).server_info
        assert info.api_version == 1
        assert info.version
        assert len(info.server_uid) == 36 and info.server_id and info.server_id != info.server_uid
        assert info.api_port == server.api_port
        assert len(info.receive_ports) == 1 and info.receive_ports[0] > 0
        assert len(info.data_channel_public_key) == 32
        assert info.telemetry_enabled is True
        assert info.allow_remote_control is False
        pem = (server.config.persistent_state_dir / "api-tls.crt").read_bytes()
        assert info.tls_certificate_sha256 == certificate_fingerprint(pem)
        assert 3600 < info.tls_certificate_days_left <= 3650
        # the data path: compiled unless the extension is missing or JETSTREAM_DATAPATH=python
        assert info.data_path == ("python" if datapath_choice() == "python" else "compiled")

    run(tmp_path, body)


@pytest.mark.parametrize("metadata", [None, (("authorization", "Bearer jst_forged"),),
                                      (("authorization", "Basic abc"),)])
def test_protected_call_without_valid_credentials_is_unauthenticated(tmp_path, metadata):
    async def body(server: Server, channel: aio.Channel) -> None:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "log in" in info.value.details()

    run(tmp_path, body)


def test_wrong_login_is_unauthenticated(tmp_path):
    async def body(server: Server, channel: aio.Channel) -> None:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await stub.Login(auth_pb2.LoginRequest(username="nobody", password="x"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == "invalid username or password"

    run(tmp_path, body)


def test_plaintext_client_cannot_talk_to_the_tls_api(tmp_path):
    async def body(server: Server, channel: aio.Channel) -> None:
        async with aio.insecure_channel(f"127.0.0.1:{server.api_port}") as plain:
            stub = server_pb2_grpc.ServerServiceStub(plain)
            with pytest.raises(aio.AioRpcError) as info:
                await stub.GetServerInfo(server_pb2.GetServerInfoRequest(), timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    run(tmp_path, body)


def test_pinned_fingerprint_mismatch_is_refused(tmp_path):
    async def body(server: Server, channel: aio.Channel) -> None:
        with pytest.raises(FingerprintMismatch, match="certificate of 127.0.0.1:.* changed"):
            await open_aio_channel(Endpoint("127.0.0.1", server.api_port), pinned=b"\0" * 32)

    run(tmp_path, body)


def test_api_token_allowed_paths_are_validated(tmp_path):
    """A token's allowed paths are parsed when it is made: a bad one is refused at once."""
    from jetstream.auth.sessions import SessionStore, TokenKind
    from jetstream.errors import InvalidArgument
    from jetstream.services.auth import AuthService, Caller
    from jetstream.state.database import Database

    store = SessionStore(Database(tmp_path))
    auth = AuthService(store, RefusingAuthenticator())
    _secret, record = store.issue("root", TokenKind.SESSION, now=0.0, ttl=1e12)
    caller = Caller(record, "local", Principal("root", 0, 0, (0,), "/root", "root"))
    with pytest.raises(InvalidArgument, match="allowed path"):
        auth.create_api_token(caller, ttl=60, description="", allowed_paths=("a/../b",),
                              read_only=False)
    _secret, made = auth.create_api_token(caller, ttl=60, description="",
                                          allowed_paths=("data/in",), read_only=True)
    assert made.allowed_paths == ("/data/in",) and made.read_only
