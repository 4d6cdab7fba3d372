"""A server restarted while it scans a manifest: the scan starts again by itself, as its
owner within the same limits, and the transfer waiting for it completes with every file
(root: real server processes, real PAM users)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from jetstream.v1 import common_pb2, manifests_pb2, transfers_pb2
from tests.faults.helpers import server
from tests.support.servers import ServerProcess
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import (
    Api,
    chown_tree,
    destination_to,
    login,
    owned_dir,
    remove,
    wait_terminal,
)

M, T = manifests_pb2, transfers_pb2
FILLER = 20_000
"""Files the scan must walk (slow enough to restart in its middle)..."""
KEEP = 50
"""...and the few the include pattern sends, so the test is not about sending."""


@pytest.fixture
def tree():
    require_root(users=True)
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    (src / "keep").mkdir()
    for i in range(KEEP):
        (src / "keep" / f"k{i}").write_bytes(os.urandom(1000 + i))
    for d in range(FILLER // 1000):
        (src / f"filler{d:02d}").mkdir()
        for i in range(1000):
            (src / f"filler{d:02d}" / f"f{i}").touch()
    chown_tree(src, ALICE)
    yield src, dst
    remove(src, dst)


def spec(src: Path) -> M.ManifestSpec:
    return M.ManifestSpec(mappings=[M.FileMapping(source_path=str(src), destination_path="t")],
                          include_patterns=["keep/*"])


async def scanning(api: Api) -> M.Manifest:
    """The manifest being scanned (polled: the scan takes about a second)."""
    async with asyncio.timeout(60):
        while True:
            listed = await api.manifests.ListManifests(M.ListManifestsRequest(),
                                                       metadata=api.auth)
            for manifest in listed.manifests:
                if manifest.state == M.MANIFEST_STATE_PENDING:
                    return manifest
            await asyncio.sleep(0.01)


def restart(victim: ServerProcess, how: signal.Signals) -> None:
    victim.signal(how)
    victim.wait(timeout=30)
    victim.start()


def check(src: Path, dst: Path, done: T.Transfer) -> None:
    assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
    directories = 2 + FILLER // 1000  # t, keep and the fillers, which are always walked
    assert done.progress.files_done == done.progress.files_total == KEEP + directories
    for i in range(KEEP):
        assert (dst / "t" / "keep" / f"k{i}").read_bytes() == \
            (src / "keep" / f"k{i}").read_bytes()


def test_a_push_whose_sender_is_killed_during_its_scan(tmp_path, tree):
    src, dst = tree
    a, b = server(tmp_path, "a").start(), server(tmp_path, "b").start()

    async def main() -> tuple[T.Transfer, M.Manifest]:
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            made = await api.transfers.CreateTransfer(T.CreateTransferRequest(
                transfer=T.Transfer(destination=await destination_to(api, b.api_port, ALICE),
                                    manifest_spec=spec(src), destination_path=str(dst))),
                metadata=api.auth)
            interrupted = await scanning(api)
        restart(a, signal.SIGKILL)
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            done = await wait_terminal(api, made.transfer.name, timeout=120)
            manifest = (await api.manifests.GetManifest(M.GetManifestRequest(
                name=interrupted.name), metadata=api.auth)).manifest
        return done, manifest

    try:
        done, manifest = asyncio.run(main())
    finally:
        a.stop()
        b.stop()
    check(src, dst, done)
    assert manifest.state == M.MANIFEST_STATE_COMPLETE
    assert manifest.dir_count == 1 + 1 + FILLER // 1000  # counted once, not twice


@pytest.mark.parametrize("victim", ["scanning side (SIGTERM)", "pulling side (kill -9)"])
def test_a_pull_restarted_during_the_remote_scan(tmp_path, tree, victim):
    src, dst = tree
    a, b = server(tmp_path, "a").start(), server(tmp_path, "b").start()

    async def main() -> T.Transfer:
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            made = await api.transfers.CreateTransfer(T.CreateTransferRequest(
                transfer=T.Transfer(destination=await destination_to(api, b.api_port, ALICE),
                                    direction=common_pb2.TRANSFER_DIRECTION_PULL,
                                    manifest_spec=spec(src), destination_path=str(dst))),
                metadata=api.auth)
            await scanning(await login(stack, b.api_port, ALICE))  # B scans for the pull
        if victim.startswith("scanning"):
            restart(b, signal.SIGTERM)
        else:
            restart(a, signal.SIGKILL)
        started = time.monotonic()
        async with AsyncExitStack() as stack:
            api = await login(stack, a.api_port, ALICE)
            done = await wait_terminal(api, made.transfer.name, timeout=120)
        print(f"pull, {victim} restarted mid-scan: completed in "
              f"{time.monotonic() - started:.1f} s, attempts {done.attempt_count}")
        return done

    try:
        done = asyncio.run(main())
    finally:
        a.stop()
        b.stop()
    check(src, dst, done)
