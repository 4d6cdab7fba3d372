"""Transfers that meet a full disk, a forbidden directory, a user's pause or cancel."""

from __future__ import annotations

import asyncio
import os
import subprocess
from contextlib import AsyncExitStack

from jetstream.v1 import common_pb2, transfers_pb2
from tests.system.users import ALICE
from tests.transfers.helpers import (
    chown_tree,
    linked_pair,
    manifest_of,
    push,
    until,
    wait_terminal,
)

T = transfers_pb2
S = common_pb2


def test_full_disk_fails_cleanly_then_completes_after_space_is_freed(tmp_path, dirs):
    src, dst = dirs
    (src / "big.bin").write_bytes(os.urandom(12 << 20))
    # Scanned (and sent) before big.bin: sent after it, it raced big.bin's writes for the
    # last free page, and the first failure named either file.
    (src / "a-small.txt").write_bytes(b"fits")
    chown_tree(src, ALICE)
    mount = dst / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs", str(mount)],
                   check=True)
    try:
        async def main() -> None:
            async with AsyncExitStack() as stack:
                a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
                manifest = await manifest_of(api, src)
                transfer = await push(api, destination, manifest, str(mount))
                failed = await wait_terminal(api, transfer.name)
                assert failed.state == S.TRANSFER_STATE_FAILED
                assert failed.error.reason == "NO_SPACE"
                assert "no space left on device" in failed.error.message
                assert "big.bin" in failed.error.message
                leftovers = {p.name for p in mount.rglob("*")}
                assert "big.bin" not in leftovers, "nothing appears under a final name"
                subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
                await api.transfers.ResumeTransfer(T.ResumeTransferRequest(name=transfer.name),
                                                   metadata=api.auth)
                done = await wait_terminal(api, transfer.name)
                assert done.state == S.TRANSFER_STATE_COMPLETED, done.error

        asyncio.run(main())
        name = src.name
        assert (mount / name / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
        assert not list(mount.rglob("*.part"))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_unwritable_directory_fails_that_file_only(tmp_path, dirs):
    src, dst = dirs
    (src / "ok").mkdir()
    (src / "ok" / "a.txt").write_bytes(b"a" * 100)
    (src / "locked").mkdir()
    (src / "locked" / "b.txt").write_bytes(b"b" * 100)
    chown_tree(src, ALICE)
    target = dst / src.name / "locked"
    target.mkdir(parents=True)  # owned by root, 0755: alice may not create files in it
    os.chown(dst / src.name, os.stat(dst).st_uid, os.stat(dst).st_gid)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await push(api, destination, await manifest_of(api, src), str(dst))
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_FAILED
            assert done.error.reason == "PERMISSION_DENIED", done.error
            assert "locked/b.txt" in done.error.message + done.error.path
            assert done.progress.files_failed == 1
            failed = (await api.transfers.ListTransferFiles(T.ListTransferFilesRequest(
                parent=transfer.name, states=[T.TRANSFER_FILE_STATE_FAILED]),
                metadata=api.auth)).files
            assert [f.path for f in failed] == [f"{src.name}/locked/b.txt"]
            assert "permission denied" in failed[0].error.message

    asyncio.run(main())
    assert (dst / src.name / "ok" / "a.txt").read_bytes() == b"a" * 100
    assert not (target / "b.txt").exists()


def test_pause_resume_and_cancel_a_running_transfer(tmp_path, dirs):
    src, dst = dirs
    (src / "big.bin").write_bytes(os.urandom(96 << 20))
    chown_tree(src, ALICE)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            manifest = await manifest_of(api, src / "big.bin")
            slow = T.Transfer().rate_limit.__class__(max_bps=200_000_000)
            transfer = await push(api, destination, manifest, str(dst), rate_limit=slow)
            await until(api, transfer.name, lambda t: t.progress.bytes_done > 0)
            paused = await api.transfers.PauseTransfer(T.PauseTransferRequest(
                name=transfer.name), metadata=api.auth)
            assert paused.transfer.state == S.TRANSFER_STATE_PAUSED
            await asyncio.sleep(0.5)
            assert not (dst / "big.bin").exists()
            await api.transfers.ResumeTransfer(T.ResumeTransferRequest(name=transfer.name),
                                               metadata=api.auth)
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_COMPLETED, done.error

            second = await push(api, destination, manifest, str(dst / "again"),
                                rate_limit=slow)
            await until(api, second.name, lambda t: t.progress.bytes_done > 0)
            cancelled = await api.transfers.CancelTransfer(T.CancelTransferRequest(
                name=second.name), metadata=api.auth)
            assert cancelled.transfer.state == S.TRANSFER_STATE_CANCELLED
            await asyncio.sleep(1.0)

    asyncio.run(main())
    assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert not (dst / "again" / "big.bin").exists()
    assert not list(dst.rglob("*.part")), "a cancelled transfer leaves no temporary files"


def test_source_changed_between_attempts_delivers_the_new_source(tmp_path, dirs):
    src, dst = dirs
    big = src / "big.bin"
    big.write_bytes(os.urandom(64 << 20))
    chown_tree(src, ALICE)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            manifest = await manifest_of(api, big)
            slow = T.Transfer().rate_limit.__class__(max_bps=100_000_000)
            transfer = await push(api, destination, manifest, str(dst), rate_limit=slow,
                                  checkpoint_interval=T.Transfer().checkpoint_interval
                                  .__class__(nanos=200_000_000))
            await until(api, transfer.name, lambda t: t.progress.bytes_done > 16 << 20)
            await api.transfers.PauseTransfer(T.PauseTransferRequest(name=transfer.name),
                                              metadata=api.auth)
            with big.open("r+b") as handle:  # same size, new bytes at the start, new mtime
                handle.write(os.urandom(8 << 20))
            os.utime(big, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
            await api.transfers.ResumeTransfer(T.ResumeTransferRequest(name=transfer.name),
                                               metadata=api.auth)
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_COMPLETED, done.error
            assert done.progress.bytes_resumed == 0, "a changed source is sent again whole"

    asyncio.run(main())
    assert (dst / "big.bin").read_bytes() == big.read_bytes()
    assert (dst / "big.bin").stat().st_mtime_ns == 1_700_000_000_000_000_000
    assert not list(dst.rglob("*.part")), "the stale partial file is gone"
