"""ListSources on a receiver: the servers that pushed to it, most recently active first,
paged, and scoped to the caller's own transfers unless a superuser asks for everyone's."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc
import pytest
from grpc import aio

from jetstream.v1 import common_pb2, server_pb2, server_pb2_grpc, transfers_pb2
from tests.system.users import ADMIN, ALICE, BOB
from tests.transfers.helpers import (
    Api,
    destination_to,
    login,
    manifest_of,
    push,
    start,
    wait_terminal,
)

T = transfers_pb2


async def sources(api: Api, **request: object) -> T.ListSourcesResponse:
    return await api.transfers.ListSources(T.ListSourcesRequest(**request), metadata=api.auth)


def test_list_sources_after_pushes(tmp_path, dirs):
    src, dst = dirs
    (src / "data.bin").write_bytes(b"x" * 5000)
    (src / "data.bin").chmod(0o644)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            senders = [await start(stack, tmp_path / name) for name in ("a1", "a2")]
            b = await start(stack, tmp_path / "b")
            uids = []
            for index, sender in enumerate(senders):
                api = await login(stack, sender, ALICE)
                info = await server_pb2_grpc.ServerServiceStub(api.channel).GetServerInfo(
                    server_pb2.GetServerInfoRequest())
                uids.append(info.server_info.server_uid)
                destination = await destination_to(api, b, ALICE)
                manifest = await manifest_of(api, src / "data.bin", f"from-{index}.bin")
                transfer = await push(api, destination, manifest, str(dst))
                done = await wait_terminal(api, transfer.name)
                assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error

            receiver = await login(stack, b, ALICE)
            listed = (await sources(receiver)).sources
            assert [s.server_uid for s in listed] == uids[::-1], "most recently active first"
            latest = listed[0]
            assert latest.name == f"sources/{uids[1]}"
            assert latest.display_name and latest.last_address.startswith("127.0.0.1:")
            assert (latest.active_transfer_count, latest.completed_transfer_count,
                    latest.failed_transfer_count) == (0, 1, 0)
            assert latest.bytes_received == 5000 and latest.HasField("last_receive_time")
            assert latest.recent_rate_bps > 0

            first = await sources(receiver, page_size=1)
            assert [s.server_uid for s in first.sources] == [uids[1]] and first.next_page_token
            second = await sources(receiver, page_size=1, page_token=first.next_page_token)
            assert [s.server_uid for s in second.sources] == [uids[0]]
            assert not second.next_page_token
            with pytest.raises(aio.AioRpcError) as info:
                await sources(receiver, owner="-", page_token=first.next_page_token)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            bob = await login(stack, b, BOB)
            assert not (await sources(bob)).sources, "alice's sources are not bob's"
            with pytest.raises(aio.AioRpcError) as info:
                await sources(bob, owner=ALICE)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            admin = await login(stack, b, ADMIN)
            assert len((await sources(admin, owner="-")).sources) == 2
            assert len((await sources(admin, owner=ALICE)).sources) == 2

    asyncio.run(main())
