"""Pull transfers: server A fetches from server B over the real data channel (loopback).

A's job builds the manifest on B as B's user, opens a send session there and receives with
the same machinery as a push: files arrive verified, with modes and mtimes, and a pull
interrupted mid-way resumes from A's own checkpoints.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack

from jetstream.v1 import common_pb2 as S
from jetstream.v1 import manifests_pb2 as M
from jetstream.v1 import transfers_pb2 as T
from tests.system.users import ALICE
from tests.transfers.helpers import (
    chown_tree,
    linked_pair,
    tree_digest,
    wait_terminal,
)
from tests.transfers.test_failures import until
from tests.transfers.test_push import make_tree


async def pull(api, destination: str, source, path: str, **fields: object) -> T.Transfer:
    created = await api.transfers.CreateTransfer(T.CreateTransferRequest(transfer=T.Transfer(
        destination=destination, direction=S.TRANSFER_DIRECTION_PULL,
        manifest_spec=M.ManifestSpec(mappings=[M.FileMapping(source_path=str(source))]),
        destination_path=path, **fields)), metadata=api.auth)
    return created.transfer


def test_pull_a_tree_arrives_identical(tmp_path, dirs):
    src, dst = dirs
    make_tree(src, small=200, big=3 << 20)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await pull(api, destination, src / "tree", str(dst))
            assert transfer.direction == S.TRANSFER_DIRECTION_PULL
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_COMPLETED, done.error
            assert done.progress.files_done == done.progress.files_total > 200
            assert done.progress.bytes_done == done.progress.bytes_total
            assert done.manifest.startswith("manifests/")  # the manifest built on B

    asyncio.run(main())
    assert tree_digest(dst / "tree") == tree_digest(src / "tree")
    assert (dst / "tree" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dst / "tree" / "run.sh").stat().st_uid == (src / "tree").stat().st_uid
    assert (dst / "tree" / "empty-dir").is_dir()
    assert not list(dst.rglob("*.part"))


def test_pull_paused_midway_resumes_without_resending(tmp_path, dirs):
    src, dst = dirs
    (src / "big.bin").write_bytes(os.urandom(24 << 20))
    chown_tree(src, ALICE)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            slow = S.RateLimit(max_bps=40_000_000, policy=S.RATE_POLICY_FIXED,
                               target_bps=40_000_000)
            transfer = await pull(api, destination, src / "big.bin", str(dst),
                                  rate_limit=slow,
                                  checkpoint_interval={"nanos": 200_000_000})
            await until(api, transfer.name, lambda t: t.progress.bytes_done > 8 << 20)
            paused = await api.transfers.PauseTransfer(T.PauseTransferRequest(
                name=transfer.name), metadata=api.auth)
            assert paused.transfer.state == S.TRANSFER_STATE_PAUSED
            await asyncio.sleep(0.5)
            assert not (dst / "big.bin").exists()
            assert list(dst.glob("*.part*")) or list(dst.glob(".*")), "partial file kept"
            await api.transfers.UpdateTransfer(T.UpdateTransferRequest(
                transfer=T.Transfer(name=transfer.name, rate_limit=S.RateLimit()),
                update_mask={"paths": ["rate_limit"]}), metadata=api.auth)
            await api.transfers.ResumeTransfer(T.ResumeTransferRequest(name=transfer.name),
                                               metadata=api.auth)
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_COMPLETED, done.error
            assert done.progress.bytes_resumed >= 4 << 20, done.progress

    asyncio.run(main())
    assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_pull_of_an_unreadable_file_fails_naming_it(tmp_path, dirs):
    src, dst = dirs
    (src / "open.txt").write_bytes(b"x" * 100)
    chown_tree(src, ALICE)
    secret = src / "secret.txt"
    secret.write_bytes(b"root only")
    secret.chmod(0o600)  # owned by root: jsalice may not read it on B

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await pull(api, destination, src, str(dst))
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_FAILED
            assert done.error.reason == "PERMISSION_DENIED", done.error
            assert "secret.txt" in done.error.path + done.error.message, done.error

    asyncio.run(main())
    assert (dst / src.name / "open.txt").read_bytes() == b"x" * 100
    assert not (dst / src.name / "secret.txt").exists()
