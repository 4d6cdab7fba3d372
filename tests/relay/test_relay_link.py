"""A relay and a server in one event loop, on loopback: the link's pins both ways, what the
server reports, and what strangers get (nothing useful)."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc import aio

from jetstream.app import Server
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.relay import proof
from jetstream.relay.app import RunningRelay
from jetstream.v1 import relay_pb2 as R
from jetstream.v1 import relay_pb2_grpc, server_pb2, server_pb2_grpc
from tests.relay.support import relay_in_loop, server_identity
from tests.support.servers import serve, unused_tcp_port


async def relay_and_server(stack: AsyncExitStack, tmp: Path, *, trust: bool = True,
                           pin: bytes | None = None, **relay_settings: object
                           ) -> tuple[RunningRelay, Server]:
    identity = server_identity(tmp / "b")
    trusted = [identity] if trust else [server_identity(tmp / "stranger")]
    relay = await relay_in_loop(stack, tmp / "relay", trusted, [unused_tcp_port()],
                                **relay_settings)
    server = await serve(stack, tmp / "b", recv_relay_host="127.0.0.1",
                         recv_relay_port=relay.control_port,
                         recv_relay_fingerprint=(pin or relay.fingerprint).hex())
    return relay, server


async def link_error(server: Server) -> str:
    assert server.relay is not None
    for _ in range(100):
        if server.relay.state.error:
            return server.relay.state.error
        await asyncio.sleep(0.05)
    raise AssertionError("the link reported no error")


def test_registered_server_reports_the_relay_and_the_relay_counts_it(tmp_path):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            relay, server = await relay_and_server(stack, tmp_path, metrics_port=0,
                                                   disable_telemetry=False)
            assert server.relay is not None
            await asyncio.wait_for(server.relay.registered.wait(), 10)
            channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
            stack.push_async_callback(channel.close)
            info = (await server_pb2_grpc.ServerServiceStub(channel).GetServerInfo(
                server_pb2.GetServerInfoRequest())).server_info
            port = next(iter(relay.relay.ports))
            assert info.relay.enabled and info.relay.connected
            assert info.relay.address == f"127.0.0.1:{relay.control_port}"
            assert list(info.relay.public_udp_ports) == [port] and info.relay.public_host == ""
            assert relay.metrics is not None
            url = f"http://127.0.0.1:{relay.metrics.port}/metrics"
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            assert "jetstream_relay_servers 1.0" in text
            assert 'jetstream_relay_dropped_datagrams_total{reason="queue_full"} 0.0' in text

    asyncio.run(main())


def test_the_relay_serves_only_servers_it_trusts(tmp_path):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            relay, server = await relay_and_server(stack, tmp_path, trust=False)
            error = await link_error(server)
            assert "PERMISSION_DENIED" in error and "--trust-server" in error, error
            assert relay.relay.registrations == []

    asyncio.run(main())


def test_the_server_pins_the_relay(tmp_path):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            relay, server = await relay_and_server(stack, tmp_path, pin=os.urandom(32))
            error = await link_error(server)
            assert "certificate" in error and "changed" in error, error
            assert relay.relay.registrations == []

    asyncio.run(main())


def test_unauthenticated_datagrams_get_no_reply(tmp_path):
    """Junk and a forged INITIAL reach the server (the relay cannot judge them) and are
    dropped there; nothing comes back out of the public port."""
    async def main() -> None:
        async with AsyncExitStack() as stack:
            relay, server = await relay_and_server(stack, tmp_path)
            assert server.relay is not None
            await asyncio.wait_for(server.relay.registered.wait(), 10)
            port = next(iter(relay.relay.ports))
            rejected = server.receive_endpoint.rejected
            initial = bytes([0xC0]) + b"\0\0\0\1" + os.urandom(8 + 8 + 4 + 16)
            initial += os.urandom(1200 - len(initial))
            short = bytes([0x40]) + os.urandom(100)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.settimeout(1.5)
                for datagram in (initial, short, os.urandom(1300), initial):
                    probe.sendto(datagram, ("127.0.0.1", port))
                with pytest.raises(TimeoutError):
                    await asyncio.to_thread(probe.recvfrom, 65536)
            counters = relay.relay.counters
            assert counters.to_server_datagrams == 4 and counters.to_peer_datagrams == 0
            assert server.receive_endpoint.rejected == rejected + 4

    asyncio.run(main())


def test_strangers_get_nothing_from_the_control_port(tmp_path):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            identity = server_identity(tmp_path / "b")
            relay = await relay_in_loop(stack, tmp_path / "relay", [identity],
                                        [unused_tcp_port()])
            channel, _ = await open_aio_channel(Endpoint("127.0.0.1", relay.control_port),
                                                pinned=relay.fingerprint)
            stack.push_async_callback(channel.close)
            stub = relay_pb2_grpc.RelayServiceStub(channel)

            async def control(first: R.ControlRequest | None) -> grpc.StatusCode:
                call = stub.Control()
                challenge = await call.read()
                assert challenge.WhichOneof("body") == "challenge"
                if first is not None:
                    await call.write(first)
                await call.done_writing()
                with pytest.raises(aio.AioRpcError) as info:
                    await call.read()
                return info.value.code()

            unsigned = R.Register(certificate_pem=identity.certificate_pem,
                                  signature=proof.sign(identity.key_pem, relay.fingerprint,
                                                       b"not the nonce"))
            assert await control(R.ControlRequest(register=unsigned)) == \
                grpc.StatusCode.UNAUTHENTICATED
            assert await control(R.ControlRequest(datagrams=R.Datagrams())) == \
                grpc.StatusCode.UNAUTHENTICATED
            assert await control(None) == grpc.StatusCode.UNAUTHENTICATED
            tunnel = stub.Tunnel(metadata=(("authorization", "Bearer " + "00" * 32),))
            await tunnel.write(R.TunnelRequest(connection_id=1))
            with pytest.raises(aio.AioRpcError) as info:
                await tunnel.read()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert relay.relay.registrations == []

    asyncio.run(main())


def test_relay_metrics_are_off_with_disable_telemetry(tmp_path):
    async def main() -> None:
        async with AsyncExitStack() as stack:
            relay = await relay_in_loop(stack, tmp_path / "relay",
                                        [server_identity(tmp_path / "b")], [unused_tcp_port()])
            assert relay.metrics is None

    asyncio.run(main())
