"""The data channel over real UDP on loopback, memory to memory (issue #4's CPU target).

    .venv/bin/python -m bench.loopback_datachannel [--size 1G] [--policy fair|fixed]
                                                   [--datagram 1472]

A sender process and a receiver process (multiprocessing, spawn) each run the real asyncio
driver (`jetstream.transport.endpoint`) on a UDP socket bound to 127.0.0.1, with AES-GCM.
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
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe

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


def make_config(policy: str, datagram: int) -> DataChannelConfig:
    if policy == "fixed":
        return DataChannelConfig(rate_policy=RatePolicy.FIXED, target_rate=FIXED_RATE,
                                 max_rate=FIXED_RATE, max_datagram_size=datagram)
    return DataChannelConfig(max_datagram_size=datagram)


# --- receiver process --------------------------------------------------------------------------


def receiver_main(pipe: Pipe, ticket: tuple[bytes, bytes], policy: str, datagram: int) -> None:
    result = asyncio.run(_receive(pipe, SessionTicket(*ticket), make_config(policy, datagram)))
    pipe.send(result)


async def _receive(pipe: Pipe, ticket: SessionTicket, config: DataChannelConfig) -> Side:
    endpoint = DataEndpoint(bind_udp("127.0.0.1", 0), config)
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


def sender_main(pipe: Pipe, ticket: tuple[bytes, bytes], policy: str, datagram: int,
                port: int, size: int, trace: bool) -> None:
    config = make_config(policy, datagram)
    result = asyncio.run(_send(SessionTicket(*ticket), config, port, size, trace))
    pipe.send(result)


async def _trace(link: DataLink) -> None:
    """Once a second, the sender's view of the path (``--trace``), on stderr."""
    start = time.perf_counter()
    while True:
        await asyncio.sleep(1.0)
        s = link.statistics()
        print(f"{time.perf_counter() - start:5.1f}s {s.congestion_state:>10} "
              f"rate {s.pacing_rate * 8 / 1e9:.3f} Gbit/s cwnd {s.cwnd} "
              f"in flight {s.bytes_in_flight} srtt {s.smoothed_rtt * 1e3:.2f} ms "
              f"min {s.min_rtt * 1e3:.3f} ms lost {s.packets_lost} "
              f"sent {s.stream_bytes_sent >> 20} MiB", file=sys.stderr, flush=True)


async def _send(ticket: SessionTicket, config: DataChannelConfig, port: int, size: int,
                trace: bool = False) -> Side:
    endpoint = DataEndpoint(bind_udp("127.0.0.1", 0), config)
    buffer = memoryview(os.urandom(min(size, BUFFER)) if size else b"")
    acknowledged = asyncio.get_running_loop().create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, StreamAcknowledged) and not acknowledged.done():
            acknowledged.set_result(None)
        elif isinstance(event, ConnectionTerminated) and not acknowledged.done():
            acknowledged.set_exception(RuntimeError(f"sender: link closed: {event.reason}"))

    try:
        link = endpoint.connect(("127.0.0.1", port), ticket)
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


def run(size: int, policy: str, datagram: int, trace: bool = False) -> tuple[Side, Side]:
    ctx = mp.get_context("spawn")
    ticket = SessionTicket.generate(os.urandom)
    material = (ticket.ticket_id, ticket.secret)
    rx_parent, rx_child = ctx.Pipe()
    tx_parent, tx_child = ctx.Pipe()
    receiver = ctx.Process(target=receiver_main, args=(rx_child, material, policy, datagram))
    receiver.start()
    try:
        if not rx_parent.poll(30):
            raise RuntimeError("the receiver did not start")
        port = rx_parent.recv()
        sender = ctx.Process(target=sender_main, args=(tx_child, material, policy, datagram, port,
                                                             size, trace))
        sender.start()
        try:
            if not tx_parent.poll(TIMEOUT + 30):
                raise RuntimeError("the sender did not finish")
            tx: Side = tx_parent.recv()
            if not rx_parent.poll(30):
                raise RuntimeError("the receiver did not finish")
            rx: Side = rx_parent.recv()
        finally:
            sender.join(30)
            if sender.is_alive():
                sender.terminate()
    finally:
        receiver.join(30)
        if receiver.is_alive():
            receiver.terminate()
    return tx, rx


def table(size: int, policy: str, datagram: int, tx: Side, rx: Side) -> str:
    gbps = size * 8 / tx.wall / 1e9
    lines = [
        f"loopback data channel, {size / (1 << 20):.0f} MiB memory to memory, policy {policy},"
        f" {datagram}-byte datagrams, {DataChannelConfig().aead}",
        "",
        "| side | Gbit/s payload | packets/s | CPU s | CPU µs/packet | CPU % of wall "
        "| syscalls | GSO/GRO | retransmitted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, side, flag in (("sender", tx, tx.gso), ("receiver", rx, rx.gro)):
        lines.append(
            f"| {name} | {size * 8 / side.wall / 1e9:.2f} | {side.packets / side.wall:,.0f} "
            f"| {side.cpu:.2f} | {side.cpu / max(side.packets, 1) * 1e6:.2f} "
            f"| {side.cpu / side.wall:.0%} | {side.calls:,} | {'on' if flag else 'off'} "
            f"| {side.retransmitted:,} B |"
        )
    lines += ["", f"**{gbps:.2f} Gbit/s of payload** (sender: first byte queued to end acked)"]
    if rx.stream_bytes != size:
        lines.append(f"WARNING: the receiver counted {rx.stream_bytes} bytes, not {size}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1G", help="payload bytes (K/M/G suffixes)")
    parser.add_argument("--policy", choices=("fair", "fixed"), default="fair")
    parser.add_argument("--datagram", type=int, default=DataChannelConfig().max_datagram_size,
                        help="max_datagram_size (the default fits a 1500-byte MTU)")
    parser.add_argument("--trace", action="store_true",
                        help="print the sender's rate, window and RTT every second (stderr)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    tx, rx = run(size, args.policy, args.datagram, args.trace)
    print(table(size, args.policy, args.datagram, tx, rx))
    return 0 if rx.stream_bytes == size else 1


if __name__ == "__main__":
    sys.exit(main())
