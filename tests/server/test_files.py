"""FileService on a real server with real PAM logins: the caller's view, their rights, their
token's limits (root, with the test users)."""

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
from google.protobuf.duration_pb2 import Duration
from grpc import aio

from jetstream.api import paging
from jetstream.app import Server
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    files_pb2,
    files_pb2_grpc,
    manifests_pb2,
    manifests_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)
from tests.support.servers import serve
from tests.system.users import ADMIN, ALICE, BOB, PASSWORDS, require_root

F = files_pb2
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def base():
    """A directory every test user can traverse, removed afterwards."""
    require_root(users=True)
    path = Path(tempfile.mkdtemp(prefix="js-files-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def owned(path: Path, user: str) -> Path:
    entry = pwd.getpwnam(user)
    os.lchown(path, entry.pw_uid, entry.pw_gid)
    return path


async def login(stack: AsyncExitStack, server: Server, user: str) -> tuple[aio.Channel, Metadata]:
    channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
    stack.push_async_callback(channel.close)
    reply = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(username=user, password=PASSWORDS[user]))
    return channel, (("authorization", f"Bearer {reply.session_token}"),)


async def expect(code: grpc.StatusCode, call) -> str:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details()


async def names(stub, auth: Metadata, path: str, **kw) -> list[str]:
    reply = await stub.ListDirectory(F.ListDirectoryRequest(path=path, **kw), metadata=auth)
    return [e.name for e in reply.entries]


def test_browsing_and_changing_files_as_the_user(tmp_path, base):
    home = base / "alice"
    home.mkdir()
    owned(home, ALICE)
    for name, data in (("a.txt", b"0123456789"), ("b.txt", b"b"), (".hidden", b"h")):
        (home / name).write_bytes(data)
        owned(home / name, ALICE)
    (home / "sub").mkdir()
    (home / "sub" / "f").write_bytes(b"f")
    (home / "link").symlink_to("a.txt")
    (home / "out").symlink_to("/etc/passwd")
    (base / "rootonly").mkdir(mode=0o700)
    h = str(home)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state")
            channel, alice = await login(stack, server, ALICE)
            stub = files_pb2_grpc.FileServiceStub(channel)

            pages, token = [], ""
            while True:
                reply = await stub.ListDirectory(
                    F.ListDirectoryRequest(path=h, page_size=2, page_token=token), metadata=alice)
                pages.append([e.name for e in reply.entries])
                token = reply.next_page_token
                if not token:
                    break
            assert pages == [["a.txt", "b.txt"], ["link", "out"], ["sub"]]
            assert await names(stub, alice, h, show_hidden=True) == [
                ".hidden", "a.txt", "b.txt", "link", "out", "sub"]
            listed = (await stub.ListDirectory(F.ListDirectoryRequest(path=h), metadata=alice))
            first = listed.entries[0]
            assert (first.path, first.kind, first.size_bytes) == (
                f"{h}/a.txt", common_pb2.FILE_KIND_FILE, 10)
            assert (first.owner, first.mode) == (ALICE, 0o644)
            assert listed.entries[-1].kind == common_pb2.FILE_KIND_DIRECTORY
            assert listed.entries[-1].size_bytes == 0
            await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.ListDirectory(
                F.ListDirectoryRequest(path=f"{h}/sub", page_token=_token_for(h)),
                metadata=alice))

            link = (await stub.Stat(F.StatRequest(path=f"{h}/link"), metadata=alice)).file_info
            assert (link.kind, link.symlink_target) == (common_pb2.FILE_KIND_SYMLINK, "a.txt")
            followed = (await stub.Stat(F.StatRequest(path=f"{h}/link", follow_symlinks=True),
                                        metadata=alice)).file_info
            assert (followed.path, followed.kind, followed.size_bytes) == (
                f"{h}/link", common_pb2.FILE_KIND_FILE, 10)
            passwd = (await stub.Stat(F.StatRequest(path=f"{h}/out", follow_symlinks=True),
                                      metadata=alice)).file_info
            assert passwd.kind == common_pb2.FILE_KIND_FILE and passwd.owner == "root"
            await expect(grpc.StatusCode.NOT_FOUND,
                         stub.Stat(F.StatRequest(path=f"{h}/nope"), metadata=alice))
            await expect(grpc.StatusCode.FAILED_PRECONDITION,
                         stub.ListDirectory(F.ListDirectoryRequest(path=f"{h}/a.txt"),
                                            metadata=alice))

            await expect(grpc.StatusCode.NOT_FOUND, stub.MakeDirectory(
                F.MakeDirectoryRequest(path=f"{h}/new/x/y"), metadata=alice))
            made = (await stub.MakeDirectory(F.MakeDirectoryRequest(
                path=f"{h}/new/x/y", parents=True), metadata=alice)).file_info
            assert (made.name, made.owner, made.kind) == ("y", ALICE,
                                                          common_pb2.FILE_KIND_DIRECTORY)
            assert (home / "new" / "x").stat().st_uid == pwd.getpwnam(ALICE).pw_uid
            await stub.MakeDirectory(F.MakeDirectoryRequest(path=f"{h}/new/x/y", parents=True),
                                     metadata=alice)
            await expect(grpc.StatusCode.ALREADY_EXISTS, stub.MakeDirectory(
                F.MakeDirectoryRequest(path=f"{h}/new/x/y"), metadata=alice))
            await expect(grpc.StatusCode.ALREADY_EXISTS, stub.MakeDirectory(
                F.MakeDirectoryRequest(path=f"{h}/a.txt", parents=True), metadata=alice))

            await expect(grpc.StatusCode.ALREADY_EXISTS, stub.Rename(F.RenameRequest(
                source_path=f"{h}/a.txt", target_path=f"{h}/b.txt"), metadata=alice))
            moved = (await stub.Rename(F.RenameRequest(
                source_path=f"{h}/a.txt", target_path=f"{h}/new/c.txt"), metadata=alice)
            ).file_info
            assert (moved.path, moved.size_bytes) == (f"{h}/new/c.txt", 10)
            await stub.Rename(F.RenameRequest(source_path=f"{h}/new/c.txt",
                                              target_path=f"{h}/b.txt", overwrite=True),
                              metadata=alice)
            assert (home / "b.txt").read_bytes() == b"0123456789"

            await expect(grpc.StatusCode.FAILED_PRECONDITION,
                         stub.Remove(F.RemoveRequest(path=f"{h}/new"), metadata=alice))
            await stub.Remove(F.RemoveRequest(path=f"{h}/new", recursive=True), metadata=alice)
            await stub.Remove(F.RemoveRequest(path=f"{h}/out"), metadata=alice)
            assert not (home / "new").exists() and not (home / "out").is_symlink()

            # The kernel decides with alice's rights: root's private directory stays closed.
            await expect(grpc.StatusCode.PERMISSION_DENIED, stub.ListDirectory(
                F.ListDirectoryRequest(path=str(base / "rootonly")), metadata=alice))
            await expect(grpc.StatusCode.PERMISSION_DENIED, stub.MakeDirectory(
                F.MakeDirectoryRequest(path=str(base / "mine")), metadata=alice))
            await expect(grpc.StatusCode.PERMISSION_DENIED, stub.Remove(
                F.RemoveRequest(path=str(base / "rootonly")), metadata=alice))
            await expect(grpc.StatusCode.INVALID_ARGUMENT, stub.Stat(
                F.StatRequest(path=f"{h}/../alice"), metadata=alice))
            await expect(grpc.StatusCode.UNAUTHENTICATED,
                         stub.Stat(F.StatRequest(path=h)))

    asyncio.run(main())


