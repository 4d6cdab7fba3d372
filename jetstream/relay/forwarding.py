"""One server's public port at the relay: its peers, what waits for the server, and the
rule that keeps the relay from being an amplifier. No sockets and no clock (`now` is given).

The relay cannot read a datagram (it is encrypted end to end), so it forwards each one
opaquely and learns from the server, which can, when a peer's address is validated
(docs/protocol.md section 14). Until then it sends that peer at most three times the bytes
it forwarded from it, so a forged source address cannot turn the relay against a victim.

Memory is bounded twice: datagrams waiting for the server never exceed `queue_limit` bytes
(a quarter of it for unvalidated peers, so a flood from forged addresses cannot crowd out
real connections), and the peer table holds at most `max_peers` entries, idle ones forgotten.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from jetstream.relay.addresses import Address

AMPLIFICATION_FACTOR = 3
MAX_PEERS = 4096
PEER_IDLE_TIMEOUT = 120.0
"""Seconds: well beyond the data channel's idle timeout, so a live connection keeps its id."""
MAX_BATCH_BYTES = 512 << 10
"""Per Control message, either way: far below gRPC's 4 MiB message limit, and what arrives in
a millisecond at several Gbit/s."""
DROP_REASONS = ("queue_full", "amplification", "unknown_peer", "peer_limit", "no_server",
                "send_failed")


@dataclass
class Counters:
    """What the whole relay forwarded and dropped, read by the metrics at scrape time."""

    to_server_datagrams: int = 0
    to_server_bytes: int = 0
    to_peer_datagrams: int = 0
    to_peer_bytes: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


@dataclass(eq=False)
class Peer:
    id: int
    addr: Address
    last_seen: float
    received: int = 0
    """Bytes forwarded from the peer to the server."""
    sent: int = 0
    """Bytes forwarded from the server to the peer."""
    validated: bool = False


@dataclass
class Batch:
    """Datagrams for the server, with the peers it needs to know about first."""

    peers: list[int]
    payloads: list[bytes]
    new_peers: list[Peer]
    forgotten_peers: list[int]


class Forwarder:
    def __init__(self, counters: Counters, ids: Iterator[int], queue_limit: int, *,
                 max_peers: int = MAX_PEERS, idle_timeout: float = PEER_IDLE_TIMEOUT) -> None:
        self._counters = counters
        self._ids = ids
        self._limit = queue_limit
        self._max_peers = max_peers
        self._idle_timeout = idle_timeout
        self._by_addr: dict[Address, Peer] = {}
        self._by_id: dict[int, Peer] = {}
        self._queue_peers: list[int] = []
        self._queue_payloads: list[bytes] = []
        self.queued_bytes = 0
        self._new: list[Peer] = []
        self._forgotten: list[int] = []

    @property
    def peer_count(self) -> int:
        return len(self._by_id)

    @property
    def pending(self) -> bool:
        """Whether `take` has something for the server."""
        return bool(self._queue_peers or self._new or self._forgotten)

    def from_peer(self, payload: bytes, addr: Address, now: float) -> None:
        """A datagram arrived on the public port: queue it for the server, or drop it."""
        peer = self._by_addr.get(addr)
        if peer is None:
            peer = self._new_peer(addr, now)
            if peer is None:
                self._counters.drops["peer_limit"] += 1
                return
        peer.last_seen = now
        size = len(payload)
        limit = self._limit if peer.validated else self._limit >> 2
        if self.queued_bytes + size > limit:
            self._counters.drops["queue_full"] += 1
            return
        self._queue_peers.append(peer.id)
        self._queue_payloads.append(payload)
        self.queued_bytes += size
        peer.received += size
        counters = self._counters
        counters.to_server_datagrams += 1
        counters.to_server_bytes += size

    def take(self, max_bytes: int) -> Batch:
        """Up to `max_bytes` of queued datagrams (at least one), oldest first."""
        count, size = batch_size(self._queue_payloads, self.queued_bytes, max_bytes)
        peers, payloads = self._queue_peers[:count], self._queue_payloads[:count]
        del self._queue_peers[:count], self._queue_payloads[:count]
        self.queued_bytes -= size
        batch = Batch(peers, payloads, self._new, self._forgotten)
        self._new, self._forgotten = [], []
        return batch

    def to_peers(self, peers: list[int], payloads: list[bytes], validated: list[int]
                 ) -> list[tuple[Address, list[bytes]]]:
        """The server's datagrams, grouped by peer in order, minus what the rules forbid."""
        by_id = self._by_id
        for peer_id in validated:
            peer = by_id.get(peer_id)
            if peer is not None:
                peer.validated = True
        drops = self._counters.drops
        out: list[tuple[Address, list[bytes]]] = []
        current: Peer | None = None
        group: list[bytes] = []
        sent_bytes = sent_count = 0
        for peer_id, payload in zip(peers, payloads, strict=True):
            peer = by_id.get(peer_id)
            if peer is None:
                drops["unknown_peer"] += 1
                continue
            size = len(payload)
            if not peer.validated and peer.sent + size > AMPLIFICATION_FACTOR * peer.received:
                drops["amplification"] += 1
                continue
            peer.sent += size
            sent_bytes += size
            sent_count += 1
            if peer is not current:
                current, group = peer, []
                out.append((peer.addr, group))
            group.append(payload)
        self._counters.to_peer_datagrams += sent_count
        self._counters.to_peer_bytes += sent_bytes
        return out

    def expire(self, now: float) -> None:
        """Forget peers idle for longer than the idle timeout."""
        for peer in [p for p in self._by_id.values() if now - p.last_seen > self._idle_timeout]:
            del self._by_id[peer.id]
            del self._by_addr[peer.addr]
            self._forgotten.append(peer.id)

    def _new_peer(self, addr: Address, now: float) -> Peer | None:
        if len(self._by_id) >= self._max_peers:
            self.expire(now)
            if len(self._by_id) >= self._max_peers:
                return None
        peer = Peer(next(self._ids), addr, now)
        self._by_addr[addr] = peer
        self._by_id[peer.id] = peer
        self._new.append(peer)
        return peer


def batch_size(payloads: list[bytes], queued: int, max_bytes: int) -> tuple[int, int]:
    """(count, bytes) of the oldest `payloads` that fit in `max_bytes`; at least one."""
    if queued <= max_bytes:
        return len(payloads), queued
    total = count = 0
    for payload in payloads:
        if total + len(payload) > max_bytes and count:
            break
        total += len(payload)
        count += 1
    return count, total
