"""Push transfers between two real servers over the real data channel (loopback)."""

from __future__ import annotations

import asyncio
import os
import pwd
import urllib.request
from contextlib import AsyncExitStack

from jetstream.v1 import common_pb2, transfers_pb2
from tests.system.users import ALICE
from tests.transfers.helpers import (
    chown_tree,
    destination_to,
    linked_pair,
    login,
    manifest_of,
    push,
    start,
    tree_digest,
    wait_terminal,
)


def scrape(server) -> str:
    url = f"http://127.0.0.1:{server.metrics.port}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} missing")


def make_tree(root, *, small: int, big: int = 0) -> None:
    (root / "tree" / "empty-dir").mkdir(parents=True)
    (root / "tree" / "nested" / "deeper").mkdir(parents=True)
    for i in range(small):
        (root / "tree" / "nested" / f"f{i:04d}.bin").write_bytes(os.urandom(i * 37 % 5000))
    (root / "tree" / "empty.txt").write_bytes(b"")
    script = root / "tree" / "run.sh"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    os.utime(script, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    if big:
        (root / "tree" / "nested" / "deeper" / "big.bin").write_bytes(os.urandom(big))
    chown_tree(root, ALICE)


def test_push_a_tree_arrives_identical(tmp_path, dirs):
    src, dst = dirs
    make_tree(src, small=200, big=24 << 20)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            telemetry = [("disable_telemetry", False), ("metrics_port", 0)]
            a = await start(stack, tmp_path / "a", *telemetry)
            b = await start(stack, tmp_path / "b", *telemetry)
            api = await login(stack, a, ALICE)
            destination = await destination_to(api, b, ALICE)
            manifest = await manifest_of(api, src / "tree")
            transfer = await push(api, destination, manifest, str(dst))
            done = await wait_terminal(api, transfer.name)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
            assert done.progress.files_done == done.progress.files_total
            assert done.progress.bytes_done == done.progress.bytes_total
            files = (await api.transfers.ListTransferFiles(transfers_pb2.ListTransferFilesRequest(
                parent=transfer.name, page_size=1000), metadata=api.auth)).files
            assert len(files) == done.progress.files_total
            assert {f.state for f in files} == {transfers_pb2.TRANSFER_FILE_STATE_DONE}
            big = next(f for f in files if f.path.endswith("big.bin"))
            assert len(big.digest) == 32 and big.bytes_done == big.size_bytes == 24 << 20
            sent, received = scrape(a), scrape(b)
            assert 'jetstream_transfers_finished_total{direction="outgoing",result="completed"}' \
                ' 1.0' in sent
            assert 'jetstream_transfers_finished_total{direction="incoming",result="completed"}' \
                ' 1.0' in received
            assert sample(received, 'jetstream_transfer_files_total{direction="incoming",'
                                    'result="ok"}') == done.progress.files_total
            assert sample(received, 'jetstream_transfer_bytes_total{direction="incoming"}') \
                == done.progress.bytes_total
            for text in (sent, received):
                assert "big.bin" not in text and ALICE not in text, "no names in labels"

    asyncio.run(main())
    assert tree_digest(dst / "tree") == tree_digest(src / "tree")
    alice = pwd.getpwnam(ALICE)
    for path in [dst / "tree", *(dst / "tree").rglob("*")]:
        assert path.lstat().st_uid == alice.pw_uid, path
    assert not list(dst.rglob("*.part")), "no temporary files are left behind"


def test_push_a_1_gib_file_and_10000_small_files(tmp_path, dirs):
    """The issue's tree: a 1 GiB file, 10,000 small files, empty files and directories,
    executable bits and mtimes; every byte and attribute must arrive."""
    src, dst = dirs
    make_tree(src, small=10_000)
    with (src / "tree" / "large.bin").open("wb") as out:
        for _ in range(256):
            out.write(os.urandom(4 << 20))
    (src / "tree" / "nested" / "empty-file").write_bytes(b"")
    chown_tree(src, ALICE)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            manifest = await manifest_of(api, src / "tree")
            transfer = await push(api, destination, manifest, str(dst))
            done = await wait_terminal(api, transfer.name, timeout=600)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
            assert done.progress.files_done == done.progress.files_total > 10_000

    asyncio.run(main())
    assert tree_digest(dst / "tree") == tree_digest(src / "tree")


def test_a_push_of_many_small_files_leaves_no_descriptors_open(dirs):
    """Both servers run in this process: whatever fds the transfer opened must be closed
    once it is over (a leak per file ends a million-file transfer with EMFILE)."""
    src, dst = dirs
    for d in range(4):
        (src / f"d{d}").mkdir()
        for i in range(500):
            (src / f"d{d}" / f"f{i}").write_bytes(b"x" * (i % 300))
    chown_tree(src, ALICE)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def main() -> tuple[int, int]:
        async with AsyncExitStack() as stack:
            a = await start(stack, src.parent / f"{src.name}-state-a")
            b = await start(stack, src.parent / f"{src.name}-state-b")
            api = await login(stack, a, ALICE)
            destination = await destination_to(api, b, ALICE)
            warm = await push(api, destination, await manifest_of(api, src / "d0"), str(dst))
            warmed = await wait_terminal(api, warm.name)
            assert warmed.state == common_pb2.TRANSFER_STATE_COMPLETED
            before = open_fds()
            transfer = await push(api, destination, await manifest_of(api, src), str(dst))
            done = await wait_terminal(api, transfer.name)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
            await asyncio.sleep(0.5)
            return before, open_fds()

    before, after = asyncio.run(main())
    assert tree_digest(dst / src.name) == tree_digest(src)
    assert after - before < 50, f"{after - before} descriptors left open after 2,000 files"
