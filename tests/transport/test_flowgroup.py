"""A transfer's flows in worker threads over real loopback sockets, paced by one leader."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading

import pytest

from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.events import StreamAcknowledged, StreamDataReceived, StreamEnded
from jetstream.datachannel.grouprate import follower_config, leader_config
from jetstream.transport.endpoint import DataEndpoint, DataLink, random_ticket
from jetstream.transport.flowgroup import FlowWorker, follow_leader, run_in_workers

FLOWS = 3


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def test_three_flows_carry_their_parts_each_on_its_own_socket_and_thread() -> None:
    payload = os.urandom(6 << 20)
    parts = [payload[i * len(payload) // FLOWS:(i + 1) * len(payload) // FLOWS]
             for i in range(FLOWS)]
    tickets = [random_ticket() for _ in range(FLOWS)]
    config = DataChannelConfig()
    ports: dict[int, int] = {}
    ready = threading.Barrier(2 * FLOWS)  # every receiver bound before any sender starts
    leader: list[DataLink] = []
    followed: list[float] = []

    async def receive(i: int) -> tuple[bytes, str]:
        endpoint = DataEndpoint(udp(), config)
        received = bytearray(len(parts[i]))
        done = asyncio.get_running_loop().create_future()

        def on_link(link: DataLink) -> None:
            def on_event(event) -> None:
                if isinstance(event, StreamDataReceived):
                    received[event.offset:event.offset + len(event.data)] = event.data
                    link.consumed(len(event.data))
                elif isinstance(event, StreamEnded) and not done.done():
                    done.set_result(None)
            link.on_event = on_event

        endpoint.expect(tickets[i], on_link)
        ports[i] = endpoint.port
        await asyncio.to_thread(ready.wait, 10)
        try:
            await asyncio.wait_for(done, 60)
            await asyncio.sleep(0.1)  # the last ACK
        finally:
            endpoint.close()
        return bytes(received), threading.current_thread().name

    async def send(i: int) -> tuple[int, str]:
        await asyncio.to_thread(ready.wait, 10)
        own = leader_config(config, FLOWS) if i == 0 else follower_config(config, FLOWS)
        endpoint = DataEndpoint(udp(), own)
        acked = asyncio.get_running_loop().create_future()
        link = endpoint.connect(("127.0.0.1", ports[i]), tickets[i])
        link.on_event = lambda e: (isinstance(e, StreamAcknowledged) and not acked.done()
                                   and acked.set_result(None))
        if i == 0:
            leader.append(link)
        follower = None
        try:
            await asyncio.wait_for(link.established, 10)
            if i > 0:
                follower = asyncio.ensure_future(
                    follow_leader(lambda: leader[0] if leader else None, link))
            view = memoryview(parts[i])
            for start in range(0, len(view), 1 << 20):
                await link.wait_for_space(1 << 20)
                link.send(0, view[start:start + (1 << 20)])
            link.send(0, b"", end_stream=True)
            await asyncio.wait_for(acked, 60)
            if i > 0:  # it paced as the leader did, not as it was configured
                followed.append(link.connection.statistics().pacing_rate)
            return endpoint.port, threading.current_thread().name
        finally:
            if follower is not None:
                follower.cancel()
            endpoint.close()

    async def main():
        jobs = [lambda i=i: receive(i) for i in range(FLOWS)]
        jobs += [lambda i=i: send(i) for i in range(FLOWS)]
        return await run_in_workers(jobs)

    results = asyncio.run(main())
    received, senders = results[:FLOWS], results[FLOWS:]
    for i, (data, _thread) in enumerate(received):
        assert hashlib.sha256(data).digest() == hashlib.sha256(parts[i]).digest()
    threads = {name for _data, name in received} | {name for _port, name in senders}
    assert len(threads) == 2 * FLOWS and threading.current_thread().name not in threads
    assert len({port for port, _ in senders}) == FLOWS  # a socket each
    start = follower_config(config, FLOWS).target_rate / 8
    assert len(followed) == FLOWS - 1 and all(rate != start for rate in followed)


def test_a_failing_job_stops_every_worker_and_raises() -> None:
    async def fails() -> None:
        raise ValueError("no")

    async def waits() -> str:
        await asyncio.sleep(0.05)
        return "ok"

    before = threading.active_count()
    with pytest.raises(ValueError, match="no"):
        asyncio.run(run_in_workers([waits, fails]))
    assert threading.active_count() == before
    worker = FlowWorker("x")
    worker.stop()
    worker.stop()  # idempotent
