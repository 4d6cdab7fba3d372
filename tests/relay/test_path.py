"""The server's end of the relayed datagrams: peers' real addresses, replies batched back,
and never a reply around the relay."""

from __future__ import annotations

import asyncio
import socket

from jetstream.datachannel.config import DataChannelConfig
from jetstream.relay.path import RelayPath
from jetstream.transport.endpoint import DataEndpoint
from jetstream.transport.sockets import bind_udp
from jetstream.v1 import relay_pb2 as R


def test_replies_go_back_through_the_path_and_never_around_it():
    async def main() -> None:
        endpoint = DataEndpoint(bind_udp("127.0.0.1", 0), DataChannelConfig())
        path = RelayPath(endpoint)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            addr = peer.getsockname()
            rejected = endpoint.rejected
            path.received(R.Datagrams(peers=[7], payloads=[b"\x40" + b"j" * 60],
                                      new_peers=[R.Peer(id=7, address=f"{addr[0]}:{addr[1]}")]))
            assert endpoint.rejected == rejected + 1, "delivered, as if from the peer"
            endpoint.transmit([(b"reply", addr)])
            batch = await asyncio.wait_for(path.next_batch(), 1)
            assert (list(batch.peers), list(batch.payloads)) == ([7], [b"reply"])
            path.reset()  # the link broke: the peer's id is gone with the old relay
            endpoint.transmit([(b"lost", addr)])
            await asyncio.sleep(0.1)
            assert path.dropped == 1
            try:
                leaked = peer.recv(100)
            except BlockingIOError:
                leaked = b""
            assert leaked == b"", "nothing went from the server's own socket to the peer"
            path.received(R.Datagrams(new_peers=[R.Peer(id=9, address=f"{addr[0]}:{addr[1]}")]))
            endpoint.transmit([(b"again", addr)])
            batch = await asyncio.wait_for(path.next_batch(), 1)
            assert list(batch.peers) == [9], "announced by the new relay: reachable again"
        path.close()
        endpoint.close()

    asyncio.run(main())


def test_a_peer_is_reported_validated_once_a_connection_authenticated_it():
    async def main() -> None:
        endpoint = DataEndpoint(bind_udp("127.0.0.1", 0), DataChannelConfig())
        path = RelayPath(endpoint)
        checked: list[bytes] = []

        def authenticated(data: bytes, addr: tuple[str, int]) -> bool:
            checked.append(data)
            return data == b"good"

        endpoint.peer_authenticated = authenticated  # type: ignore[method-assign]
        path.received(R.Datagrams(peers=[1, 1], payloads=[b"junk", b"good"],
                                  new_peers=[R.Peer(id=1, address="192.0.2.1:9")]))
        batch = await asyncio.wait_for(path.next_batch(), 1)
        assert list(batch.validated_peers) == [1] and not batch.payloads
        path.received(R.Datagrams(peers=[1], payloads=[b"good"]))
        assert checked == [b"junk", b"good"], "asked until validated, then no more"
        path.close()
        endpoint.close()

    asyncio.run(main())
