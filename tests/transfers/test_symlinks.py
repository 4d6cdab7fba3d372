"""Symbolic links in push transfers between two real servers: PRESERVE recreates links at
the receiver (refusing those that would leave its sandbox), FOLLOW_WITHIN_SANDBOX sends
what links inside the sender's sandbox lead to."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path

from jetstream.v1 import common_pb2, manifests_pb2, transfers_pb2
from tests.system.users import ALICE
from tests.transfers.helpers import (
    Api,
    chown_tree,
    destination_to,
    linked_pair,
    login,
    push,
    start,
    wait_terminal,
)

M = manifests_pb2
T = transfers_pb2


async def manifest_with(api: Api, source: str, policy: int) -> M.Manifest:
    made = await api.manifests.CreateManifest(M.CreateManifestRequest(manifest=M.Manifest(
        spec=M.ManifestSpec(mappings=[M.FileMapping(source_path=source)],
                            symlink_policy=policy))), metadata=api.auth)
    done = (await api.manifests.WaitManifest(M.WaitManifestRequest(name=made.manifest.name),
                                             metadata=api.auth, timeout=60)).manifest
    assert done.state == M.MANIFEST_STATE_COMPLETE, done.error.message
    assert done.spec.symlink_policy == policy
    return done


async def files_of(api: Api, transfer: str) -> dict[str, T.TransferFile]:
    listed = await api.transfers.ListTransferFiles(T.ListTransferFilesRequest(
        parent=transfer, page_size=1000), metadata=api.auth)
    return {f.path: f for f in listed.files}


def test_preserve_recreates_links_and_refuses_escaping_ones(tmp_path: Path, dirs):
    src, dst = dirs
    tree = src / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "data.txt").write_bytes(b"payload")
    os.symlink("data.txt", tree / "rel")
    os.symlink("../data.txt", tree / "sub" / "up")
    os.symlink("../../../etc/passwd", tree / "escape")
    os.symlink("/etc/passwd", tree / "absolute")
    os.utime(tree / "rel", ns=(1_600_000_000_000_000_000,) * 2, follow_symlinks=False)
    chown_tree(src, ALICE)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE,
                                                       ("sandbox_dir", [str(dst)]))
            manifest = await manifest_with(api, str(tree), M.SYMLINK_POLICY_PRESERVE)
            assert (manifest.file_count, manifest.skipped_count) == (5, 0)
            transfer = await push(api, destination, manifest.name, "/")
            done = await wait_terminal(api, transfer.name)
            assert done.state == common_pb2.TRANSFER_STATE_FAILED
            assert done.progress.files_done == 5 and done.progress.files_failed == 2
            files = await files_of(api, transfer.name)
            for name in ("tree/escape", "tree/absolute"):
                failed = files[name]
                assert failed.state == T.TRANSFER_FILE_STATE_FAILED
                assert failed.kind == common_pb2.FILE_KIND_SYMLINK
                assert f"/{name}: the symbolic link leads outside the sandbox" \
                    in failed.error.message, failed.error
            for name in ("tree/rel", "tree/sub/up", "tree/data.txt"):
                assert files[name].state == T.TRANSFER_FILE_STATE_DONE, files[name]
            again = await push(api, destination, manifest.name, "/")  # links already there
            files = await files_of(api, (await wait_terminal(api, again.name)).name)
            for name in ("tree/rel", "tree/sub/up", "tree/data.txt"):
                assert files[name].state == T.TRANSFER_FILE_STATE_SKIPPED, files[name]

    asyncio.run(main())
    assert os.readlink(dst / "tree" / "rel") == "data.txt"
    assert (dst / "tree" / "rel").lstat().st_mtime_ns == 1_600_000_000_000_000_000
    assert (dst / "tree" / "rel").lstat().st_uid == (src / "tree").stat().st_uid
    assert os.readlink(dst / "tree" / "sub" / "up") == "../data.txt"
    assert (dst / "tree" / "sub" / "up").read_bytes() == b"payload"
    assert not os.path.lexists(dst / "tree" / "escape")
    assert not os.path.lexists(dst / "tree" / "absolute")
    assert not [p for p in dst.rglob("*") if ".jetstream-" in p.name]


def test_follow_sends_links_inside_the_sandbox_and_skips_others(tmp_path: Path, dirs):
    src, dst = dirs
    tree = src / "tree"
    (tree / "real").mkdir(parents=True)
    (tree / "real" / "big.bin").write_bytes(os.urandom(1 << 20))
    (tree / "small.txt").write_bytes(b"small")
    os.symlink("small.txt", tree / "in-file")
    os.symlink("real", tree / "in-dir")
    os.symlink("/etc/passwd", tree / "out")
    chown_tree(src, ALICE)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a = await start(stack, tmp_path / "a", ("sandbox_dir", [str(src)]))
            b = await start(stack, tmp_path / "b")
            api = await login(stack, a, ALICE)
            destination = await destination_to(api, b, ALICE)
            manifest = await manifest_with(api, "/tree",
                                           M.SYMLINK_POLICY_FOLLOW_WITHIN_SANDBOX)
            assert manifest.skipped_count == 1  # "out"
            transfer = await push(api, destination, manifest.name, str(dst))
            done = await wait_terminal(api, transfer.name)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
            assert done.progress.files_done == done.progress.files_total == 7

    asyncio.run(main())
    out = dst / "tree"
    assert not (out / "in-file").is_symlink()
    assert (out / "in-file").read_bytes() == b"small"
    assert not (out / "in-dir").is_symlink()
    assert (out / "in-dir" / "big.bin").read_bytes() == (tree / "real" / "big.bin").read_bytes()
    assert not os.path.lexists(out / "out")
