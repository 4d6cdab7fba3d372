"""Transfers belong to their owner: another user finds nothing, a superuser sees all."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc
import pytest
from grpc import aio

from jetstream.v1 import transfers_pb2
from tests.system.users import ADMIN, ALICE, BOB
from tests.transfers.helpers import linked_pair, login, manifest_of


def test_transfers_of_others_are_not_found(tmp_path, dirs):
    src, dst = dirs
    (src / "f.bin").write_bytes(b"x" * 1000)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            linked = await linked_pair(stack, tmp_path, ALICE)
            made = await linked.api.transfers.CreateTransfer(transfers_pb2.CreateTransferRequest(
                transfer=transfers_pb2.Transfer(
                    destination=linked.destination,
                    manifest=await manifest_of(linked.api, src),
                    destination_path=str(dst))), metadata=linked.api.auth)
            name = made.transfer.name
            bob, admin = await login(stack, linked.a, BOB), await login(stack, linked.a, ADMIN)
            T = transfers_pb2
            for rpc, request in (
                    (bob.transfers.GetTransfer, T.GetTransferRequest(name=name)),
                    (bob.transfers.CancelTransfer, T.CancelTransferRequest(name=name)),
                    (bob.transfers.DeleteTransfer, T.DeleteTransferRequest(name=name)),
                    (bob.transfers.ListTransferFiles, T.ListTransferFilesRequest(parent=name))):
                with pytest.raises(aio.AioRpcError) as hidden:
                    await rpc(request, metadata=bob.auth)
                assert hidden.value.code() == grpc.StatusCode.NOT_FOUND, rpc
            with pytest.raises(aio.AioRpcError) as watched:
                async for _ in bob.transfers.WatchTransfer(T.WatchTransferRequest(name=name),
                                                           metadata=bob.auth):
                    pass
            assert watched.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(aio.AioRpcError) as listed:
                await bob.transfers.ListTransfers(T.ListTransfersRequest(owner=ALICE),
                                                  metadata=bob.auth)
            assert listed.value.code() == grpc.StatusCode.PERMISSION_DENIED
            mine = await bob.transfers.ListTransfers(T.ListTransfersRequest(), metadata=bob.auth)
            assert list(mine.transfers) == []
            seen = await admin.transfers.GetTransfer(T.GetTransferRequest(name=name),
                                                     metadata=admin.auth)
            assert seen.transfer.owner == ALICE

    asyncio.run(main())
