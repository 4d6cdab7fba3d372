"""API tokens are never wider than what made them: superuser, paths, read-only (root, real PAM
logins, a real server)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc import aio

from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import auth_pb2, auth_pb2_grpc, server_pb2, server_pb2_grpc
from tests.support.servers import serve
from tests.system.users import ADMIN, ALICE, PASSWORDS, require_root

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(autouse=True)
def _users() -> None:
    require_root(users=True)


def bearer(secret: str) -> Metadata:
    return (("authorization", f"Bearer {secret}"),)


class Api:
    def __init__(self, channel: aio.Channel) -> None:
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.server = server_pb2_grpc.ServerServiceStub(channel)

    async def login(self, user: str) -> Metadata:
        reply = await self.auth.Login(
            auth_pb2.LoginRequest(username=user, password=PASSWORDS[user]))
        return bearer(reply.session_token)

    async def token(self, auth: Metadata, **fields: object) -> tuple[Metadata, auth_pb2.ApiToken]:
        reply = await self.auth.CreateApiToken(auth_pb2.CreateApiTokenRequest(
            api_token=auth_pb2.ApiToken(ttl=Duration(seconds=600), **fields)), metadata=auth)
        return bearer(reply.secret), reply.api_token

    async def principal(self, auth: Metadata):
        return (await self.auth.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=auth)).principal

    async def superuser_call(self, auth: Metadata) -> grpc.StatusCode:
        try:
            await self.server.ListSandboxMappings(server_pb2.ListSandboxMappingsRequest(),
                                                  metadata=auth)
        except aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK


def run(tmp_path, body) -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state")
            channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
            stack.push_async_callback(channel.close)
            await body(Api(channel))

    asyncio.run(main())


def test_a_superusers_plain_token_is_not_a_superuser(tmp_path):
    async def body(api: Api) -> None:
        admin = await api.login(ADMIN)
        assert (await api.principal(admin)).superuser
        plain, record = await api.token(admin, description="plain")
        assert not record.superuser
        assert not (await api.principal(plain)).superuser
        assert await api.superuser_call(plain) == grpc.StatusCode.PERMISSION_DENIED
        listed = await api.auth.ListApiTokens(auth_pb2.ListApiTokensRequest(), metadata=admin)
        assert [t.superuser for t in listed.api_tokens] == [False]

    run(tmp_path, body)


def test_a_superuser_token_carries_the_right_when_asked(tmp_path):
    async def body(api: Api) -> None:
        admin = await api.login(ADMIN)
        strong, record = await api.token(admin, superuser=True)
        assert record.superuser and (await api.principal(strong)).superuser
        assert await api.superuser_call(strong) == grpc.StatusCode.OK
        # ...and a token it makes without asking is plain again.
        derived, _ = await api.token(strong)
        assert await api.superuser_call(derived) == grpc.StatusCode.PERMISSION_DENIED

    run(tmp_path, body)


def test_only_a_superuser_may_ask_for_a_superuser_token(tmp_path):
    async def body(api: Api) -> None:
        alice = await api.login(ALICE)
        with pytest.raises(aio.AioRpcError) as refused:
            await api.token(alice, superuser=True)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "superuser" in (refused.value.details() or "")
        plain, _ = await api.token(await api.login(ADMIN))
        with pytest.raises(aio.AioRpcError) as widened:
            await api.token(plain, superuser=True)
        assert widened.value.code() == grpc.StatusCode.PERMISSION_DENIED

    run(tmp_path, body)


def test_a_narrow_token_cannot_make_a_wider_one(tmp_path):
    async def body(api: Api) -> None:
        alice = await api.login(ALICE)
        narrow, _ = await api.token(alice, allowed_paths=["/data/in"], read_only=True)
        with pytest.raises(aio.AioRpcError) as outside:
            await api.token(narrow, allowed_paths=["/data"])
        assert outside.value.code() == grpc.StatusCode.PERMISSION_DENIED
        same, record = await api.token(narrow)  # asks for nothing: inherits every limit
        assert list(record.allowed_paths) == ["/data/in"] and record.read_only
        inner, record = await api.token(same, allowed_paths=["/data/in/x"], read_only=False)
        assert list(record.allowed_paths) == ["/data/in/x"] and record.read_only
        who = await api.principal(inner)
        assert list(who.allowed_paths) == ["/data/in/x"] and who.read_only

    run(tmp_path, body)


def test_a_chosen_token_id_is_used_and_unique(tmp_path):
    async def body(api: Api) -> None:
        alice = await api.login(ALICE)
        reply = await api.auth.CreateApiToken(auth_pb2.CreateApiTokenRequest(
            api_token=auth_pb2.ApiToken(ttl=Duration(seconds=60)), api_token_id="ci-1"),
            metadata=alice)
        assert reply.api_token.name == "apiTokens/ci-1"
        for wanted, code in (("ci-1", grpc.StatusCode.ALREADY_EXISTS),
                             ("Bad_Id", grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(aio.AioRpcError) as failed:
                await api.auth.CreateApiToken(auth_pb2.CreateApiTokenRequest(
                    api_token=auth_pb2.ApiToken(ttl=Duration(seconds=60)),
                    api_token_id=wanted), metadata=alice)
            assert failed.value.code() == code, failed.value.details()

    run(tmp_path, body)
