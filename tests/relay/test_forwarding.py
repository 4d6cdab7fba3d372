"""The relay's forwarding rules, without sockets: the 3x rule until the server validates a
peer, the bounded queue towards the server, the bounded peer table, batches."""

from __future__ import annotations

import itertools

from jetstream.relay.forwarding import Counters, Forwarder, batch_size

PEER = ("198.51.100.7", 40000)
OTHER = ("198.51.100.8", 40001)


def forwarder(queue_limit: int = 1 << 20, **kw: object) -> tuple[Forwarder, Counters]:
    counters = Counters()
    return Forwarder(counters, itertools.count(1), queue_limit, **kw), counters  # type: ignore[arg-type]


def sent_bytes(groups: list[tuple[tuple[str, int], list[bytes]]]) -> int:
    return sum(len(p) for _addr, payloads in groups for p in payloads)


def test_an_unvalidated_peer_gets_at_most_three_times_what_it_sent():
    fwd, counters = forwarder()
    fwd.from_peer(b"i" * 1200, PEER, now=0.0)
    batch = fwd.take(1 << 20)
    assert [p.addr for p in batch.new_peers] == [PEER]
    peer_id = batch.peers[0]
    replies = [b"r" * 1000] * 5  # 5000 bytes asked for, 3600 allowed
    groups = fwd.to_peers([peer_id] * 5, replies, validated=[])
    assert sent_bytes(groups) == 3000
    assert counters.drops["amplification"] == 2
    fwd.from_peer(b"i" * 400, PEER, now=0.1)  # more received: a little more allowed
    fwd.take(1 << 20)
    assert sent_bytes(fwd.to_peers([peer_id] * 2, replies[:2], validated=[])) == 1000


def test_the_servers_word_lifts_the_limit():
    fwd, counters = forwarder()
    fwd.from_peer(b"i" * 1200, PEER, now=0.0)
    peer_id = fwd.take(1 << 20).peers[0]
    groups = fwd.to_peers([peer_id] * 10, [b"d" * 1400] * 10, validated=[peer_id])
    assert sent_bytes(groups) == 14000 and counters.drops["amplification"] == 0
    assert counters.to_peer_datagrams == 10 and counters.to_peer_bytes == 14000


def test_datagrams_keep_their_order_grouped_by_peer():
    fwd, _ = forwarder()
    for addr in (PEER, OTHER):
        fwd.from_peer(b"x" * 100, addr, now=0.0)
    a, b = fwd.take(1 << 20).peers
    groups = fwd.to_peers([a, a, b, a], [b"1", b"2", b"3", b"4"], validated=[a, b])
    assert groups == [(PEER, [b"1", b"2"]), (OTHER, [b"3"]), (PEER, [b"4"])]


def test_unknown_peers_are_dropped():
    fwd, counters = forwarder()
    assert fwd.to_peers([99], [b"x"], validated=[99]) == []
    assert counters.drops["unknown_peer"] == 1


def test_the_queue_towards_a_slow_server_is_bounded():
    fwd, counters = forwarder(queue_limit=40_000)
    for _ in range(100):  # nobody takes: the server is not reading
        fwd.from_peer(b"u" * 1000, PEER, now=0.0)
    assert fwd.queued_bytes == 10_000, "an unvalidated peer gets a quarter of the queue"
    assert counters.drops["queue_full"] == 90
    peer_id = fwd.take(1 << 20).peers[0]
    fwd.to_peers([], [], validated=[peer_id])
    for _ in range(100):
        fwd.from_peer(b"v" * 1000, PEER, now=0.0)
    assert fwd.queued_bytes == 40_000, "a validated one may fill it"
    assert counters.to_server_datagrams == 50


def test_take_cuts_batches_and_keeps_the_rest():
    fwd, _ = forwarder()
    for i in range(10):
        fwd.from_peer(bytes([i]) * 1000, PEER, now=0.0)
    first = fwd.take(3500)
    assert [p[0] for p in first.payloads] == [0, 1, 2] and fwd.queued_bytes == 7000
    assert len(first.new_peers) == 1
    second = fwd.take(1 << 20)
    assert [p[0] for p in second.payloads] == list(range(3, 10)) and not second.new_peers
    assert not fwd.pending and fwd.queued_bytes == 0
    assert batch_size([b"x" * 10], 10, 1) == (1, 10), "at least one, however large"


def test_idle_peers_are_forgotten_and_the_table_is_bounded():
    fwd, counters = forwarder(max_peers=2, idle_timeout=10.0)
    fwd.from_peer(b"a", PEER, now=0.0)
    fwd.from_peer(b"b", OTHER, now=5.0)
    fwd.from_peer(b"c", ("198.51.100.9", 1), now=6.0)
    assert counters.drops["peer_limit"] == 1 and fwd.peer_count == 2
    first = fwd.take(1 << 20)
    fwd.from_peer(b"d", ("198.51.100.9", 1), now=11.0)  # PEER idle > 10 s: its place is free
    second = fwd.take(1 << 20)
    assert second.forgotten_peers == [first.peers[0]] and len(second.new_peers) == 1
    assert second.new_peers[0].id not in first.peers, "ids are never reused"
