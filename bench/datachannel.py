"""The data channel alone over real UDP, memory to memory: on loopback or an emulated link.

    .venv/bin/python -m bench.datachannel [--size 1G] [--policy fair|fixed] [--datagram 1472]
                                          [--profile b] [--trace] [--flows N]

A sender process and a receiver process (multiprocessing, spawn) each run the real asyncio
driver (`jetstream.transport.endpoint`) with AES-GCM: on 127.0.0.1 (issue #4's CPU target),
or with `--profile` (root) in the two namespaces of a bench.linkemu link, the sender in A and
the receiver in B, which isolates rate control from the file engine on the WAN profiles.
The sender queues memoryview slices of one preallocated buffer on one stream; the receiver
counts the bytes and returns the flow-control credit at once. No disk, no transfer engine.

The table gives payload (stream) Gbit/s from the sender's first byte queued to the
acknowledgement of the stream's end, datagrams per second, and the CPU time of each process
(`time.process_time`, user + system, over the same interval) per datagram it sent or received.
The kernel's loopback work is partly charged to the sending process.

``--flows N`` splits the payload over N flows, each with its own socket, connection and
worker thread on both sides (jetstream.transport.flowgroup); flow 0's controller paces them
all (jetstream.datachannel.grouprate). Set JETSTREAM_DATAPATH=python for the pure path.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe

from bench.nets import LinkNet, LoopNet
from bench.profiles import parse_profile
from jetstream import gcpolicy
from jetstream.datachannel import (
    DataChannelConfig,
    RatePolicy,
    SessionTicket,
    StreamAcknowledged,
    StreamDataReceived,
    StreamEnded,
)
from jetstream.datachannel.events import ConnectionTerminated, Event
from jetstream.datachannel.grouprate import follower_config, leader_config
from jetstream.datachannel.native import DATAPATH
from jetstream.transport.endpoint import DataEndpoint, DataLink
from jetstream.transport.flowgroup import follow_leader, run_in_workers
from jetstream.transport.sockets import bind_udp

CHUNK = 1 << 20
BUFFER = 64 << 20
FIXED_RATE = 3_000_000_000
TIMEOUT = 600.0
CLONE_NEWNET = 0x40000000


@dataclass
class Side:
    wall: float
    cpu: float
    packets: int
    bytes: int
    stream_bytes: int
    retransmitted: int
    gso: bool
    gro: bool
    calls: int


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


@dataclass(frozen=True)
class Place:
    """Where one process runs: a network namespace (None: the caller's) and its address."""

    netns: str | None
    addr: str

    def enter(self) -> None:
        """Move this (new, single-threaded) process into the namespace (3.11 lacks os.setns)."""
        if self.netns is not None:
            with open(f"/run/netns/{self.netns}") as ns:
                if ctypes.CDLL(None, use_errno=True).setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {self.netns}")


def make_config(policy: str, datagram: int, rate_bps: int) -> DataChannelConfig:
    if policy == "fixed":
        return DataChannelConfig(rate_policy=RatePolicy.FIXED, target_rate=rate_bps,
                                 max_rate=rate_bps, max_datagram_size=datagram)
    return DataChannelConfig(max_datagram_size=datagram)


# --- receiver process --------------------------------------------------------------------------


Tickets = list[tuple[bytes, bytes]]


def receiver_main(pipe: Pipe, place: Place, tickets: Tickets,
                  config: DataChannelConfig) -> None:
    place.enter()
    gcpolicy.settle()  # as the servers do
    pipe.send(asyncio.run(_receive(pipe, place, [SessionTicket(*t) for t in tickets], config)))


@dataclass
class _Clock:
    """First data and last end over all flows: the receiver's measured interval."""

    start: tuple[float, float] | None = None
    ended: int = 0
    end: tuple[float, float] = (0.0, 0.0)


async def _receive_flow(index: int, pipe: Pipe, place: Place, ticket: SessionTicket,
                        config: DataChannelConfig, clock: _Clock, lock: threading.Lock,
                        ) -> tuple[int, int, int, int, bool, bool]:
    """One flow's receiving end, in its worker: (packets, bytes, stream bytes, calls, ...)."""
    endpoint = DataEndpoint(bind_udp(place.addr, 0), config)
    done = asyncio.get_running_loop().create_future()
    received = 0

    def on_link(link: DataLink) -> None:
        def on_event(event: Event) -> None:
            nonlocal received
            if isinstance(event, StreamDataReceived):
                if clock.start is None:
                    with lock:
                        if clock.start is None:
                            clock.start = (time.perf_counter(), time.process_time())
                received += len(event.data)
                link.consumed(len(event.data))
            elif isinstance(event, StreamEnded) and not done.done():
                with lock:
                    clock.ended += 1
                    clock.end = (time.perf_counter(), time.process_time())
                done.set_result(link)
            elif isinstance(event, ConnectionTerminated) and not done.done():
                done.set_exception(RuntimeError(f"receiver: link closed: {event.reason}"))

        link.on_event = on_event

    endpoint.expect(ticket, on_link)
    with lock:  # the workers start in any order: say which flow's port this is
        pipe.send((index, endpoint.port))
    try:
        link = await asyncio.wait_for(done, TIMEOUT)
        stats = link.statistics()
        await asyncio.sleep(0.2)  # let the final ACK go out before closing
        return (stats.packets_received, stats.bytes_received, received,
                endpoint.socket.recv_calls, endpoint.socket.gso, endpoint.socket.gro)
    finally:
        endpoint.close()


async def _receive(pipe: Pipe, place: Place, tickets: list[SessionTicket],
                   config: DataChannelConfig) -> Side:
    clock, lock = _Clock(), threading.Lock()
    flows = await run_in_workers([
        functools.partial(_receive_flow, i, pipe, place, ticket, config, clock, lock)
        for i, ticket in enumerate(tickets)])
    assert clock.start is not None
    return Side(clock.end[0] - clock.start[0], clock.end[1] - clock.start[1],
                sum(f[0] for f in flows), sum(f[1] for f in flows), sum(f[2] for f in flows),
                0, flows[0][4], flows[0][5], sum(f[3] for f in flows))


# --- sender process ----------------------------------------------------------------------------


def sender_main(pipe: Pipe, place: Place, tickets: Tickets,
                config: DataChannelConfig, peers: list[tuple[str, int]], size: int,
                trace: bool) -> None:
    place.enter()
    gcpolicy.settle()
    pipe.send(asyncio.run(_send(place, [SessionTicket(*t) for t in tickets], config, peers,
                                size, trace)))


async def _trace(link: DataLink) -> None:
    """Every half second, the sender's view of the path (``--trace``), on stderr."""
    start = time.perf_counter()
    last = 0
    while True:
        await asyncio.sleep(0.5)
        s = link.statistics()
        acked = s.stream_bytes_sent - s.bytes_in_flight
        print(f"{time.perf_counter() - start:5.1f}s {s.congestion_state:>10} "
              f"pacing {s.pacing_rate * 8 / 1e6:7.1f} Mbit/s "
              f"delivery {s.delivery_rate * 8 / 1e6:7.1f} "
              f"sent {(acked - last) * 16 / 1e6:7.1f} Mbit/s cwnd {s.cwnd >> 10} KiB "
              f"in flight {s.bytes_in_flight >> 10} KiB srtt {s.smoothed_rtt * 1e3:.1f} ms "
              f"min {s.min_rtt * 1e3:.2f} ms lost {s.packets_lost}",
              file=sys.stderr, flush=True)
        last = acked


async def _send_flow(index: int, place: Place, ticket: SessionTicket, config: DataChannelConfig,
                     peer: tuple[str, int], share: tuple[int, int], buffer: memoryview,
                     leader: list[DataLink], trace: bool,
                     ) -> tuple[int, int, int, int, bool, bool]:
    """One flow's sending end, in its worker: the bytes [share) of the payload as stream
    `index` (each connection has its own streams)."""
    endpoint = DataEndpoint(bind_udp(place.addr, 0), config)
    acknowledged = asyncio.get_running_loop().create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, StreamAcknowledged) and not acknowledged.done():
            acknowledged.set_result(None)
        elif isinstance(event, ConnectionTerminated) and not acknowledged.done():
            acknowledged.set_exception(RuntimeError(f"sender: link closed: {event.reason}"))

    tasks: list[asyncio.Task[None]] = []
    try:
        link = endpoint.connect(peer, ticket)
        link.on_event = on_event
        if index == 0:
            leader.append(link)
        await asyncio.wait_for(link.established, 10)
        if index > 0:
            tasks.append(asyncio.ensure_future(
                follow_leader(lambda: leader[0] if leader else None, link)))
        elif trace:
            tasks.append(asyncio.ensure_future(_trace(link)))
        sent, stop = share
        while sent < stop:
            start = sent % len(buffer)
            length = min(CHUNK, stop - sent, len(buffer) - start)
            await link.send_when_room(index, buffer[start:start + length])
            sent += length
        link.send(index, b"", end_stream=True)
        await asyncio.wait_for(acknowledged, TIMEOUT)
        stats = link.statistics()
        return (stats.packets_sent, stats.bytes_sent, stats.bytes_retransmitted,
                endpoint.socket.send_calls, endpoint.socket.gso, endpoint.socket.gro)
    finally:
        for task in tasks:
            task.cancel()
        endpoint.close()


