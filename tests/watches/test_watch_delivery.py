"""Watch folders with real servers: files dropped in (some written slowly) arrive verified,
exactly once, never half-written; a kill -9 in the middle loses nothing and sends nothing
twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from jetstream.services.events import Event
from jetstream.v1 import common_pb2, transfers_pb2, watches_pb2, watches_pb2_grpc
from tests.support.servers import ServerProcess, free_port_args, serve
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import destination_to, linked_pair, login

W = watches_pb2


class Arrivals:
    """Counts recv.fileComplete at the receiving server: each verified file renamed into
    place (a file skipped because it is already there does not count)."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()

    def wants(self, kind: str) -> bool:
        return kind == "recv.fileComplete"

    def heard(self, event: Event) -> None:
        self.count[event.attributes["path"]] += 1


def content(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def write_quick(folder: Path, names: list[tuple[str, int]], pause: float) -> None:
    """Files in subfolders made on the way (given to the folder's owner, who must be able to
    delete or move what is in them)."""
    owner = folder.stat()
    for n, (name, size) in enumerate(names):
        path = folder / name
        if not path.parent.exists():
            path.parent.mkdir()
            os.chown(path.parent, owner.st_uid, owner.st_gid)
        path.write_bytes(content(name, size))
        if n % 100 == 99:
            time.sleep(pause)


def write_held_open(folder: Path, name: str, size: int, chunks: int, gap: float) -> None:
    """One open file written in chunks with pauses longer than the settle time."""
    data = content(name, size)
    step = -(-size // chunks)
    with open(folder / name, "wb") as handle:
        for start in range(0, size, step):
            handle.write(data[start:start + step])
            handle.flush()
            time.sleep(gap)


def write_appending(folder: Path, name: str, size: int, chunks: int, gap: float) -> None:
    """Reopened and appended to, chunk after chunk, with pauses shorter than the settle."""
    data = content(name, size)
    step = -(-size // chunks)
    for start in range(0, size, step):
        with open(folder / name, "ab") as handle:
            handle.write(data[start:start + step])
        time.sleep(gap)


def plan(count: int, slow: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """`count` files: (name, size) written quickly, and `slow` written slowly."""
    quick = [(f"batch{i % 9}/f{i:04d}.bin", 100 + (i * 7919) % 20000)
             for i in range(count - slow)]
    slowly = [(f"slow{i:03d}.dat", 30000 + i * 1000) for i in range(slow)]
    return quick, slowly


def start_writers(folder: Path, quick, slowly, *, gap_open: float, gap_append: float
                  ) -> list[threading.Thread]:
    threads = [threading.Thread(target=write_quick, args=(folder, quick, 0.2))]
    for n, (name, size) in enumerate(slowly):
        if n % 2:
            target, args = write_held_open, (folder, name, size, 3, gap_open)
        else:
            target, args = write_appending, (folder, name, size, 6, gap_append)
        threads.append(threading.Thread(target=target, args=args))
    for thread in threads:
        thread.start()
    return threads


def files_below(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def watch_request(folder: Path, destination: str, dst: Path, **fields) -> W.CreateWatchRequest:
    return W.CreateWatchRequest(watch=W.Watch(
        folder=str(folder), destination=destination, destination_path=str(dst),
        exclude=[".*"], **fields), watch_id="hot")


def test_a_thousand_files_arrive_verified_exactly_once(tmp_path, dirs):
    require_root(users=True)
    src, dst = dirs
    quick, slowly = plan(1000, 40)
    expected = {name: content(name, size) for name, size in quick + slowly}
    arrivals = Arrivals()

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a, b, api, destination = await linked_pair(stack, tmp_path, ALICE)
            b.events.subscribe(arrivals)
            stub = watches_pb2_grpc.WatchServiceStub(api.channel)
            made = await stub.CreateWatch(watch_request(
                src, destination, dst, settle_time=Duration(seconds=1),
                after_delivery=W.AFTER_DELIVERY_DELETE), metadata=api.auth)
            assert made.watch.state == W.WATCH_STATE_ACTIVE
            assert made.watch.local_path == str(src)
            writers = start_writers(src, quick, slowly, gap_open=1.6, gap_append=0.3)
            try:
                await until(lambda: len(arrivals.count) >= len(expected), 150, "arrivals")
                await until(lambda: not files_below(src), 30, "the folder to empty")
            finally:
                for writer in writers:
                    writer.join()
            assert files_below(dst) == expected  # verified content, nothing half-written
            assert set(arrivals.count) == set(expected)
            assert set(arrivals.count.values()) == {1}  # exactly once
            shown = (await stub.GetWatch(W.GetWatchRequest(name="watches/hot"),
                                         metadata=api.auth)).watch
            stats = shown.stats
            assert (stats.files_delivered, stats.files_sending, stats.files_failed) == \
                (len(expected), 0, 0)
            assert stats.bytes_delivered == sum(len(v) for v in expected.values())
            listed = await api.transfers.ListTransfers(
                transfers_pb2.ListTransfersRequest(page_size=1000), metadata=api.auth)
            batches = [t for t in listed.transfers if t.labels.get("watch") == "watches/hot"]
            assert len(batches) == stats.transfer_count >= 2
            assert all(t.state == common_pb2.TRANSFER_STATE_COMPLETED for t in batches)
            assert sum(t.progress.files_done for t in batches) == len(expected)
            assert stats.last_transfer in {t.name for t in batches}

    asyncio.run(main())


def test_a_kill_in_the_middle_loses_nothing_and_sends_nothing_twice(tmp_path, dirs):
    require_root(users=True)
    src, dst = dirs
    moved = src.parent / (src.name + "-sent")
    moved.mkdir()
    os.chown(moved, *_ids(src))
    quick, slowly = plan(400, 20)
    expected = {name: content(name, size) for name, size in quick + slowly}
    arrivals = Arrivals()
    state = tmp_path / "a-state"
    sender = ServerProcess(state, free_port_args(), tmp_path / "a.log")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            b = await serve(stack, tmp_path / "b-state")
            b.events.subscribe(arrivals)
            sender.start()
            stack.callback(sender.stop)
            api = await login(stack, sender.api_port, ALICE)
            destination = await destination_to(api, b, ALICE)
            await watches_pb2_grpc.WatchServiceStub(api.channel).CreateWatch(watch_request(
                src, destination, dst, settle_time=Duration(nanos=500_000_000),
                after_delivery=W.AFTER_DELIVERY_MOVE, move_to=str(moved)), metadata=api.auth)
            writers = start_writers(src, quick, slowly, gap_open=0.8, gap_append=0.2)
            try:
                await until(lambda: len(arrivals.count) >= 60, 60, "the first arrivals")
                sender.signal(signal.SIGKILL)
                sender.wait(10)
                await asyncio.sleep(1.0)  # files keep arriving in the folder meanwhile
                sender.start()
                await until(lambda: len(arrivals.count) >= len(expected), 150, "arrivals")
                await until(lambda: len(files_below(moved)) == len(expected), 30, "moves")
            finally:
                for writer in writers:
                    writer.join()
            assert "ready" in sender.log() and sender.log().count("ready: api") == 2
            assert files_below(dst) == expected
            assert files_below(moved) == expected
            assert files_below(src) == {}
            assert set(arrivals.count.values()) == {1}, [
                (path, n) for path, n in arrivals.count.items() if n > 1]

    asyncio.run(main())


def _ids(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid
