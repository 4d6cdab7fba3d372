"""Kill -9 either side in the middle of a transfer: it resumes from the last checkpoint."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from jetstream.v1 import common_pb2, transfers_pb2
from tests.support.servers import ServerProcess, unused_tcp_port
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import (
    chown_tree,
    destination_to,
    login,
    manifest_of,
    owned_dir,
    push,
    remove,
    wait_terminal,
)

T = transfers_pb2
SIZE = 1 << 30  # the issue: a 1 GiB file, killed at about 50 %
CHECKPOINT = T.Transfer().checkpoint_interval.__class__(nanos=100_000_000)


def server(tmp_path: Path, name: str) -> ServerProcess:
    port = unused_tcp_port()
    return ServerProcess(
        tmp_path / name,
        ["--api-port", str(port), "--recv-port", "0", "--disable-telemetry",
         "--api-socket", "", "--data-idle-timeout", "3"],
        tmp_path / f"{name}.log",
    )


@pytest.fixture
def dirs():
    require_root(users=True)
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    with (src / "big.bin").open("wb") as out:
        for _ in range(SIZE >> 22):
            out.write(os.urandom(4 << 20))
    chown_tree(src, ALICE)
    yield src, dst
    remove(src, dst)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize("victim", ["receiver", "sender"])
def test_kill_9_midway_resumes_from_checkpoint(tmp_path, dirs, victim):
    src, dst = dirs
    a, b = server(tmp_path, "a").start(), server(tmp_path, "b").start()
    killed = {"receiver": b, "sender": a}[victim]

    async def main() -> tuple[int, common_pb2.Principal | T.Transfer]:
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            destination = await destination_to(api, b.api_port, ALICE)
            manifest = await manifest_of(api, src / "big.bin")
            transfer = await push(api, destination, manifest, str(dst),
                                  checkpoint_interval=CHECKPOINT)
            sent_before_kill = 0
            async with asyncio.timeout(120):
                async for update in api.transfers.WatchTransfer(
                        T.WatchTransferRequest(name=transfer.name), metadata=api.auth):
                    sent_before_kill = update.transfer.progress.bytes_done
                    if sent_before_kill >= SIZE // 2:
                        break
            assert update.transfer.state == common_pb2.TRANSFER_STATE_RUNNING
        killed.signal(signal.SIGKILL)
        killed.wait(timeout=10)
        killed.start()
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            done = await wait_terminal(api, transfer.name, timeout=180)
        return sent_before_kill, done

    try:
        sent_before_kill, done = asyncio.run(main())
    finally:
        a.stop()
        b.stop()
    assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
    assert sha256(dst / "big.bin") == sha256(src / "big.bin")
    resumed = done.progress.bytes_resumed
    assert resumed > SIZE // 4, f"resumed only {resumed} of {SIZE} bytes"
    resent = sent_before_kill - resumed
    assert resent < SIZE // 10, f"re-sent {resent} bytes ({resent / SIZE:.1%} of the file)"
    assert not list(dst.rglob("*.part"))