async def _send(place: Place, tickets: list[SessionTicket], config: DataChannelConfig,
                peers: list[tuple[str, int]], size: int, trace: bool = False) -> Side:
    buffer = memoryview(os.urandom(min(size, BUFFER)) if size else b"")
    n = len(tickets)
    bounds = [size * i // n for i in range(n + 1)]
    leader: list[DataLink] = []
    configs = [leader_config(config, n)] + [follower_config(config, n)] * (n - 1)
    wall, cpu = time.perf_counter(), time.process_time()
    flows = await run_in_workers([
        functools.partial(_send_flow, i, place, tickets[i], configs[i], peers[i],
                          (bounds[i], bounds[i + 1]), buffer, leader, trace)
        for i in range(n)])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Side(wall, cpu, sum(f[0] for f in flows), sum(f[1] for f in flows), size,
                sum(f[2] for f in flows), flows[0][4], flows[0][5], sum(f[3] for f in flows))


# --- parent ------------------------------------------------------------------------------------


def run(size: int, config: DataChannelConfig, sender: Place, receiver: Place,
        trace: bool = False, flows: int = 1) -> tuple[Side, Side]:
    ctx = mp.get_context("spawn")
    tickets = [SessionTicket.generate(os.urandom) for _ in range(flows)]
    material = [(t.ticket_id, t.secret) for t in tickets]
    rx_parent, rx_child = ctx.Pipe()
    tx_parent, tx_child = ctx.Pipe()
    rx_proc = ctx.Process(target=receiver_main, args=(rx_child, receiver, material, config))
    rx_proc.start()
    try:
        ports = [0] * flows
        for _ in range(flows):
            if not rx_parent.poll(30):
                raise RuntimeError("the receiver did not start")
            index, port = rx_parent.recv()
            ports[index] = port
        tx_proc = ctx.Process(target=sender_main, args=(
            tx_child, sender, material, config, [(receiver.addr, p) for p in ports], size,
            trace))
        tx_proc.start()
        try:
            if not tx_parent.poll(TIMEOUT + 30):
                raise RuntimeError("the sender did not finish")
            tx: Side = tx_parent.recv()
            if not rx_parent.poll(30):
                raise RuntimeError("the receiver did not finish")
            rx: Side = rx_parent.recv()
        finally:
            tx_proc.join(30)
            if tx_proc.is_alive():
                tx_proc.terminate()
    finally:
        rx_proc.join(30)
        if rx_proc.is_alive():
            rx_proc.terminate()
    return tx, rx


def table(size: int, where: str, policy: str, datagram: int, tx: Side, rx: Side,
          flows: int = 1) -> str:
    gbps = size * 8 / tx.wall / 1e9
    lines = [
        f"data channel on {where}, {size / (1 << 20):.0f} MiB memory to memory, policy {policy},"
        f" {datagram}-byte datagrams, {DataChannelConfig().aead}, {flows} flow(s),"
        f" {DATAPATH} data path",
        "",
        "| side | Mbit/s payload | packets/s | CPU s | CPU µs/packet | CPU % of wall "
        "| syscalls | GSO/GRO | retransmitted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, side, flag in (("sender", tx, tx.gso), ("receiver", rx, rx.gro)):
        lines.append(
            f"| {name} | {size * 8 / side.wall / 1e6:,.1f} | {side.packets / side.wall:,.0f} "
            f"| {side.cpu:.2f} | {side.cpu / max(side.packets, 1) * 1e6:.2f} "
            f"| {side.cpu / side.wall:.0%} | {side.calls:,} | {'on' if flag else 'off'} "
            f"| {side.retransmitted:,} B |"
        )
    lines += ["", f"**{gbps * 1000:,.1f} Mbit/s of payload** (sender: first byte queued to end"
                  " acked)"]
    if rx.stream_bytes != size:
        lines.append(f"WARNING: the receiver counted {rx.stream_bytes} bytes, not {size}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1G", help="payload bytes (K/M/G suffixes)")
    parser.add_argument("--policy", choices=("fair", "fixed"), default="fair")
    parser.add_argument("--rate", type=float, default=None,
                        help="fixed policy: bits/s (default 3e9 on loopback, 95%% of the link)")
    parser.add_argument("--datagram", type=int, default=DataChannelConfig().max_datagram_size,
                        help="max_datagram_size (the default fits a 1500-byte MTU)")
    parser.add_argument("--profile", default=None,
                        help="a bench profile (a-e or name=RATE,RTT,LOSS): run over that link")
    parser.add_argument("--prefix", default="jsdc-",
                        help="namespace name prefix of the emulated link (with --profile)")
    parser.add_argument("--trace", action="store_true",
                        help="print the sender's rate, window and RTT twice a second (stderr)")
    parser.add_argument("--lo-address", default=None, metavar="ADDR",
                        help="root: loopback in a namespace of its own (<prefix>lo), at this "
                             "private address instead of 127.0.0.1, so --datagram is kept "
                             "(127.0.0.1 gets 32 kB datagrams): per-packet costs as on a WAN, "
                             "without an emulator")
    parser.add_argument("--flows", type=int, default=1,
                        help="flows (sockets, connections, worker threads) per side; flow 0's "
                             "controller paces them all")
    args = parser.parse_args(argv)
    if not 1 <= args.flows <= 16:
        parser.error("--flows: 1 to 16")
    size = parse_size(args.size)
    if args.lo_address is not None:
        config = make_config(args.policy, args.datagram, int(args.rate or FIXED_RATE))
        with LoopNet(parse_profile("lo"), args.prefix) as net:
            subprocess.run(["ip", "-n", net.ns_a, "addr", "add", f"{args.lo_address}/32",
                            "dev", "lo"], check=True, capture_output=True, timeout=20)
            place = Place(net.ns_a, args.lo_address)
            tx, rx = run(size, config, place, place, args.trace, args.flows)
        where = f"loopback at {args.lo_address} (namespace {net.ns_a})"
    elif args.profile is None:
        rate = args.rate or FIXED_RATE
        config = make_config(args.policy, args.datagram, int(rate))
        tx, rx = run(size, config, Place(None, "127.0.0.1"), Place(None, "127.0.0.1"),
                     args.trace, args.flows)
        where = "loopback"
    else:
        profile = parse_profile(args.profile)
        rate = args.rate or 0.95 * (profile.rate_bps or FIXED_RATE)
        config = make_config(args.policy, args.datagram, int(rate))
        with LinkNet(profile, args.prefix) as net:
            tx, rx = run(size, config, Place(net.ns_a, net.addr_a), Place(net.ns_b, net.addr_b),
                         args.trace, args.flows)
            where = net.describe()
    print(table(size, where, args.policy, args.datagram, tx, rx, args.flows))
    return 0 if rx.stream_bytes == size else 1


if __name__ == "__main__":
    sys.exit(main())
