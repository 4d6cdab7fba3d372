"""The data channel alone over real UDP, memory to memory: on loopback or an emulated link.

    .venv/bin/python -m bench.datachannel [--size 1G] [--policy fair|fixed] [--datagram 1472]
                                          [--profile b] [--trace]

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
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe

from bench.nets import LinkNet
from bench.profiles import parse_profile
from jetstream.datachannel import (
    DataChannelConfig,
    RatePolicy,
    SessionTicket,
    StreamAcknowledged,
    StreamDataReceived,
    StreamEnded,
)
from jetstream.datachannel.events import ConnectionTerminated, Event
from jetstream.transport.endpoint import DataEndpoint, DataLink
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


def receiver_main(pipe: Pipe, place: Place, ticket: tuple[bytes, bytes],
                  config: DataChannelConfig) -> None:
    place.enter()
    pipe.send(asyncio.run(_receive(pipe, place, SessionTicket(*ticket), config)))


async def _receive(pipe: Pipe, place: Place, ticket: SessionTicket,
                   config: DataChannelConfig) -> Side:
    endpoint = DataEndpoint(bind_udp(place.addr, 0), config)
    done = asyncio.get_running_loop().create_future()
    start: list[float] = []
    received = 0

    def on_link(link: DataLink) -> None:
        def on_event(event: Event) -> None:
            nonlocal received
            if isinstance(event, StreamDataReceived):
                if not start:
                    start.extend((time.perf_counter(), time.process_time()))
                received += len(event.data)
                link.consumed(len(event.data))
            elif isinstance(event, StreamEnded) and not done.done():
                done.set_result((time.perf_counter(), time.process_time(), link))
            elif isinstance(event, ConnectionTerminated) and not done.done():
                done.set_exception(RuntimeError(f"receiver: link closed: {event.reason}"))

        link.on_event = on_event

    endpoint.expect(ticket, on_link)
    pipe.send(endpoint.port)
    try:
        end_wall, end_cpu, link = await asyncio.wait_for(done, TIMEOUT)
        stats = link.statistics()
        await asyncio.sleep(0.2)  # let the final ACK go out before closing
        return Side(end_wall - start[0], end_cpu - start[1], stats.packets_received,
                    stats.bytes_received, received, 0, endpoint.socket.gso,
                    endpoint.socket.gro, endpoint.socket.recv_calls)
    finally:
        endpoint.close()


# --- sender process ----------------------------------------------------------------------------


def sender_main(pipe: Pipe, place: Place, ticket: tuple[bytes, bytes],
                config: DataChannelConfig, peer: tuple[str, int], size: int,
                trace: bool) -> None:
    place.enter()
    pipe.send(asyncio.run(_send(place, SessionTicket(*ticket), config, peer, size, trace)))


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


async def _send(place: Place, ticket: SessionTicket, config: DataChannelConfig,
                peer: tuple[str, int], size: int, trace: bool = False) -> Side:
    endpoint = DataEndpoint(bind_udp(place.addr, 0), config)
    buffer = memoryview(os.urandom(min(size, BUFFER)) if size else b"")
    acknowledged = asyncio.get_running_loop().create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, StreamAcknowledged) and not acknowledged.done():
            acknowledged.set_result(None)
        elif isinstance(event, ConnectionTerminated) and not acknowledged.done():
            acknowledged.set_exception(RuntimeError(f"sender: link closed: {event.reason}"))

    try:
        link = endpoint.connect(peer, ticket)
        link.on_event = on_event
        await asyncio.wait_for(link.established, 10)
        tracer = asyncio.ensure_future(_trace(link)) if trace else None
        wall, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while sent < size:
            length = min(CHUNK, size - sent)
            start = sent % len(buffer)
            length = min(length, len(buffer) - start)
            await link.wait_for_space(length)
            link.send(0, buffer[start:start + length])
            sent += length
        link.send(0, b"", end_stream=True)
        await asyncio.wait_for(acknowledged, TIMEOUT)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if tracer is not None:
            tracer.cancel()
        stats = link.statistics()
        return Side(wall, cpu, stats.packets_sent, stats.bytes_sent, size,
                    stats.bytes_retransmitted, endpoint.socket.gso, endpoint.socket.gro,
                    endpoint.socket.send_calls)
    finally:
        endpoint.close()


# --- parent ------------------------------------------------------------------------------------


def run(size: int, config: DataChannelConfig, sender: Place, receiver: Place,
        trace: bool = False) -> tuple[Side, Side]:
    ctx = mp.get_context("spawn")
    ticket = SessionTicket.generate(os.urandom)
    material = (ticket.ticket_id, ticket.secret)
    rx_parent, rx_child = ctx.Pipe()
    tx_parent, tx_child = ctx.Pipe()
    rx_proc = ctx.Process(target=receiver_main, args=(rx_child, receiver, material, config))
    rx_proc.start()
    try:
        if not rx_parent.poll(30):
            raise RuntimeError("the receiver did not start")
        port = rx_parent.recv()
        tx_proc = ctx.Process(target=sender_main, args=(
            tx_child, sender, material, config, (receiver.addr, port), size, trace))
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


def table(size: int, where: str, policy: str, datagram: int, tx: Side, rx: Side) -> str:
    gbps = size * 8 / tx.wall / 1e9
    lines = [
        f"data channel on {where}, {size / (1 << 20):.0f} MiB memory to memory, policy {policy},"
        f" {datagram}-byte datagrams, {DataChannelConfig().aead}",
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
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    if args.profile is None:
        rate = args.rate or FIXED_RATE
        config = make_config(args.policy, args.datagram, int(rate))
        tx, rx = run(size, config, Place(None, "127.0.0.1"), Place(None, "127.0.0.1"),
                     args.trace)
        where = "loopback"
    else:
        profile = parse_profile(args.profile)
        rate = args.rate or 0.95 * (profile.rate_bps or FIXED_RATE)
        config = make_config(args.policy, args.datagram, int(rate))
        with LinkNet(profile, args.prefix) as net:
            tx, rx = run(size, config, Place(net.ns_a, net.addr_a), Place(net.ns_b, net.addr_b),
                         args.trace)
            where = net.describe()
    print(table(size, where, args.policy, args.datagram, tx, rx))
    return 0 if rx.stream_bytes == size else 1


if __name__ == "__main__":
    sys.exit(main())
