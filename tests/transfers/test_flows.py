"""A push over several flows: real servers, real sockets, worker threads, real files."""

from __future__ import annotations

import asyncio
import functools
import json
import os
from contextlib import AsyncExitStack

import pytest

from jetstream.datachannel.grouprate import flow_count
from jetstream.transfers import flow as flow_module
from jetstream.transfers import sender as sender_module
from jetstream.transfers.model import TransferOptions
from jetstream.v1 import common_pb2, transfers_pb2
from tests.system.users import ALICE
from tests.transfers.helpers import (
    chown_tree,
    linked_pair,
    manifest_of,
    push,
    tree_digest,
    until,
    wait_terminal,
)

S = common_pb2
T = transfers_pb2


def make_tree(root) -> int:
    """Small files (first flow only), files of one to a few chunks, one of many; returns
    the bytes of the large ones."""
    tree = root / "tree"
    (tree / "small").mkdir(parents=True)
    for i in range(300):
        (tree / "small" / f"s{i:03d}").write_bytes(os.urandom(i * 41 % 9000))
    sizes = [300 << 10, (4 << 20) + 1, 9 << 20, 64 << 20]
    for i, size in enumerate(sizes):
        (tree / f"large{i}.bin").write_bytes(os.urandom(size))
    chown_tree(root, ALICE)
    return sum(sizes)


@pytest.fixture
def carried(monkeypatch) -> list[int]:
    """Stream bytes each further flow sent, recorded as it closes."""
    sent: list[int] = []
    close = flow_module.FurtherFlow.close

    async def recording(self: flow_module.FurtherFlow) -> None:
        sent.append(self.statistics().stream_bytes_sent)
        await close(self)

    monkeypatch.setattr(flow_module.FurtherFlow, "close", recording)
    return sent


def test_a_push_over_three_flows_arrives_identical_and_uses_them_all(tmp_path, dirs, carried):
    src, dst = dirs
    large = make_tree(src)

    async def main() -> T.Transfer:
        async with AsyncExitStack() as stack:
            _a, _b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await push(api, destination, await manifest_of(api, src / "tree"),
                                  str(dst), flows=3)
            assert transfer.flows == 3
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_COMPLETED, done.error
            return done

    done = asyncio.run(main())
    assert tree_digest(dst / "tree") == tree_digest(src / "tree")
    assert not list(dst.rglob("*.part")), "no temporary files are left behind"
    assert len(carried) == 2, "two further flows were opened and closed"
    assert all(sent > large // 10 for sent in carried), f"each carried a share: {carried}"
    assert sum(carried) < large, "small files and records stay on the first flow"
    assert done.progress.bytes_sent_on_wire > done.progress.bytes_total, "all flows are counted"


def test_a_paused_push_over_flows_resumes_to_an_identical_copy(tmp_path, dirs, carried):
    src, dst = dirs
    (src / "big.bin").write_bytes(os.urandom(96 << 20))
    chown_tree(src, ALICE)

    async def main() -> T.Transfer:
        async with AsyncExitStack() as stack:
            _a, _b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await push(api, destination, await manifest_of(api, src / "big.bin"),
                                  str(dst), flows=2,
                                  rate_limit=S.RateLimit(max_bps=200_000_000),
                                  checkpoint_interval={"nanos": 200_000_000})
            await until(api, transfer.name, lambda t: t.progress.bytes_done > 24 << 20)
            await api.transfers.PauseTransfer(T.PauseTransferRequest(name=transfer.name),
                                              metadata=api.auth)
            await asyncio.sleep(0.5)
            await api.transfers.ResumeTransfer(T.ResumeTransferRequest(name=transfer.name),
                                               metadata=api.auth)
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_COMPLETED, done.error
            return done

    done = asyncio.run(main())
    assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert len(carried) == 2 and all(carried), "each attempt sent over its further flow"
    assert done.progress.bytes_resumed > 0, "the second attempt resumed from a checkpoint"


def test_more_than_sixteen_flows_are_refused(tmp_path, dirs):
    src, dst = dirs
    (src / "f").write_bytes(b"x")
    chown_tree(src, ALICE)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            _a, _b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            manifest = await manifest_of(api, src / "f")
            with pytest.raises(Exception) as caught:
                await push(api, destination, manifest, str(dst), flows=17)
            assert "flows: at most 16" in str(caught.value)

    asyncio.run(main())


def test_the_flows_option_is_stored_and_rows_from_before_read_as_automatic() -> None:
    chosen = TransferOptions(flows=4)
    assert TransferOptions.from_json(chosen.to_json()) == chosen
    old = json.loads(chosen.to_json())
    del old["flows"]
    assert TransferOptions.from_json(json.dumps(old)).flows == 0


def test_a_further_flow_lost_mid_file_costs_a_retry_not_the_file(tmp_path, dirs, monkeypatch):
    src, dst = dirs
    (src / "big.bin").write_bytes(os.urandom(96 << 20))
    chown_tree(src, ALICE)
    opened: list[flow_module.FurtherFlow] = []
    open_further = sender_module.open_further_flow

    async def recording(*args, **kwargs) -> flow_module.FurtherFlow:
        further = await open_further(*args, **kwargs)
        opened.append(further)
        return further

    monkeypatch.setattr(sender_module, "open_further_flow", recording)

    async def main() -> T.Transfer:
        async with AsyncExitStack() as stack:
            _a, _b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            transfer = await push(api, destination, await manifest_of(api, src / "big.bin"),
                                  str(dst), flows=2,
                                  rate_limit=S.RateLimit(max_bps=300_000_000))
            await until(api, transfer.name, lambda t: t.progress.bytes_done > 16 << 20)
            lost = opened[0]
            lost.worker.loop.call_soon_threadsafe(lost.flow.link.close, 0x100, "cable cut")
            done = await wait_terminal(api, transfer.name)
            assert done.state == S.TRANSFER_STATE_COMPLETED, done.error
            return done

    done = asyncio.run(main())
    assert (dst / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    assert done.attempt_count >= 2 and len(opened) >= 2, "the loss ended the first attempt"
    assert not list(dst.rglob("*.part"))


def test_unset_flows_follow_the_rate_the_last_push_to_that_destination_reached(
        tmp_path, dirs, carried, monkeypatch):
    """Nothing known: one flow. Then as many as the measured rate needs, one per core but
    one at most (here: 8 cores, and a flow per 50 Mbit/s so that loopback needs several)."""
    src, dst = dirs
    (src / "big.bin").write_bytes(os.urandom(64 << 20))
    chown_tree(src, ALICE)
    monkeypatch.setattr(sender_module.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(sender_module, "flow_count",
                        functools.partial(flow_count, per_flow_bps=50e6))
    monkeypatch.setattr(sender_module, "MEASURE_AFTER", 0.0)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            _a, _b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            manifest = await manifest_of(api, src / "big.bin")
            for target in ("first", "second"):
                done = await wait_terminal(api, (await push(api, destination, manifest,
                                                            str(dst / target))).name)
                assert done.state == S.TRANSFER_STATE_COMPLETED, done.error
                if target == "first":
                    assert carried == [], "nothing was known: one flow"

    asyncio.run(main())
    assert 1 <= len(carried) <= 6, "the second push asked for 2 to 7 flows"
    assert sum(carried) > 0, "and sent over them (16 chunks need not reach every lane)"
    assert (dst / "second" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