def _token_for(path: str) -> str:
    """A page token issued for listing `path`."""
    return paging.encode_token("a", {"path": path, "hidden": False})


def test_named_mounts_read_only_resources_and_created_homes(tmp_path, base):
    shared = base / "shared"
    shared.mkdir()
    (shared / "readme").write_text("shared\n")
    mapping = server_pb2.SandboxMapping(user=ALICE, resources=[
        server_pb2.SandboxResource(mount="home", path=f"{base}/homes/%u", create=True),
        server_pb2.SandboxResource(mount="shared", path=str(shared), read_only=True),
    ])

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state")
            admin_channel, admin = await login(stack, server, ADMIN)
            await server_pb2_grpc.ServerServiceStub(admin_channel).SetSandboxMapping(
                server_pb2.SetSandboxMappingRequest(sandbox_mapping=mapping), metadata=admin)
            channel, alice = await login(stack, server, ALICE)
            stub = files_pb2_grpc.FileServiceStub(channel)

            top = await stub.ListDirectory(F.ListDirectoryRequest(path="/"), metadata=alice)
            assert [(e.path, e.kind) for e in top.entries] == [
                ("/home", common_pb2.FILE_KIND_DIRECTORY),
                ("/shared", common_pb2.FILE_KIND_DIRECTORY)]
            created = base / "homes" / ALICE
            info = created.stat()
            assert (info.st_uid, info.st_mode & 0o777) == (pwd.getpwnam(ALICE).pw_uid, 0o700)
            assert top.entries[0].owner == ALICE
            root = (await stub.Stat(F.StatRequest(path=""), metadata=alice)).file_info
            assert (root.name, root.kind) == ("/", common_pb2.FILE_KIND_DIRECTORY)
            assert await names(stub, alice, "/shared") == ["readme"]

            await stub.MakeDirectory(F.MakeDirectoryRequest(path="/home/proj"), metadata=alice)
            assert (created / "proj").is_dir()
            details = await expect(grpc.StatusCode.PERMISSION_DENIED, stub.MakeDirectory(
                F.MakeDirectoryRequest(path="/shared/x"), metadata=alice))
            assert "read-only" in details
            await expect(grpc.StatusCode.PERMISSION_DENIED, stub.Rename(F.RenameRequest(
                source_path="/home/proj", target_path="/shared/proj"), metadata=alice))
            await expect(grpc.StatusCode.PERMISSION_DENIED, stub.MakeDirectory(
                F.MakeDirectoryRequest(path="/elsewhere"), metadata=alice))
            await expect(grpc.StatusCode.NOT_FOUND,
                         stub.Stat(F.StatRequest(path="/elsewhere"), metadata=alice))
            for path in ("/", "/home"):
                await expect(grpc.StatusCode.FAILED_PRECONDITION,
                             stub.Remove(F.RemoveRequest(path=path, recursive=True),
                                         metadata=alice))
            await expect(grpc.StatusCode.FAILED_PRECONDITION, stub.Rename(F.RenameRequest(
                source_path="/home", target_path="/home2"), metadata=alice))
            await expect(grpc.StatusCode.ALREADY_EXISTS, stub.MakeDirectory(
                F.MakeDirectoryRequest(path="/home"), metadata=alice))

            # Links: followed within the sandbox, refused out of it.
            os.symlink("proj", created / "in")
            os.symlink("/etc", created / "esc")
            os.symlink("../../shared/readme", created / "up")
            followed = (await stub.Stat(F.StatRequest(path="/home/in", follow_symlinks=True),
                                        metadata=alice)).file_info
            assert followed.kind == common_pb2.FILE_KIND_DIRECTORY
            for path in ("/home/esc", "/home/up"):
                await expect(grpc.StatusCode.PERMISSION_DENIED, stub.Stat(
                    F.StatRequest(path=path, follow_symlinks=True), metadata=alice))
            await expect(grpc.StatusCode.PERMISSION_DENIED, stub.ListDirectory(
                F.ListDirectoryRequest(path="/home/esc"), metadata=alice))

            # Bob has no mapping: the whole file system, with his rights.
            bob_channel, bob = await login(stack, server, BOB)
            bob_stub = files_pb2_grpc.FileServiceStub(bob_channel)
            assert "etc" in await names(bob_stub, bob, "/")

    asyncio.run(main())


