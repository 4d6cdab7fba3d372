"""CPU per packet on each side of the data channel, for the compiled and the pure-Python path.

    .venv/bin/python -m bench.packetcost [--size 256M] [--datagram 1472] [--paths compiled,python]

Two measurements per path, each in a fresh process with ``JETSTREAM_DATAPATH`` set:

* **core**: two real sans-IO `Connection`s in one process hand their datagrams straight to
  each other (no sockets, no event loop, no link), the sender pacing at a fixed rate far
  above what it can reach; CPU time (`time.process_time`) is charged to the side whose
  method ran: the sender's `datagrams_to_send` and its ACK processing, the receiver's
  `receive_batch` of each batch, its ACKs and its application (which only counts bytes and returns
  credit). This is the protocol's own per-packet work.
* **socket**: `BatchSocket` sends bursts of full datagrams to another `BatchSocket` on
  127.0.0.1 (GSO/GRO where the kernel offers them, sendmmsg/recvmmsg on the compiled path);
  CPU per datagram of each side, the kernel's part included. A real link adds the driver
  (endpoint.py: event loop, timers), measured by bench.datachannel.

Per-packet figures do not depend on the link; the table is what docs/performance.md uses to
say how many cores a rate needs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jetstream.datachannel import Connection

PATHS = {"compiled": "auto", "python": "python"}


@dataclass
class Cost:
    path: str
    packets: int
    sender_us: float
    receiver_us: float
    socket_send_us: float
    socket_receive_us: float


def fire_timer(connection: Connection, now: float) -> None:
    deadline = connection.get_timer()
    if deadline is not None and deadline <= now:
        connection.handle_timer(now)


def core_cost(size: int, datagram: int) -> tuple[int, float, float]:
    """(data packets, sender CPU µs per packet, receiver CPU µs per packet)."""
    from jetstream.datachannel import (
        Connection,
        DataChannelConfig,
        RatePolicy,
        SessionTicket,
        StreamAcknowledged,
        StreamDataReceived,
    )
    from jetstream.datachannel.handshake import Role

    rate = 400_000_000_000
    config = DataChannelConfig(rate_policy=RatePolicy.FIXED, target_rate=rate, max_rate=rate,
                               max_datagram_size=datagram, keep_alive_interval=None)
    ticket = SessionTicket.generate(random.Random(1).randbytes)
    client = Connection(config, role=Role.CLIENT, ticket=ticket, rng=random.Random(2))
    server = Connection(config, role=Role.SERVER, ticket=ticket, rng=random.Random(3))
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    clock = time.perf_counter
    cpu = time.process_time
    client.connect(b, clock())
    block = memoryview(os.urandom(1 << 20))
    queued = 0
    received = 0
    done = False
    sender_cpu = receiver_cpu = 0.0
    while not done:
        t0 = cpu()
        now = clock()
        if client.is_closed or server.is_closed:
            raise RuntimeError("a connection closed during the measurement")
        while queued < size and client.send_buffer_space() >= len(block):
            client.send_stream_data(0, block, end_stream=queued + len(block) >= size)
            queued += len(block)
        fire_timer(client, now)
        out = client.datagrams_to_send(now)
        t1 = cpu()
        server.receive_batch([(data, a) for data, _ in out], now)
        while (event := server.next_event()) is not None:
            if type(event) is StreamDataReceived:
                received += len(event.data)
                server.data_consumed(len(event.data))
        fire_timer(server, now)
        back = server.datagrams_to_send(now)
        t2 = cpu()
        client.receive_batch([(data, b) for data, _ in back], now)
        while (event := client.next_event()) is not None:
            if isinstance(event, StreamAcknowledged):
                done = True
        t3 = cpu()
        sender_cpu += (t1 - t0) + (t3 - t2)
        receiver_cpu += t2 - t1
    if received != size:
        raise RuntimeError(f"received {received} of {size} bytes")
    packets = server.statistics().packets_received
    return packets, sender_cpu / packets * 1e6, receiver_cpu / packets * 1e6


def socket_cost(count: int, datagram: int) -> tuple[float, float]:
    """(send, receive) CPU µs per datagram through BatchSocket on loopback, bursts of 64."""
    import threading

    from jetstream.transport.sockets import set_buffer_sizes
    from jetstream.transport.udpio import BatchSocket

    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.bind(("127.0.0.1", 0))
    tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (rx_sock, tx_sock):
        set_buffer_sizes(s)
        s.setblocking(False)
    tx, rx = BatchSocket(tx_sock), BatchSocket(rx_sock)
    burst = [os.urandom(datagram) for _ in range(64)]
    addr = rx_sock.getsockname()
    got = 0
    receive_cpu = 0.0
    stop = threading.Event()

    def receiver() -> None:
        nonlocal got, receive_cpu
        start = time.thread_time()
        while not stop.is_set() or got < sent:
            n = len(rx.receive(512))
            got += n
            if not n:
                time.sleep(0.0002)
        receive_cpu = time.thread_time() - start

    sent = count + 1  # the receiver waits until `sent` is final
    thread = threading.Thread(target=receiver)
    thread.start()
    start = time.thread_time()
    done = 0
    while done < count:
        n = tx.send(burst, addr)
        done += n
        if n < len(burst):
            time.sleep(0.0002)
        while done - got > 20_000:  # stay within the socket buffers: no drops
            time.sleep(0.0002)
    send_cpu = time.thread_time() - start
    sent = done
    stop.set()
    thread.join(30)
    tx.close()
    rx.close()
    return send_cpu / done * 1e6, receive_cpu / max(got, 1) * 1e6


def measure(path: str, size: int, datagram: int) -> Cost:
    from jetstream.datachannel.native import DATAPATH

    if DATAPATH != path:
        raise RuntimeError(f"asked for the {path} path, running {DATAPATH}")
    packets, sender, receiver = core_cost(size, datagram)
    send, receive = socket_cost(min(packets, 200_000), datagram)
    return Cost(path, packets, sender, receiver, send, receive)


def run_path(path: str, size: int, datagram: int) -> Cost:
    env = dict(os.environ, JETSTREAM_DATAPATH=PATHS[path])
    done = subprocess.run(
        [sys.executable, "-m", "bench.packetcost", "--child", path, "--size", str(size),
         "--datagram", str(datagram)],
        env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path}: {done.stderr.strip()[-2000:]}")
    return Cost(**json.loads(done.stdout.strip().splitlines()[-1]))


def table(costs: list[Cost], size: int, datagram: int) -> str:
    lines = [
        f"CPU per {datagram}-byte packet, {size >> 20} MiB, AES-128-GCM "
        f"(bench.packetcost; µs of CPU per packet)",
        "",
        "| path | core: sender | core: receiver | socket: send | socket: receive "
        "| sender total | receiver total |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        lines.append(
            f"| {c.path} | {c.sender_us:.2f} | {c.receiver_us:.2f} | {c.socket_send_us:.2f} "
            f"| {c.socket_receive_us:.2f} | {c.sender_us + c.socket_send_us:.2f} "
            f"| {c.receiver_us + c.socket_receive_us:.2f} |")
    return "\n".join(lines)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="256M", help="payload of the core measurement")
    parser.add_argument("--datagram", type=int, default=1472, help="max_datagram_size")
    parser.add_argument("--paths", default="compiled,python",
                        help="comma-separated: compiled, python")
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    if args.child:
        print(json.dumps(asdict(measure(args.child, size, args.datagram))))
        return 0
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown path(s): {', '.join(sorted(unknown))}")
    print(table([run_path(p, size, args.datagram) for p in paths], size, args.datagram))
    return 0


if __name__ == "__main__":
    sys.exit(main())
