"""WatchService's rules with real servers: who may do what, refused input, sandbox views,
and KEEP: each version of a file sent once, also across a restart."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc import aio

from jetstream.app import start_server
from jetstream.v1 import auth_pb2, auth_pb2_grpc, watches_pb2, watches_pb2_grpc
from tests.support.servers import serve, server_config
from tests.system.users import ADMIN, ALICE, BOB, require_root
from tests.transfers.helpers import Api, destination_to, linked_pair, login, owned_dir, remove
from tests.watches.test_watch_delivery import Arrivals, until

W = watches_pb2


async def expect(code: grpc.StatusCode, call, text: str = "") -> None:
    with pytest.raises(aio.AioRpcError) as failed:
        await call
    assert failed.value.code() == code, failed.value.details()
    assert text in (failed.value.details() or "")


def stub(api: Api) -> watches_pb2_grpc.WatchServiceStub:
    return watches_pb2_grpc.WatchServiceStub(api.channel)


async def token(api: Api, **fields) -> Api:
    reply = await auth_pb2_grpc.AuthServiceStub(api.channel).CreateApiToken(
        auth_pb2.CreateApiTokenRequest(api_token=auth_pb2.ApiToken(
            ttl=Duration(seconds=600), **fields)), metadata=api.auth)
    return Api(api.channel, (("authorization", f"Bearer {reply.secret}"),))


def test_who_may_do_what_and_refused_input(tmp_path, dirs):
    require_root(users=True)
    src, dst = dirs
    (src / "inner").mkdir()

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, alice, destination = await linked_pair(stack, tmp_path, ALICE)
            bob, admin = await login(stack, a, BOB), await login(stack, a, ADMIN)
            await destination_to(bob, b, BOB, "bobs")  # not alice's: she may not use it

            def create(api: Api, folder: Path = src, dest: str = destination, **fields):
                return stub(api).CreateWatch(W.CreateWatchRequest(watch=W.Watch(
                    folder=str(folder), destination=dest, destination_path=str(dst), **fields)),
                    metadata=api.auth)

            INVALID, DENIED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED
            PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
            await expect(INVALID, create(alice, settle_time=Duration(seconds=7200)),
                         "settle_time")
            await expect(INVALID, create(alice, after_delivery=W.AFTER_DELIVERY_MOVE),
                         "move_to is required")
            await expect(INVALID, create(alice, after_delivery=W.AFTER_DELIVERY_MOVE,
                                         move_to=str(src / "inner")), "outside the watched")
            await expect(INVALID, create(alice, exclude=["[a-"]), "unclosed")
            await expect(INVALID, create(alice, folder=Path("/")), "not its root")
            await expect(grpc.StatusCode.NOT_FOUND, create(alice, folder=src / "nope"))
            await expect(PRECONDITION, create(alice, folder=Path("/etc/hostname")),
                         "not a directory")
            await expect(grpc.StatusCode.NOT_FOUND, create(alice, dest="destinations/bobs"))
            await expect(PRECONDITION, create(admin, dest="destinations/bobs"),
                         "your own destinations")
            read_only = await token(alice, read_only=True)
            await expect(DENIED, create(read_only), "read-only")
            narrow = await token(alice, allowed_paths=[str(dst)])
            await expect(DENIED, create(narrow), "outside the paths")

            made = (await create(alice, after_delivery=W.AFTER_DELIVERY_DELETE)).watch
            await expect(PRECONDITION, create(alice, folder=src / "inner"), "would race")
            await expect(grpc.StatusCode.NOT_FOUND, stub(bob).GetWatch(
                W.GetWatchRequest(name=made.name), metadata=bob.auth))
            await expect(DENIED, stub(bob).ListWatches(W.ListWatchesRequest(owner="-"),
                                                       metadata=bob.auth))
            assert [w.name for w in (await stub(admin).ListWatches(
                W.ListWatchesRequest(owner="-"), metadata=admin.auth)).watches] == [made.name]
            assert (await stub(read_only).GetWatch(W.GetWatchRequest(name=made.name),
                                                   metadata=read_only.auth)).watch.owner == ALICE
            await expect(DENIED, stub(read_only).DeleteWatch(
                W.DeleteWatchRequest(name=made.name), metadata=read_only.auth))
            await expect(INVALID, stub(alice).GetWatch(W.GetWatchRequest(name="hot"),
                                                       metadata=alice.auth))
            await stub(alice).DeleteWatch(W.DeleteWatchRequest(name=made.name),
                                          metadata=alice.auth)
            await expect(grpc.StatusCode.NOT_FOUND, stub(alice).GetWatch(
                W.GetWatchRequest(name=made.name), metadata=alice.auth))

    asyncio.run(main())


def test_keep_sends_each_version_once_also_across_a_restart(tmp_path, dirs):
    """In a sandbox view: the folder is named as alice sees it; kept files are remembered."""
    require_root(users=True)
    src, dst = dirs
    base = owned_dir(ALICE, "js-sandbox-")
    (base / "out").mkdir()
    os.chown(base / "out", base.stat().st_uid, base.stat().st_gid)
    arrivals = Arrivals()
    state = tmp_path / "a"

    async def main() -> None:
        async with AsyncExitStack() as stack:
            b = await serve(stack, tmp_path / "b")
            b.events.subscribe(arrivals)
            config = server_config(state, sandbox_dir=[str(base)])
            a = await start_server(config)
            try:
                alice = await login(stack, a, ALICE)
                destination = await destination_to(alice, b, ALICE)
                made = (await stub(alice).CreateWatch(W.CreateWatchRequest(watch=W.Watch(
                    folder="/out", destination=destination, destination_path=str(dst),
                    settle_time=Duration(nanos=200_000_000))), metadata=alice.auth)).watch
                assert made.folder == "/out" and made.local_path == str(base / "out")
                (base / "out" / "one.txt").write_text("first version\n")
                await until(lambda: arrivals.count["one.txt"] == 1, 30, "one.txt")
                await asyncio.sleep(1.0)
                assert arrivals.count["one.txt"] == 1  # kept, and not sent again
                (base / "out" / "one.txt").write_text("second version, longer\n")
                await until(lambda: arrivals.count["one.txt"] == 2, 30, "the new version")
                assert (dst / "one.txt").read_text() == "second version, longer\n"
            finally:
                await a.stop()
            (base / "out" / "two.txt").write_text("written while the server was down\n")
            a = await start_server(config)
            try:
                alice = await login(stack, a, ALICE)
                await until(lambda: arrivals.count["two.txt"] == 1, 30, "two.txt")
                await asyncio.sleep(1.0)
                assert dict(arrivals.count) == {"one.txt": 2, "two.txt": 1}
                shown = (await stub(alice).GetWatch(W.GetWatchRequest(name=made.name),
                                                    metadata=alice.auth)).watch
                assert shown.stats.files_delivered == 3 and shown.stats.transfer_count == 3
                assert sorted(os.listdir(base / "out")) == ["one.txt", "two.txt"]
            finally:
                await a.stop()

    try:
        asyncio.run(main())
    finally:
        remove(base)
