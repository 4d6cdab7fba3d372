"""CreateTransfer with an inline manifest_spec: the server builds the manifest itself and
starts the push once it is complete, or fails the transfer with the manifest's error."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc import aio

from jetstream.v1 import common_pb2, manifests_pb2, transfers_pb2
from tests.system.users import ALICE
from tests.transfers.helpers import (
    linked_pair,
    manifest_of,
    push,
    tree_digest,
    wait_terminal,
)
from tests.transfers.test_push import make_tree

M = manifests_pb2
T = transfers_pb2


def spec_of(source: Path) -> M.ManifestSpec:
    return M.ManifestSpec(mappings=[M.FileMapping(source_path=str(source))],
                          exclude_patterns=["*.tmp"])


def test_inline_spec_push_arrives_identical(tmp_path, dirs):
    src, dst = dirs
    make_tree(src, small=50)
    (src / "tree" / "left-out.tmp").write_bytes(b"x")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await push(api, destination, "", str(dst),
                                  manifest_spec=spec_of(src / "tree"))
            assert transfer.manifest.startswith("manifests/")
            assert transfer.state == common_pb2.TRANSFER_STATE_QUEUED
            done = await wait_terminal(api, transfer.name)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
            built = (await api.manifests.GetManifest(M.GetManifestRequest(
                name=transfer.manifest), metadata=api.auth)).manifest
            assert built.state == M.MANIFEST_STATE_COMPLETE
            assert built.labels["transfer"] == transfer.name.removeprefix("transfers/")
            assert done.progress.files_done == built.file_count + built.dir_count

    asyncio.run(main())
    (src / "tree" / "left-out.tmp").unlink()
    assert tree_digest(dst / "tree") == tree_digest(src / "tree")


def test_inline_spec_that_fails_to_build_fails_the_transfer(tmp_path, dirs):
    src, dst = dirs

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await push(api, destination, "", str(dst),
                                  manifest_spec=spec_of(src / "missing"))
            done = await wait_terminal(api, transfer.name)
            assert done.state == common_pb2.TRANSFER_STATE_FAILED
            assert done.error.reason == "MANIFEST_FAILED"
            assert "missing" in done.error.message and "no such file" in done.error.message

            manifest = await manifest_of(api, src)
            for name, fields in ((manifest, {"manifest_spec": spec_of(src)}), ("", {})):
                with pytest.raises(aio.AioRpcError) as info:
                    await push(api, destination, name, str(dst), **fields)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "either manifest or manifest_spec" in (info.value.details() or "")
            with pytest.raises(aio.AioRpcError) as info:  # a bad spec is refused at once
                await push(api, destination, "", str(dst), manifest_spec=M.ManifestSpec())
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            listed = await api.manifests.ListManifests(M.ListManifestsRequest(),
                                                       metadata=api.auth)
            assert len(listed.manifests) == 2, "refused requests leave no manifest behind"

    asyncio.run(main())
