"""The server's end of the datagrams a relay carries: a `DatagramPath` for the data endpoint.

What the relay sends on the Control stream goes into the endpoint as if it had arrived on
its socket, from the remote peer's own address, so the receiver's view of its sources shows
the sender, not the relay. What the endpoint sends those peers waits here until the link's
writer takes it as one batch, usually at the end of the event-loop turn that queued it.
At most `limit` bytes wait; beyond that datagrams are dropped, as a full socket buffer
would, and the data channel repairs the loss.

One path serves the link for its whole life, across reconnections. When the link is down,
or the relay restarted and has not announced a peer again yet, what the endpoint sends
that peer is dropped: it never falls back to the server's own socket, which would send
from the inside network straight to the peer, around the relay. Routes of peers a new
relay does not announce again are removed after `STALE_AFTER`.

The relay cannot read datagrams, so it asks the server whether a peer's address is valid
(docs/protocol.md section 14): once a connection authenticated a datagram from a peer, the
next batch says so, and the relay lifts its three-times limit for that peer.
"""

from __future__ import annotations

import asyncio

from jetstream.relay.addresses import Address, parse_address
from jetstream.relay.forwarding import MAX_BATCH_BYTES, PEER_IDLE_TIMEOUT, batch_size
from jetstream.transport.endpoint import DataEndpoint
from jetstream.v1 import relay_pb2 as R

QUEUE_LIMIT = 4 << 20
STALE_AFTER = PEER_IDLE_TIMEOUT


class RelayPath:
    def __init__(self, endpoint: DataEndpoint, limit: int = QUEUE_LIMIT) -> None:
        self._endpoint = endpoint
        self._limit = limit
        self._ids: dict[Address, int] = {}
        self._addrs: dict[int, Address] = {}
        self._unvalidated: set[int] = set()
        self._peers: list[int] = []
        self._payloads: list[bytes] = []
        self._validated: list[int] = []
        self._queued = 0
        self._ready = asyncio.Event()
        self.dropped = 0

    # --- from the relay ------------------------------------------------------------------------

    def received(self, batch: R.Datagrams) -> None:
        endpoint = self._endpoint
        for peer in batch.new_peers:
            addr = parse_address(peer.address)
            self._ids[addr] = peer.id
            self._addrs[peer.id] = addr
            self._unvalidated.add(peer.id)
            endpoint.route(addr, self)
        for peer_id in batch.forgotten_peers:
            self._forget(peer_id)
        addrs = self._addrs
        datagrams = [(payload, addrs[peer_id]) for peer_id, payload
                     in zip(batch.peers, batch.payloads, strict=True) if peer_id in addrs]
        endpoint.deliver(datagrams)
        if self._unvalidated:
            self._check_validation(batch)

    def _check_validation(self, batch: R.Datagrams) -> None:
        unvalidated, addrs = self._unvalidated, self._addrs
        for peer_id, payload in zip(batch.peers, batch.payloads, strict=True):
            if peer_id in unvalidated and self._endpoint.peer_authenticated(payload,
                                                                            addrs[peer_id]):
                unvalidated.discard(peer_id)
                self._validated.append(peer_id)
                self._ready.set()

    def _forget(self, peer_id: int) -> None:
        addr = self._addrs.pop(peer_id, None)
        self._unvalidated.discard(peer_id)
        if addr is not None and self._ids.get(addr) == peer_id:
            del self._ids[addr]
            self._endpoint.route(addr, None)

    def reset(self) -> None:
        """A new link (or none): the old relay's peer ids mean nothing any more. Their routes
        stay, so replies to them are dropped, until a new relay announces them again or
        `STALE_AFTER` passes."""
        stale = set(self._ids)
        self._clear()
        asyncio.get_running_loop().call_later(STALE_AFTER, self._drop_stale, stale)

    def _clear(self) -> None:
        self._ids.clear()
        self._addrs.clear()
        self._unvalidated.clear()
        self._peers.clear()
        self._payloads.clear()
        self._validated = []
        self._queued = 0

    def _drop_stale(self, stale: set[Address]) -> None:
        for addr in stale - self._ids.keys():
            self._endpoint.route(addr, None)

    # --- to the relay (the endpoint's DatagramPath) --------------------------------------------

    def send(self, payloads: list[bytes], addr: Address) -> None:
        peer_id = self._ids.get(addr)
        size = sum(len(p) for p in payloads)
        if peer_id is None or self._queued + size > self._limit:
            self.dropped += len(payloads)
            return
        self._peers.extend([peer_id] * len(payloads))
        self._payloads.extend(payloads)
        self._queued += size
        self._ready.set()

    async def next_batch(self) -> R.Datagrams:
        """What to send the relay next (waits until there is something)."""
        while not (self._peers or self._validated):
            self._ready.clear()
            await self._ready.wait()
        count, size = batch_size(self._payloads, self._queued, MAX_BATCH_BYTES)
        batch = R.Datagrams(peers=self._peers[:count], payloads=self._payloads[:count],
                            validated_peers=self._validated)
        del self._peers[:count], self._payloads[:count]
        self._queued -= size
        self._validated = []
        return batch

    def close(self) -> None:
        """The server stops: every route through the path goes."""
        for addr in list(self._ids):
            self._endpoint.route(addr, None)
        self._clear()
