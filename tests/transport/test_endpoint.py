"""The asyncio driver over real loopback UDP sockets: handshake, a stream, garbage."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.events import StreamDataReceived, StreamEnded
from jetstream.transport.endpoint import (
    LOOPBACK_DATAGRAM_SIZE,
    DataEndpoint,
    DataLink,
    for_path,
    random_ticket,
)


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def transfer(payload: bytes, *, streams: int = 3) -> tuple[dict[int, bytes], DataLink]:
    config = DataChannelConfig()
    server = DataEndpoint(udp(), config)
    client = DataEndpoint(udp(), config)
    ticket = random_ticket()
    received: dict[int, bytearray] = {}
    ended: set[int] = set()
    done = asyncio.Event()
    accepted: asyncio.Future[DataLink] = asyncio.get_running_loop().create_future()

    def on_link(link: DataLink) -> None:
        def on_event(event) -> None:
            if isinstance(event, StreamDataReceived):
                buf = received.setdefault(event.stream_id, bytearray())
                end = event.offset + len(event.data)
                if len(buf) < end:
                    buf.extend(b"\0" * (end - len(buf)))
                buf[event.offset:end] = event.data
                link.consumed(len(event.data))
            elif isinstance(event, StreamEnded):
                ended.add(event.stream_id)
                if len(ended) == streams:
                    done.set()

        link.on_event = on_event
        accepted.set_result(link)

    server.expect(ticket, on_link)
    link = client.connect(("127.0.0.1", server.port), ticket)
    try:
        await asyncio.wait_for(link.established, 10)
        for stream in range(streams):
            view = memoryview(payload)
            for start in range(0, len(view), 1 << 20):
                await link.wait_for_space(1 << 20)
                link.send(stream, view[start:start + (1 << 20)])
            link.send(stream, b"", end_stream=True)
        await asyncio.wait_for(done.wait(), 60)
        server_link = await accepted
        assert server_link.connection.authenticated
        return {k: bytes(v) for k, v in received.items()}, link
    finally:
        client.close()
        server.close()


def test_streams_arrive_intact_over_loopback():
    payload = os.urandom(3 << 20) + b"tail"
    received, link = asyncio.run(transfer(payload))
    assert set(received) == {0, 1, 2}
    for data in received.values():
        assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    stats = link.statistics()
    assert stats.bytes_sent >= 3 * len(payload)
    # a loopback path: both ends chose large datagrams, so few packets carried the data
    assert link.connection.max_datagram_size == LOOPBACK_DATAGRAM_SIZE
    assert stats.packets_sent < 3 * len(payload) / 16_000


@pytest.mark.parametrize(("host", "large"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.1.2.3", False), ("fe80::1%eth0", False), ("2001:db8::1", False), ("name", False),
])
def test_only_loopback_paths_get_large_datagrams(host, large):
    config = DataChannelConfig()
    chosen = for_path(config, (host, 8886)).max_datagram_size
    assert chosen == (LOOPBACK_DATAGRAM_SIZE if large else config.max_datagram_size)


def test_garbage_and_unknown_tickets_get_no_reply():
    async def main() -> None:
        server = DataEndpoint(udp(), DataChannelConfig())
        prober = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        prober.bind(("127.0.0.1", 0))
        prober.settimeout(0.3)
        try:
            for probe in (b"", b"\x00" * 40, os.urandom(1200), b"\xc0" + os.urandom(1300)):
                prober.sendto(probe, ("127.0.0.1", server.port))
            await asyncio.sleep(0.2)
            with pytest.raises(TimeoutError):
                await asyncio.get_running_loop().run_in_executor(None, prober.recv, 2048)
            assert server.rejected >= 3
        finally:
            prober.close()
            server.close()

    asyncio.run(main())
