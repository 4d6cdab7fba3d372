"""`jetstream demo`: two servers on loopback, one real transfer, verified, timed.

Nothing is faked: both servers are complete (TLS API, state database, data channel) with
temporary state directories; the sending server holds a destination for the receiving one
with an API token that root obtained over the receiver's local socket (the kernel vouches
for root there, so no password is needed), and the files cross the real data channel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from grpc import aio

from jetstream.app import Server, start_server
from jetstream.config import load_config
from jetstream.errors import FailedPrecondition, Unavailable
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


@dataclass(frozen=True)
class DemoResult:
    files: int
    bytes: int
    seconds: float
    identical: bool

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / self.seconds / 1e6


def make_tree(root: Path, *, big_bytes: int, small_files: int) -> None:
    """One large file and many small ones: the two workloads that matter."""
    (root / "small").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    with (root / "large.bin").open("wb") as out:
        left = big_bytes
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            out.write(chunk)
            left -= len(chunk)
    for i in range(small_files):
        (root / "small" / f"file-{i:05d}.dat").write_bytes(os.urandom(4096 + i % 4096))


def tree_digest(root: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digests[str(path.relative_to(root))] = "dir"
    return digests


async def _server(stack: AsyncExitStack, base: Path, name: str) -> Server:
    config = load_config(
        {"api_port": 0, "recv_port": [0], "disable_telemetry": True,
         "persistent_state_dir": str(base / name / "state"),
         "api_socket": str(base / name / "api.sock"), "log_level": "WARNING"},
        env={}, config_file=None,
    )
    server = await start_server(config)
    stack.push_async_callback(server.stop)
    return server


async def _local(stack: AsyncExitStack, server: Server) -> aio.Channel:
    if server.config.api_socket is None or not server.config.api_socket.exists():
        raise Unavailable("the demo needs the local API socket (run it as root)")
    channel = aio.insecure_channel(f"unix:{server.config.api_socket}")
    stack.push_async_callback(channel.close)
    return channel


async def run_demo(*, big_bytes: int, small_files: int, workdir: Path | None = None,
                   progress: bool = True) -> DemoResult:
    base = Path(tempfile.mkdtemp(prefix="jetstream-demo-", dir=workdir))
    try:
        source, target = base / "source", base / "received"
        make_tree(source, big_bytes=big_bytes, small_files=small_files)
        target.mkdir()
        async with AsyncExitStack() as stack:
            sender = await _server(stack, base, "sender")
            receiver = await _server(stack, base, "receiver")
            token = (await auth_pb2_grpc.AuthServiceStub(await _local(stack, receiver))
                     .CreateApiToken(auth_pb2.CreateApiTokenRequest(api_token=auth_pb2.ApiToken(
                         description="jetstream demo", ttl=Duration(seconds=3600))))).secret
            local = await _local(stack, sender)
            destination = (await destinations_pb2_grpc.DestinationServiceStub(local)
                           .CreateDestination(destinations_pb2.CreateDestinationRequest(
                               destination=destinations_pb2.Destination(
                                   host="127.0.0.1", api_port=receiver.api_port,
                                   api_token_secret=token)))).destination
            manifests = manifests_pb2_grpc.ManifestServiceStub(local)
            made = (await manifests.CreateManifest(manifests_pb2.CreateManifestRequest(
                manifest=manifests_pb2.Manifest(spec=manifests_pb2.ManifestSpec(
                    mappings=[manifests_pb2.FileMapping(source_path=str(source),
                                                        destination_path="tree")]))))).manifest
            built = (await manifests.WaitManifest(manifests_pb2.WaitManifestRequest(
                name=made.name), timeout=300)).manifest
            if built.state != manifests_pb2.MANIFEST_STATE_COMPLETE:
                raise FailedPrecondition(f"manifest failed: {built.error.message}")
            transfers = transfers_pb2_grpc.TransferServiceStub(local)
            started = time.monotonic()
            created = (await transfers.CreateTransfer(transfers_pb2.CreateTransferRequest(
                transfer=transfers_pb2.Transfer(destination=destination.name,
                                                manifest=built.name,
                                                destination_path=str(target))))).transfer
            final = created
            async for update in transfers.WatchTransfer(transfers_pb2.WatchTransferRequest(
                    name=created.name)):
                final = update.transfer
                if progress:
                    p = final.progress
                    print(f"\r  {p.bytes_done / 1e6:8.1f} of {p.bytes_total / 1e6:.1f} MB, "
                          f"{p.files_done}/{p.files_total} files, {p.rate_bps / 1e6:7.1f} "
                          "Mbit/s", end="", flush=True)
            seconds = time.monotonic() - started
            if progress:
                print()
            if final.state != common_pb2.TRANSFER_STATE_COMPLETED:
                raise FailedPrecondition(f"the transfer ended {final.status_message}: "
                                         f"{final.error.message}")
        identical = tree_digest(source) == tree_digest(target / "tree")
        return DemoResult(built.file_count + built.dir_count, built.total_bytes, seconds,
                          identical)
    finally:
        shutil.rmtree(base, ignore_errors=True)
