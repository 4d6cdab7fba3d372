"""Sandbox mappings and the event log through ServerService (root, with the test users)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc import aio

from jetstream.app import Server
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)
from tests.support.servers import serve
from tests.system.users import ADMIN, ALICE, BOB, PASSWORDS, require_root

S = server_pb2
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def base():
    require_root(users=True)
    path = Path(tempfile.mkdtemp(prefix="js-mappings-", dir="/tmp"))
    path.chmod(0o755)
    for name in ("all", "alice", "fixed"):
        (path / name).mkdir()
        (path / name / f"in-{name}").write_text(name)
    yield path
    shutil.rmtree(path)


async def login(stack: AsyncExitStack, server: Server, user: str,
                password: str | None = None) -> tuple[aio.Channel, Metadata]:
    channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
    stack.push_async_callback(channel.close)
    reply = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(username=user, password=password or PASSWORDS[user]))
    return channel, (("authorization", f"Bearer {reply.session_token}"),)


async def expect(code: grpc.StatusCode, call) -> str:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details()


def mapping(*resources: tuple[str, str], user: str | None = None, **flags: bool
            ) -> S.SandboxMapping:
    made = S.SandboxMapping(resources=[S.SandboxResource(mount=m, path=p, **flags)
                                       for m, p in resources])
    if user is None:
        made.all_users = True
    else:
        made.user = user
    return made


async def top(channel: aio.Channel, auth: Metadata) -> list[str]:
    reply = await files_pb2_grpc.FileServiceStub(channel).ListDirectory(
        files_pb2.ListDirectoryRequest(path="/"), metadata=auth)
    return [e.name for e in reply.entries]


def test_superusers_manage_mappings_and_changes_apply_at_once(tmp_path, base):
    state = tmp_path / "state"

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, state)
            admin_channel, admin = await login(stack, server, ADMIN)
            stub = server_pb2_grpc.ServerServiceStub(admin_channel)
            alice_channel, alice = await login(stack, server, ALICE)
            alice_stub = server_pb2_grpc.ServerServiceStub(alice_channel)

            for call in (
                alice_stub.ListSandboxMappings(S.ListSandboxMappingsRequest(), metadata=alice),
                alice_stub.SetSandboxMapping(S.SetSandboxMappingRequest(
                    sandbox_mapping=mapping(("", str(base / "alice")), user=ALICE)),
                    metadata=alice),
                alice_stub.DeleteSandboxMapping(S.DeleteSandboxMappingRequest(all_users=True),
                                                metadata=alice),
            ):
                await expect(grpc.StatusCode.PERMISSION_DENIED, call)
            assert "etc" in await top(alice_channel, alice)  # no mapping: everything

            stored = (await stub.SetSandboxMapping(S.SetSandboxMappingRequest(
                sandbox_mapping=mapping(("", str(base / "all")))), metadata=admin)
            ).sandbox_mapping
            assert (stored.name, stored.all_users, stored.fixed) == (
                "sandboxMappings/-", True, False)
            assert stored.update_time.seconds > 0
            assert await top(alice_channel, alice) == ["in-all"]  # the very next call
            await stub.SetSandboxMapping(S.SetSandboxMappingRequest(sandbox_mapping=mapping(
                ("mine", str(base / "alice")), ("common", str(base / "all")), user=ALICE)),
                metadata=admin)
            await stub.SetSandboxMapping(S.SetSandboxMappingRequest(sandbox_mapping=mapping(
                ("", str(base / "all")), user=BOB)), metadata=admin)
            assert await top(alice_channel, alice) == ["common", "mine"]

            listed = await stub.ListSandboxMappings(S.ListSandboxMappingsRequest(page_size=2),
                                                    metadata=admin)
            assert [m.name for m in listed.sandbox_mappings] == [
                "sandboxMappings/-", f"sandboxMappings/{ALICE}"]
            assert [(r.mount, r.path) for r in listed.sandbox_mappings[1].resources] == [
                ("mine", str(base / "alice")), ("common", str(base / "all"))]
            rest = await stub.ListSandboxMappings(S.ListSandboxMappingsRequest(
                page_size=2, page_token=listed.next_page_token), metadata=admin)
            assert [m.name for m in rest.sandbox_mappings] == [f"sandboxMappings/{BOB}"]
            assert rest.next_page_token == ""

            for bad, words in (
                (mapping(("", "relative/%u")), "absolute"),
                (mapping(("x", "/data/%z")), "unknown placeholder"),
                (mapping(("a", "/a"), ("a", "/b")), "share the mount name"),
                (mapping(("a/b", "/a")), "must not contain"),
                (mapping(("", "/a"), ("b", "/b")), "only resource"),
                (mapping(), "at least one"),
                (S.SandboxMapping(resources=[S.SandboxResource(path="/a")]), "subject"),
                (mapping(("", "/a"), user="-"), "user name"),
            ):
                details = await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.SetSandboxMapping(
                    S.SetSandboxMappingRequest(sandbox_mapping=bad), metadata=admin))
                assert words in details, details

            await stub.DeleteSandboxMapping(S.DeleteSandboxMappingRequest(user=ALICE),
                                            metadata=admin)
            assert await top(alice_channel, alice) == ["in-all"]
            await expect(grpc.StatusCode.NOT_FOUND, stub.DeleteSandboxMapping(
                S.DeleteSandboxMappingRequest(user=ALICE), metadata=admin))

        # Stored mappings survive a restart.
        async with AsyncExitStack() as stack:
            server = await serve(stack, state)
            admin_channel, admin = await login(stack, server, ADMIN)
            stub = server_pb2_grpc.ServerServiceStub(admin_channel)
            listed = await stub.ListSandboxMappings(S.ListSandboxMappingsRequest(),
                                                    metadata=admin)
            assert [m.name for m in listed.sandbox_mappings] == [
                "sandboxMappings/-", f"sandboxMappings/{BOB}"]
            bob_channel, bob = await login(stack, server, BOB)
            assert await top(bob_channel, bob) == ["in-all"]
            await stub.DeleteSandboxMapping(S.DeleteSandboxMappingRequest(all_users=True),
                                            metadata=admin)
            await expect(grpc.StatusCode.NOT_FOUND, stub.DeleteSandboxMapping(
                S.DeleteSandboxMappingRequest(all_users=True), metadata=admin))

    asyncio.run(main())


def test_sandbox_dir_is_a_fixed_all_users_mapping(tmp_path, base):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state",
                                 sandbox_dir=[str(base / "fixed"), str(base / "all")])
            admin_channel, admin = await login(stack, server, ADMIN)
            stub = server_pb2_grpc.ServerServiceStub(admin_channel)
            listed = (await stub.ListSandboxMappings(S.ListSandboxMappingsRequest(),
                                                     metadata=admin)).sandbox_mappings
            assert [(m.name, m.fixed) for m in listed] == [("sandboxMappings/-", True)]
            assert [(r.mount, r.path) for r in listed[0].resources] == [
                ("", str(base / "fixed")), (str(base / "all").strip("/"), str(base / "all"))]
            for call in (
                stub.SetSandboxMapping(S.SetSandboxMappingRequest(
                    sandbox_mapping=mapping(("", "/x"))), metadata=admin),
                stub.DeleteSandboxMapping(S.DeleteSandboxMappingRequest(all_users=True),
                                          metadata=admin),
            ):
                await expect(grpc.StatusCode.FAILED_PRECONDITION, call)

            # The first directory is the root of the view; the second appears at its path.
            alice_channel, alice = await login(stack, server, ALICE)
            assert await top(alice_channel, alice) == ["in-fixed", "tmp"]
            files = files_pb2_grpc.FileServiceStub(alice_channel)
            reply = await files.ListDirectory(files_pb2.ListDirectoryRequest(
                path=str(base / "all")), metadata=alice)
            assert [e.name for e in reply.entries] == ["in-all"]
            reply = await files.ListDirectory(files_pb2.ListDirectoryRequest(path="/tmp"),
                                              metadata=alice)
            assert [e.name for e in reply.entries] == [base.name]

            # A per-user mapping still replaces it for that user.
            await stub.SetSandboxMapping(S.SetSandboxMappingRequest(sandbox_mapping=mapping(
                ("", str(base / "alice")), user=ALICE)), metadata=admin)
            assert await top(alice_channel, alice) == ["in-alice"]

    asyncio.run(main())


def test_event_log_records_logins_and_mapping_changes(tmp_path, base):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state")
            with pytest.raises(aio.AioRpcError):
                await login(stack, server, ALICE, "wrong-password-123")
            admin_channel, admin = await login(stack, server, ADMIN)
            alice_channel, alice = await login(stack, server, ALICE)
            stub = server_pb2_grpc.ServerServiceStub(admin_channel)
            await stub.SetSandboxMapping(S.SetSandboxMappingRequest(sandbox_mapping=mapping(
                ("", str(base / "alice")), user=ALICE)), metadata=admin)
            await stub.DeleteSandboxMapping(S.DeleteSandboxMappingRequest(user=ALICE),
                                            metadata=admin)

            every = (await stub.ListEvents(S.ListEventsRequest(owner="-"), metadata=admin)).events
            kinds = [e.type for e in every]
            assert kinds == ["launch", "auth.loginFailed", "auth.login", "auth.login",
                             "sandbox.mappingSet", "sandbox.mappingDeleted"]
            failed = every[1]
            assert (failed.username, failed.severity) == (ALICE, S.EVENT_SEVERITY_WARNING)
            assert "wrong-password" not in str(every)
            assert "127.0.0.1" in failed.message or "ipv" in failed.message
            assert every[4].attributes["resource"] == f"sandboxMappings/{ALICE}"
            assert every[4].username == ALICE and ADMIN in every[4].message
            assert every[0].name.startswith("events/")

            # Pages, newest first, and filters.
            pages, token = [], ""
            while True:
                reply = await stub.ListEvents(S.ListEventsRequest(
                    owner="-", page_size=4, page_token=token, newest_first=True), metadata=admin)
                pages.append([e.type for e in reply.events])
                token = reply.next_page_token
                if not token:
                    break
            assert [t for page in pages for t in page] == kinds[::-1]
            assert [len(p) for p in pages] == [4, 2]
            warnings = await stub.ListEvents(S.ListEventsRequest(
                owner="-", min_severity=S.EVENT_SEVERITY_WARNING), metadata=admin)
            assert [e.type for e in warnings.events] == ["auth.loginFailed"]
            typed = await stub.ListEvents(S.ListEventsRequest(owner="-", type="auth.login"),
                                          metadata=admin)
            assert [e.username for e in typed.events] == [ADMIN, ALICE]
            later = await stub.ListEvents(S.ListEventsRequest(
                owner="-", start_time=every[4].event_time), metadata=admin)
            assert [e.type for e in later.events] == kinds[4:]
            await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.ListEvents(S.ListEventsRequest(
                owner="-", start_time=every[4].event_time, end_time=every[0].event_time),
                metadata=admin))
            await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.ListEvents(S.ListEventsRequest(
                owner="-", page_token=token or "bogus"), metadata=admin))

            # Ordinary users see the events about themselves only.
            alice_stub = server_pb2_grpc.ServerServiceStub(alice_channel)
            own = (await alice_stub.ListEvents(S.ListEventsRequest(), metadata=alice)).events
            assert {e.username for e in own} == {ALICE}
            assert [e.type for e in own] == ["auth.loginFailed", "auth.login",
                                             "sandbox.mappingSet", "sandbox.mappingDeleted"]
            for owner in ("-", ADMIN):
                await expect(grpc.StatusCode.PERMISSION_DENIED, alice_stub.ListEvents(
                    S.ListEventsRequest(owner=owner), metadata=alice))

    asyncio.run(main())
