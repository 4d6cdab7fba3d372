"""Server-wide bandwidth limits: the API, borrowing, and their effect on a real push."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import AsyncExitStack

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc import aio

from jetstream.services.bandwidth import BandwidthLimits, BandwidthService, share
from jetstream.state.database import Database
from jetstream.v1 import common_pb2, server_pb2, server_pb2_grpc
from tests.system.users import ADMIN, ALICE, require_root
from tests.transfers.helpers import (
    chown_tree,
    destination_to,
    login,
    manifest_of,
    owned_dir,
    push,
    remove,
    start,
    wait_terminal,
)

S = server_pb2


def test_borrowing_lends_an_idle_directions_allowance(tmp_path):
    service = BandwidthService(Database(tmp_path), BandwidthLimits(100, 300, True, fixed=True))
    assert service.allowance(outgoing_active=True, incoming_active=False) == (400, 100)
    assert service.allowance(outgoing_active=False, incoming_active=True) == (300, 400)
    assert service.allowance(outgoing_active=True, incoming_active=True) == (300, 100)
    plain = BandwidthService(Database(tmp_path / "x"), BandwidthLimits(100, 300, False))
    assert plain.allowance(outgoing_active=True, incoming_active=False) == (300, 100)
    assert share(300, 2) == 150 and share(0, 5) == 0


def test_limits_api_superuser_persistence_and_fixed(tmp_path):
    require_root(users=True)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            server = await start(stack, tmp_path / "a")
            admin, alice = await login(stack, server, ADMIN), await login(stack, server, ALICE)
            stub = server_pb2_grpc.ServerServiceStub(admin.channel)
            wanted = S.BandwidthLimits(outgoing_bps=50_000_000, allow_borrowing=True)
            with pytest.raises(aio.AioRpcError) as info:
                await server_pb2_grpc.ServerServiceStub(alice.channel).UpdateBandwidthLimits(
                    S.UpdateBandwidthLimitsRequest(bandwidth_limits=wanted), metadata=alice.auth)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            updated = (await stub.UpdateBandwidthLimits(S.UpdateBandwidthLimitsRequest(
                bandwidth_limits=wanted, update_mask=FieldMask(paths=["outgoing_bps"])),
                metadata=admin.auth)).bandwidth_limits
            assert (updated.outgoing_bps, updated.allow_borrowing) == (50_000_000, False)
        async with AsyncExitStack() as stack:
            server = await start(stack, tmp_path / "a")
            alice = await login(stack, server, ALICE)
            got = (await server_pb2_grpc.ServerServiceStub(alice.channel).GetBandwidthLimits(
                S.GetBandwidthLimitsRequest(), metadata=alice.auth)).bandwidth_limits
            assert got.outgoing_bps == 50_000_000 and not got.fixed
        async with AsyncExitStack() as stack:
            server = await start(stack, tmp_path / "b", ("max_outgoing_rate", "1g"))
            admin = await login(stack, server, ADMIN)
            stub = server_pb2_grpc.ServerServiceStub(admin.channel)
            got = (await stub.GetBandwidthLimits(S.GetBandwidthLimitsRequest(),
                                                 metadata=admin.auth)).bandwidth_limits
            assert got.fixed and got.outgoing_bps == 10**9
            with pytest.raises(aio.AioRpcError) as info:
                await stub.UpdateBandwidthLimits(S.UpdateBandwidthLimitsRequest(
                    bandwidth_limits=S.BandwidthLimits(outgoing_bps=1)), metadata=admin.auth)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "command line" in info.value.details()

    asyncio.run(main())


def test_outgoing_limit_slows_a_push(tmp_path):
    require_root(users=True)
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    (src / "data.bin").write_bytes(os.urandom(6 << 20))
    chown_tree(src, ALICE)

    async def main() -> float:
        async with AsyncExitStack() as stack:
            a = await start(stack, tmp_path / "a", ("max_outgoing_rate", "16m"))
            b = await start(stack, tmp_path / "b")
            api = await login(stack, a, ALICE)
            destination = await destination_to(api, b, ALICE)
            manifest = await manifest_of(api, src / "data.bin")
            started = time.monotonic()
            transfer = await push(api, destination, manifest, str(dst))
            done = await wait_terminal(api, transfer.name)
            assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
            return time.monotonic() - started

    try:
        seconds = asyncio.run(main())
    finally:
        remove(src, dst)
    rate = (6 << 20) * 8 / seconds
    assert rate < 1.3 * 16e6, f"the 16 Mbit/s cap was not applied ({rate / 1e6:.1f} Mbit/s)"
