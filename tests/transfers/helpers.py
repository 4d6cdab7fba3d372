"""Two real servers in one event loop, a logged-in user on each, and a tree to send."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from grpc import aio

from jetstream.app import Server
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    destinations_pb2,
    destinations_pb2_grpc,
    manifests_pb2,
    manifests_pb2_grpc,
    transfers_pb2,
    transfers_pb2_grpc,
)
from tests.support.servers import serve
from tests.system.users import PASSWORDS


@dataclass
class Api:
    channel: aio.Channel
    auth: tuple[tuple[str, str], ...]

    @property
    def destinations(self) -> destinations_pb2_grpc.DestinationServiceStub:
        return destinations_pb2_grpc.DestinationServiceStub(self.channel)

    @property
    def manifests(self) -> manifests_pb2_grpc.ManifestServiceStub:
        return manifests_pb2_grpc.ManifestServiceStub(self.channel)

    @property
    def transfers(self) -> transfers_pb2_grpc.TransferServiceStub:
        return transfers_pb2_grpc.TransferServiceStub(self.channel)


async def start(stack: AsyncExitStack, state: Path, *extra: tuple[str, object]) -> Server:
    return await serve(stack, state, **dict(extra))


def _port(server: Server | int) -> int:
    return server if isinstance(server, int) else server.api_port


async def login(stack: AsyncExitStack, server: Server | int, user: str) -> Api:
    """A session at a server (in-process, or a process given by its API port)."""
    channel, _ = await open_aio_channel(Endpoint("127.0.0.1", _port(server)))
    stack.push_async_callback(channel.close)
    reply = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(username=user, password=PASSWORDS[user]))
    return Api(channel, (("authorization", f"Bearer {reply.session_token}"),))


async def destination_to(api: Api, target: Server | int, user: str, name: str = "dest",
                         udp_port: int = 0) -> str:
    """`udp_port`: where the data goes instead of the target's receive port (a relay)."""
    reply = await api.destinations.CreateDestination(destinations_pb2.CreateDestinationRequest(
        destination=destinations_pb2.Destination(
            host="127.0.0.1", api_port=_port(target), udp_port=udp_port,
            password=destinations_pb2.PasswordCredentials(username=user,
                                                          password=PASSWORDS[user])),
        destination_id=name), metadata=api.auth)
    return reply.destination.name


class Linked(NamedTuple):
    a: Server
    b: Server
    api: Api
    """A session of `user` at A."""
    destination: str
    """B, as A's destination, logged in as `user`."""


async def linked_pair(stack: AsyncExitStack, state: Path, user: str,
                      *b_extra: tuple[str, object]) -> Linked:
    """Server A and server B (`b_extra`: B's settings) in this process, A sending to B."""
    a = await start(stack, state / "a")
    b = await start(stack, state / "b", *b_extra)
    api = await login(stack, a, user)
    return Linked(a, b, api, await destination_to(api, b, user))


async def manifest_of(api: Api, source: Path, dest: str = "") -> str:
    M = manifests_pb2
    made = await api.manifests.CreateManifest(M.CreateManifestRequest(manifest=M.Manifest(
        spec=M.ManifestSpec(mappings=[M.FileMapping(source_path=str(source),
                                                    destination_path=dest)]))),
        metadata=api.auth)
    done = await api.manifests.WaitManifest(M.WaitManifestRequest(name=made.manifest.name),
                                            metadata=api.auth, timeout=60)
    assert done.manifest.state == M.MANIFEST_STATE_COMPLETE, done.manifest.error.message
    return done.manifest.name


async def push(api: Api, destination: str, manifest: str, path: str,
               **fields: object) -> transfers_pb2.Transfer:
    T = transfers_pb2
    created = await api.transfers.CreateTransfer(T.CreateTransferRequest(transfer=T.Transfer(
        destination=destination, manifest=manifest, destination_path=path, **fields)),
        metadata=api.auth)
    return created.transfer


async def wait_terminal(api: Api, name: str, timeout: float = 120) -> transfers_pb2.Transfer:
    T = transfers_pb2
    last = None
    async for update in api.transfers.WatchTransfer(T.WatchTransferRequest(name=name),
                                                    metadata=api.auth, timeout=timeout):
        last = update.transfer
    assert last is not None
    assert last.state in (common_pb2.TRANSFER_STATE_COMPLETED, common_pb2.TRANSFER_STATE_FAILED,
                          common_pb2.TRANSFER_STATE_CANCELLED), last
    return last


async def until(api: Api, name: str, predicate: Callable[[transfers_pb2.Transfer], bool],
                timeout: float = 60) -> transfers_pb2.Transfer:
    async with asyncio.timeout(timeout):
        async for update in api.transfers.WatchTransfer(
                transfers_pb2.WatchTransferRequest(name=name), metadata=api.auth):
            if predicate(update.transfer):
                return update.transfer
    raise AssertionError("condition not reached")


def owned_dir(user: str, prefix: str) -> Path:
    """A fresh directory owned by `user` that every user can traverse to."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    entry = pwd.getpwnam(user)
    os.chown(base, entry.pw_uid, entry.pw_gid)
    return base


def chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for path in [root, *root.rglob("*")]:
        os.lchown(path, entry.pw_uid, entry.pw_gid)


def tree_digest(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Relative path -> (kind, mode, mtime_ns, sha256) for comparing two trees."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = ("dir", 0, 0, "")
        else:
            out[rel] = ("file", info.st_mode & 0o777, info.st_mtime_ns,
                        hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def remove(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def write_random_file(path: Path, size: int, owner: str) -> Path:
    """`size` random bytes (a multiple of 1 MiB) at `path`, its directory given to `owner`."""
    with path.open("wb") as out:
        for _ in range(size >> 20):
            out.write(os.urandom(1 << 20))
    chown_tree(path.parent, owner)
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()
