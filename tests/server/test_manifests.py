"""Manifests scanned as the logged-in user, on a real server with real PAM logins."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc import aio

from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import auth_pb2, auth_pb2_grpc, common_pb2, manifests_pb2, manifests_pb2_grpc
from tests.support.servers import serve
from tests.system.users import ALICE, BOB, PASSWORDS, require_root

M = manifests_pb2


@pytest.fixture
def tree():
    """A tree owned by alice, in a directory every user can traverse."""
    require_root(users=True)
    base = Path(tempfile.mkdtemp(prefix="js-manifest-", dir="/tmp"))
    base.chmod(0o755)
    src = base / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.bin").write_bytes(b"a" * 1000)
    (src / "run.sh").write_bytes(b"#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "skip.tmp").write_bytes(b"x")
    (src / "sub" / "b.bin").write_bytes(b"b" * 2000)
    (src / "sub" / "deeper" / "c.bin").write_bytes(b"")
    os.symlink("/etc/passwd", src / "link")
    alice = pwd.getpwnam(ALICE)
    for path in [src, *src.rglob("*")]:
        os.lchown(path, alice.pw_uid, alice.pw_gid)
    yield src
    shutil.rmtree(base)


async def session(stack: AsyncExitStack, tmp_path, user: str):
    server = await serve(stack, tmp_path / "state")
    channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
    stack.push_async_callback(channel.close)
    token = (await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(username=user, password=PASSWORDS[user]))).session_token
    return manifests_pb2_grpc.ManifestServiceStub(channel), (("authorization", f"Bearer {token}"),)


def spec(source: Path, dest: str = "", **kw) -> M.ManifestSpec:
    return M.ManifestSpec(mappings=[M.FileMapping(source_path=str(source),
                                                  destination_path=dest)], **kw)


def test_manifest_of_a_tree(tmp_path, tree):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            stub, auth = await session(stack, tmp_path, ALICE)
            created = (await stub.CreateManifest(M.CreateManifestRequest(
                manifest=M.Manifest(spec=spec(tree, "out", exclude_patterns=["*.tmp"])),
                manifest_id="m1"), metadata=auth)).manifest
            assert created.name == "manifests/m1"
            done = (await stub.WaitManifest(M.WaitManifestRequest(name=created.name),
                                            metadata=auth, timeout=30)).manifest
            assert done.state == M.MANIFEST_STATE_COMPLETE, done.error.message
            assert (done.file_count, done.dir_count, done.total_bytes) == (4, 4, 3010)
            assert done.skipped_count == 1  # the symlink
            pages, token = [], ""
            while True:
                page = await stub.ListManifestFiles(M.ListManifestFilesRequest(
                    parent=created.name, page_size=3, page_token=token), metadata=auth)
                pages.append([f.destination_path for f in page.files])
                token = page.next_page_token
                if not token:
                    break
            assert [len(p) for p in pages] == [3, 3, 2]
            ordered = [path for p in pages for path in p]
            assert ordered == sorted(ordered)
            every = {f.destination_path: f for f in (await stub.ListManifestFiles(
                M.ListManifestFilesRequest(parent=created.name), metadata=auth)).files}
            assert set(every) == {"out", "out/a.bin", "out/run.sh", "out/empty", "out/sub",
                                  "out/sub/b.bin", "out/sub/deeper", "out/sub/deeper/c.bin"}
            assert every["out/run.sh"].mode == 0o755
            assert every["out/sub"].kind == common_pb2.FILE_KIND_DIRECTORY
            assert every["out/a.bin"].source_path == str(tree / "a.bin")
            listed = await stub.ListManifests(M.ListManifestsRequest(), metadata=auth)
            assert [m.name for m in listed.manifests] == ["manifests/m1"]

    asyncio.run(main())


def test_unreadable_source_ends_in_error_and_others_cannot_see(tmp_path, tree):
    secret = tree / "secret"
    secret.mkdir(mode=0o700)
    (secret / "x").write_bytes(b"x")  # owned by root: alice may not enter

    async def main() -> None:
        async with AsyncExitStack() as stack:
            stub, auth = await session(stack, tmp_path, ALICE)
            made = (await stub.CreateManifest(M.CreateManifestRequest(
                manifest=M.Manifest(spec=spec(tree))), metadata=auth)).manifest
            done = (await stub.WaitManifest(M.WaitManifestRequest(name=made.name),
                                            metadata=auth, timeout=30)).manifest
            assert done.state == M.MANIFEST_STATE_ERROR
            assert "permission denied" in done.error.message
            with pytest.raises(aio.AioRpcError) as info:
                await stub.ListManifestFiles(M.ListManifestFilesRequest(parent=made.name),
                                             metadata=auth)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    asyncio.run(main())


@pytest.mark.parametrize(
    ("mapping", "code"),
    [
        (M.FileMapping(source_path="/x/../etc"), grpc.StatusCode.INVALID_ARGUMENT),
        (M.FileMapping(source_path="/tmp", destination_path="../up"),
         grpc.StatusCode.INVALID_ARGUMENT),
        (M.FileMapping(source_path="a\0b"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_specs_are_refused(tmp_path, mapping, code):
    require_root(users=True)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            stub, auth = await session(stack, tmp_path, BOB)
            with pytest.raises(aio.AioRpcError) as info:
                await stub.CreateManifest(M.CreateManifestRequest(manifest=M.Manifest(
                    spec=M.ManifestSpec(mappings=[mapping]))), metadata=auth)
            assert info.value.code() == code

    asyncio.run(main())