def test_api_token_allowed_paths_and_read_only(tmp_path, base):
    home = base / "alice"
    home.mkdir()
    owned(home, ALICE)
    (home / "proj").mkdir()
    (home / "proj" / "data.bin").write_bytes(b"d" * 100)
    (home / "other").mkdir()
    for path in home.rglob("*"):
        owned(path, ALICE)
    proj = f"{home}/proj"

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state")
            channel, session = await login(stack, server, ALICE)
            created = await auth_pb2_grpc.AuthServiceStub(channel).CreateApiToken(
                auth_pb2.CreateApiTokenRequest(api_token=auth_pb2.ApiToken(
                    ttl=Duration(seconds=600), allowed_paths=[proj], read_only=True)),
                metadata=session)
            token = (("authorization", f"Bearer {created.secret}"),)
            stub = files_pb2_grpc.FileServiceStub(channel)

            assert await names(stub, token, proj) == ["data.bin"]
            await stub.Stat(F.StatRequest(path=f"{proj}/data.bin"), metadata=token)
            for path in (str(home), f"{home}/other", f"{home}/projects", "/"):
                details = await expect(grpc.StatusCode.PERMISSION_DENIED, stub.ListDirectory(
                    F.ListDirectoryRequest(path=path), metadata=token))
                assert "outside the paths" in details
            for call in (
                stub.MakeDirectory(F.MakeDirectoryRequest(path=f"{proj}/x"), metadata=token),
                stub.Remove(F.RemoveRequest(path=f"{proj}/data.bin"), metadata=token),
                stub.Rename(F.RenameRequest(source_path=f"{proj}/data.bin",
                                            target_path=f"{proj}/d2"), metadata=token),
            ):
                assert "read-only" in await expect(grpc.StatusCode.PERMISSION_DENIED, call)
            # The same check guards manifests (and transfers).
            manifests = manifests_pb2_grpc.ManifestServiceStub(channel)
            M = manifests_pb2

            def spec(path: str) -> M.ManifestSpec:
                return M.ManifestSpec(mappings=[M.FileMapping(source_path=path)])

            await expect(grpc.StatusCode.PERMISSION_DENIED, manifests.CreateManifest(
                M.CreateManifestRequest(manifest=M.Manifest(spec=spec(f"{home}/other"))),
                metadata=token))
            made = (await manifests.CreateManifest(M.CreateManifestRequest(
                manifest=M.Manifest(spec=spec(proj))), metadata=token)).manifest
            done = (await manifests.WaitManifest(M.WaitManifestRequest(name=made.name),
                                                 metadata=token, timeout=30)).manifest
            assert (done.state, done.file_count) == (M.MANIFEST_STATE_COMPLETE, 1)
            # The session itself is not limited.
            assert await names(stub, session, str(home)) == ["other", "proj"]

    asyncio.run(main())
