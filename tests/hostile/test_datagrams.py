"""Hostile datagrams at a real server's receive port: two `jetstream server` processes on
loopback, server A pushing to server B through a relay that taps the datagrams (relay.py).

* Replays: every genuine short-header datagram of a real transfer is sent to B again
  twice while the session runs (at once, and 64 datagrams later), and the whole capture
  once more after it, from the address B knew the sender by. Each is rejected, counted in
  `jetstream_datachannel_rejected_datagrams_total`, and never answered.
* A flood of 10^6 random and mutated datagrams (flood.py) while a real transfer runs: not
  one byte comes back, every datagram is rejected (counted) unless the kernel dropped it,
  B's memory and CPU stay within the bounds below, and the transfer finishes intact, as
  does a new one afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import time
import urllib.request
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from jetstream.datachannel import wire
from jetstream.v1 import common_pb2, transfers_pb2
from tests.hostile import procfs
from tests.hostile.flood import Flood
from tests.hostile.relay import Relay
from tests.support.servers import READY, ServerProcess, free_port_args
from tests.system.users import ALICE, require_root
from tests.transfers.helpers import (
    chown_tree,
    destination_to,
    login,
    manifest_of,
    owned_dir,
    push,
    remove,
    tree_digest,
    wait_terminal,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

DATAGRAMS = 1_000_000
RSS_GROWTH_DURING = 64 << 20
"""Bound on B's RSS above its level before the flood, at any sample during it (the flood
runs beside a transfer; both need buffers)."""
RSS_GROWTH_AFTER = 48 << 20
"""Bound on what B keeps once the flood and the transfers are over."""
CPU_PER_DATAGRAM = 20e-6
"""Bound on B's CPU seconds per hostile datagram, the transfer beside it included."""
IDLE_CPU = 0.05
"""Bound on B's CPU share (of one core) once the attack is over: nothing keeps spinning."""
SLOW = common_pb2.RateLimit(max_bps=4_000_000)
"""The transfer beside the flood runs slowly (64 s unless lifted), so it outlasts the flood."""
_REJECTED = re.compile(r'^jetstream_datachannel_rejected_datagrams_total\{reason="(\w+)"\} (\S+)$',
                       re.MULTILINE)


@dataclass
class Servers:
    a: ServerProcess
    b: ServerProcess
    udp_port: int
    """B's receive port."""
    src: Path
    dst: Path

    def rejected(self) -> Counter[str]:
        """B's rejected datagrams by reason, as Prometheus scrapes them."""
        text = urllib.request.urlopen(f"http://{self.b.metrics}/metrics", timeout=10).read()
        return Counter({reason: int(float(value))
                        for reason, value in _REJECTED.findall(text.decode())})

    def queue(self) -> procfs.UdpQueue:
        return procfs.udp_queue(self.udp_port)

    def drained(self) -> procfs.UdpQueue:
        """B's socket once B has read everything queued on it."""
        deadline = time.monotonic() + 30
        while self.queue().waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the last batch read is being processed
        return self.queue()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    require_root(users=True)
    base = tmp_path_factory.mktemp("hostile")
    a = ServerProcess(base / "a", free_port_args(), base / "a.log").start()
    b = ServerProcess(base / "b", free_port_args(), base / "b.log").start()
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    try:
        ready = READY.search(b.log())
        assert ready is not None
        yield Servers(a, b, int(ready["udp"].rpartition(":")[2]), src, dst)
    finally:
        a.stop()
        b.stop()
        remove(src, dst)


def tree(root: Path, big: int, small: int = 0) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(big))
    for i in range(small):
        (root / "sub" / f"s{i}.dat").write_bytes(os.urandom(2000 + 13 * i))
    chown_tree(root, ALICE)
    return root


async def transfer(servers: Servers, relay: Relay, source: Path, name: str,
                   rate: common_pb2.RateLimit | None = None,
                   lift: asyncio.Event | None = None) -> None:
    """Push `source` from A to B through `relay`; it must arrive complete and identical.
    With `lift`, the rate limit is lifted once it is set."""
    async with AsyncExitStack() as stack:
        api = await login(stack, servers.a.api_port, ALICE)
        destination = await destination_to(api, servers.b.api_port, ALICE, name, relay.port)
        manifest = await manifest_of(api, source)
        target = servers.dst / name
        made = await push(api, destination, manifest, str(target),
                          **({"rate_limit": rate} if rate else {}))
        if lift is not None:
            await lift.wait()
            try:
                await api.transfers.UpdateTransfer(transfers_pb2.UpdateTransferRequest(
                    transfer=transfers_pb2.Transfer(name=made.name,
                                                    rate_limit=common_pb2.RateLimit()),
                    update_mask={"paths": ["rate_limit"]}), metadata=api.auth)
            except grpc.aio.AioRpcError as exc:  # finished already: nothing to lift
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
        done = await wait_terminal(api, made.name, timeout=180)
        assert done.state == common_pb2.TRANSFER_STATE_COMPLETED, done.error
    assert tree_digest(target / source.name) == tree_digest(source)
    shutil.rmtree(target)


