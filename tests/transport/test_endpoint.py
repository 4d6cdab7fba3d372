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


def test_rejections_are_counted_by_reason_and_outlive_their_connection():
    """What `jetstream_datachannel_rejected_datagrams_total` exports (app.py)."""
    async def main() -> None:
        config = DataChannelConfig()
        server = DataEndpoint(udp(), config)
        client = DataEndpoint(udp(), config)
        sent: list[bytes] = []
        real_send = client.socket.send

        def tap(datagrams, addr):  # the client's genuine packets, for replaying
            sent.extend(bytes(d) for d in datagrams)
            return real_send(datagrams, addr)

        client.socket.send = tap  # type: ignore[method-assign]
        accepted: asyncio.Future[DataLink] = asyncio.get_running_loop().create_future()
        ticket = random_ticket()
        server.expect(ticket, accepted.set_result)
        link = client.connect(("127.0.0.1", server.port), ticket)
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await asyncio.wait_for(link.established, 10)
            server_link = await asyncio.wait_for(accepted, 10)
            link.send(1, b"x" * 5000, end_stream=True)
            await asyncio.sleep(0.2)
            short = [d for d in sent if not d[0] & 0x80]
            forged = bytearray(short[-1])  # a packet number not seen yet, a wrong tag
            forged[9:13] = (int.from_bytes(forged[9:13], "big") + 1000).to_bytes(4, "big")
            for datagram in (*short, bytes(forged), os.urandom(300), sent[0]):
                attacker.sendto(datagram, ("127.0.0.1", server.port))
            await asyncio.sleep(0.2)
            live = server.rejections()
            assert live == {"malformed": 0, "auth": 1, "replay": len(short),
                            "unrouted": 2}, live  # random bytes, and the spent INITIAL
            server_link.close()
            for _ in range(100):
                if server_link.connection.is_closed:  # and forgotten: its counts stay
                    break
                await asyncio.sleep(0.05)
            assert server_link.connection.is_closed
            assert server.rejections() == live
        finally:
            attacker.close()
            client.close()
            server.close()

    asyncio.run(main())
