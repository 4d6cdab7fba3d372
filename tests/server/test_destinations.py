"""Destinations between two real servers, with real PAM logins (root and test users)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc import aio

from jetstream.app import Server
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import auth_pb2, auth_pb2_grpc, destinations_pb2, destinations_pb2_grpc
from tests.support.servers import serve
from tests.system.users import ADMIN, ALICE, BOB, PASSWORDS, require_root

D = destinations_pb2


@pytest.fixture(autouse=True)
def _root():
    require_root(users=True)


async def login(server: Server, user: str) -> tuple[aio.Channel, tuple[tuple[str, str], ...]]:
    channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
    reply = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(username=user, password=PASSWORDS[user])
    )
    return channel, (("authorization", f"Bearer {reply.session_token}"),)


def to(server: Server, **credentials: object) -> D.Destination:
    return D.Destination(host="127.0.0.1", api_port=server.api_port, display_name="B",
                         **credentials)  # type: ignore[arg-type]


def password(user: str, secret: str | None = None) -> D.PasswordCredentials:
    return D.PasswordCredentials(username=user, password=secret or PASSWORDS[user])


async def expect(code: grpc.StatusCode, call) -> str:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details()


def test_destination_lifecycle_and_visibility(tmp_path):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            a = await serve(stack, tmp_path / "a")
            b = await serve(stack, tmp_path / "b")
            channel, alice = await login(a, ALICE)
            stack.push_async_callback(channel.close)
            stub = destinations_pb2_grpc.DestinationServiceStub(channel)

            created = (await stub.CreateDestination(
                D.CreateDestinationRequest(destination=to(b, password=password(ALICE)),
                                           destination_id="site-b"),
                metadata=alice)).destination
            assert created.name == "destinations/site-b"
            assert created.owner == ALICE and created.username == ALICE
            assert created.pinned_server_uid == b.db.get_meta("server_uid").decode()
            pem = (tmp_path / "b" / "api-tls.crt").read_bytes()
            from jetstream.tls import certificate_fingerprint
            assert created.pinned_tls_certificate_sha256 == certificate_fingerprint(pem)
            assert not created.HasField("password") and not created.api_token_secret

            tested = await stub.TestDestination(D.TestDestinationRequest(name=created.name),
                                                metadata=alice)
            assert tested.reachable and tested.identity_verified and tested.authenticated
            assert tested.remote_principal.username == ALICE
            assert tested.remote_server_info.server_uid == created.pinned_server_uid

            await expect(grpc.StatusCode.ALREADY_EXISTS, stub.CreateDestination(
                D.CreateDestinationRequest(destination=to(b, password=password(ALICE)),
                                           destination_id="site-b"), metadata=alice))

            renamed = (await stub.UpdateDestination(D.UpdateDestinationRequest(
                destination=D.Destination(name=created.name, display_name="Site B",
                                          max_rate_bps=10**9),
                update_mask=FieldMask(paths=["display_name"])), metadata=alice)).destination
            assert renamed.display_name == "Site B" and renamed.max_rate_bps == 0
            await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.UpdateDestination(
                D.UpdateDestinationRequest(destination=D.Destination(name=created.name),
                                           update_mask=FieldMask(paths=["owner"])),
                metadata=alice))

            bob_channel, bob = await login(a, BOB)
            stack.push_async_callback(bob_channel.close)
            bob_stub = destinations_pb2_grpc.DestinationServiceStub(bob_channel)
            await expect(grpc.StatusCode.NOT_FOUND,
                         bob_stub.GetDestination(D.GetDestinationRequest(name=created.name),
                                                 metadata=bob))
            assert not (await bob_stub.ListDestinations(D.ListDestinationsRequest(),
                                                        metadata=bob)).destinations
            await expect(grpc.StatusCode.PERMISSION_DENIED, bob_stub.ListDestinations(
                D.ListDestinationsRequest(owner="-"), metadata=bob))

            admin_channel, admin = await login(a, ADMIN)
            stack.push_async_callback(admin_channel.close)
            admin_stub = destinations_pb2_grpc.DestinationServiceStub(admin_channel)
            everyone = await admin_stub.ListDestinations(D.ListDestinationsRequest(owner="-"),
                                                         metadata=admin)
            assert [d.name for d in everyone.destinations] == [created.name]

            await stub.DeleteDestination(D.DeleteDestinationRequest(name=created.name),
                                         metadata=alice)
            await expect(grpc.StatusCode.NOT_FOUND, stub.GetDestination(
                D.GetDestinationRequest(name=created.name), metadata=alice))

    asyncio.run(main())


def test_bad_credentials_and_pins_are_refused(tmp_path):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            a = await serve(stack, tmp_path / "a")
            b = await serve(stack, tmp_path / "b")
            channel, alice = await login(a, ALICE)
            stack.push_async_callback(channel.close)
            stub = destinations_pb2_grpc.DestinationServiceStub(channel)

            def create(destination: D.Destination):
                return stub.CreateDestination(D.CreateDestinationRequest(destination=destination),
                                              metadata=alice)

            await expect(grpc.StatusCode.UNAUTHENTICATED,
                         create(to(b, password=password(ALICE, "wrong"))))
            details = await expect(grpc.StatusCode.PERMISSION_DENIED, create(to(
                b, password=password(ALICE), pinned_tls_certificate_sha256=b"\1" * 32)))
            assert "certificate" in details and "changed" in details
            await expect(grpc.StatusCode.PERMISSION_DENIED, create(to(
                b, password=password(ALICE), pinned_server_uid="not-this-one")))
            await expect(grpc.StatusCode.INVALID_ARGUMENT, create(to(b)))
            await expect(grpc.StatusCode.INVALID_ARGUMENT,
                         create(D.Destination(host="bad host", password=password(ALICE))))
            await expect(grpc.StatusCode.FAILED_PRECONDITION,
                         create(to(b, password=password(ALICE), plaintext=True)))
            port = b.api_port
            await b.stop()
            stack.pop_all()  # b is stopped already; a's callbacks are re-registered below
            stack.push_async_callback(a.stop)
            stack.push_async_callback(channel.close)
            details = await expect(grpc.StatusCode.UNAVAILABLE, create(
                D.Destination(host="127.0.0.1", api_port=port, password=password(ALICE))))
            assert f"127.0.0.1:{port}" in details

    asyncio.run(main())