def test_replayed_datagrams_are_rejected_counted_and_unanswered(servers):
    relay = Relay(("127.0.0.1", servers.udp_port), replay_back=64).start()
    try:
        source = tree(servers.src / "replayed", 16 << 20, small=300)
        before = servers.rejected()
        relay.recording = True
        asyncio.run(transfer(servers, relay, source, "replays"))
        relay.recording = False
        servers.drained()
        during, replayed_during = servers.rejected() - before, relay.replayed
        captured = relay.captured
        answers = relay.answers
        drops = servers.queue().drops
        relay.replay(captured)  # later: the session is over
        servers.drained()
        later = servers.rejected() - before - during
        assert relay.answers == answers, "B answered a replay"
        assert servers.queue().drops == drops
    finally:
        relay.stop()
    print(f"\nreplays during the session: {replayed_during} sent, rejected {dict(during)}; "
          f"after it: {len(captured)} sent, rejected {dict(later)}")
    assert replayed_during > 500
    assert during["malformed"] == during["auth"] == 0
    # Each replay was counted: as a replay while the connection lived, unrouted once it
    # was gone; the sender's own retransmissions may add a few duplicates.
    assert replayed_during <= during["replay"] + during["unrouted"] <= replayed_during + 100
    assert during["replay"] >= 0.9 * replayed_during
    assert later == Counter(unrouted=len(captured))


def test_a_million_hostile_datagrams_get_no_answer_and_bounded_resources(servers):
    pid = servers.b.proc.pid  # type: ignore[union-attr]
    relay = Relay(("127.0.0.1", servers.udp_port)).start()
    marks = [("start", time.monotonic())]
    slow = tree(servers.src / "slow", 32 << 20)
    after = tree(servers.src / "after", 1 << 20, small=20)
    with procfs.Sampler(pid) as sampler:
        try:
            relay.recording = True  # for its INITIAL: a spent ticket
            asyncio.run(transfer(servers, relay, after, "warm-up"))  # B's buffers in use
            relay.recording = False
            relay.recent.clear()  # the flood mutates the next session's datagrams only
            marks.append(("warm-up", time.monotonic()))
            time.sleep(1.0)
            baseline = sampler.sample()
            fds = procfs.open_fds(pid)
            rejected, drops = servers.rejected(), servers.queue().drops
            tickets = [d[wire.LONG_HEADER_SIZE:wire.INITIAL_HEADER_SIZE]
                       for d in relay.captured if d[0] & wire.FLAG_LONG]
            flood = Flood(("127.0.0.1", servers.udp_port), relay.genuine, tickets)

            async def attack() -> tuple[float, float, int]:
                lift = asyncio.Event()
                running = asyncio.create_task(transfer(servers, relay, slow, "flooded",
                                                       SLOW, lift))
                await asyncio.to_thread(relay.wait_forwarded, relay.forwarded + 16, 60)
                genuine_before = relay.forwarded
                begin = time.monotonic()
                await asyncio.to_thread(flood.send, DATAGRAMS)
                end = time.monotonic()
                genuine = relay.forwarded - genuine_before
                lift.set()  # the transfer may finish now
                await running
                return begin, end, genuine

            begin, end, genuine = asyncio.run(attack())
            marks += [("flood", begin), ("flooded", end), ("transfer", time.monotonic())]
            queue = servers.drained()
            flooded = sampler.between(begin, end)
            cpu = flooded[-1].cpu - baseline.cpu
            counted = servers.rejected() - rejected
            asyncio.run(transfer(servers, relay, after, "afterwards"))
            marks.append(("afterwards", time.monotonic()))
            time.sleep(1.0)
            idle_start = sampler.sample()
            time.sleep(2.0)
            idle_end = sampler.sample()
            replies = flood.replies()
            flood.close()
        finally:
            relay.stop()
    peak = max(s.rss for s in flooded)
    idle = (idle_end.cpu - idle_start.cpu) / (idle_end.at - idle_start.at)
    dropped = queue.drops - drops
    print(f"\nflood: {flood.total:,} datagrams ({flood.sent_bytes / 2**20:,.0f} MiB) in "
          f"{end - begin:.1f} s: {dict(flood.sent)}\n"
          f"B rejected {dict(counted)} (total {sum(counted.values()):,}), kernel dropped "
          f"{dropped}, genuine datagrams meanwhile {genuine:,}; replies {replies} bytes\n"
          f"B RSS {baseline.rss / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} during, "
          f"{idle_end.rss / 2**20:.0f} after; CPU {cpu:.1f} s "
          f"({cpu / flood.total * 1e6:.1f} us per datagram), {idle:.1%} of a core after; "
          f"fds {fds} before, {procfs.open_fds(pid)} after\nseconds: "
          + ", ".join(f"{b} {t2 - t1:.1f}" for (_, t1), (b, t2) in itertools.pairwise(marks)))
    assert flood.total >= DATAGRAMS
    assert replies == 0
    # Nothing hostile was taken: each datagram was rejected (and counted) or dropped by
    # the kernel; genuine ones add at most their own duplicates.
    assert flood.total <= sum(counted.values()) + dropped <= flood.total + genuine
    assert dropped <= flood.total // 1000
    assert peak - baseline.rss <= RSS_GROWTH_DURING
    assert idle_end.rss - baseline.rss <= RSS_GROWTH_AFTER
    assert cpu / flood.total <= CPU_PER_DATAGRAM
    assert idle <= IDLE_CPU
    assert procfs.open_fds(pid) <= fds + 2
