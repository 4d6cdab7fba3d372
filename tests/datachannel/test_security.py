"""Datagrams that fail authentication, replay, are truncated or random: dropped, counted,
never answered; and no key material in reprs."""

from __future__ import annotations

import random

from jetstream.datachannel import Connection, DataChannelConfig, Role, SessionTicket, wire
from jetstream.datachannel.crypto import PacketProtection
from tests.helpers.datachannel import (
    CLIENT,
    SERVER,
    deliver,
    drain_events,
    established_pair,
    make_pair,
)


def quiet(conn: Connection, now: float) -> None:
    """Flush anything legitimately pending (a delayed ACK) so a reply would stand out."""
    conn.datagrams_to_send(now + 1.0)
    drain_events(conn)


def one_data_packet(client: Connection, now: float) -> bytes:
    client.send_stream_data(1, b"x" * 500)
    datagrams = client.datagrams_to_send(now)
    assert len(datagrams) == 1
    return datagrams[0][0]


def assert_silently_dropped(server: Connection, datagram: bytes, now: float) -> None:
    before = server.statistics()
    server.receive_datagram(datagram, CLIENT, now)
    after = server.statistics()
    assert after.packets_rejected == before.packets_rejected + 1
    assert after.packets_received == before.packets_received
    assert server.datagrams_to_send(now + 1.0) == []
    assert drain_events(server) == []


def test_replay_is_dropped_and_counted() -> None:
    pair, now = established_pair()
    packet = one_data_packet(pair.client, now)
    pair.server.receive_datagram(packet, CLIENT, now)
    quiet(pair.server, now)
    assert_silently_dropped(pair.server, packet, now + 2.0)
    assert pair.server.statistics().rejected_replay == 1


def test_every_flipped_bit_is_dropped_and_counted() -> None:
    pair, now = established_pair()
    packet = one_data_packet(pair.client, now)
    quiet(pair.server, now)
    received = pair.server.statistics().packets_received
    for bit in range(len(packet) * 8):
        damaged = bytearray(packet)
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert_silently_dropped(pair.server, bytes(damaged), now + 2.0)
    stats = pair.server.statistics()
    assert stats.packets_rejected == len(packet) * 8
    assert stats.rejected_auth > 0 and stats.rejected_malformed > 0
    pair.server.receive_datagram(packet, CLIENT, now + 2.0)  # the genuine one still works
    assert pair.server.statistics().packets_received == received + 1


def test_truncations_and_random_datagrams_are_dropped() -> None:
    pair, now = established_pair()
    packet = one_data_packet(pair.client, now)
    quiet(pair.server, now)
    for length in range(len(packet)):
        assert_silently_dropped(pair.server, packet[:length], now + 2.0)
    rng = random.Random(7)
    cid = packet[1:9]
    for _ in range(200):
        noise = rng.randbytes(rng.randrange(1, 1500))
        assert_silently_dropped(pair.server, noise, now + 2.0)
        assert_silently_dropped(pair.server, packet[:9] + noise, now + 2.0)  # our cid, junk
    assert cid == packet[1:9]


def test_packet_sealed_with_another_key_is_dropped() -> None:
    pair, now = established_pair()
    packet = one_data_packet(pair.client, now)
    quiet(pair.server, now)
    header = packet[: wire.SHORT_HEADER_SIZE]
    forged = header + PacketProtection("AES-128-GCM", bytes(32)).seal(1, header, b"\x01")
    assert_silently_dropped(pair.server, forged, now + 2.0)
    assert pair.server.statistics().rejected_auth == 1


def test_server_is_silent_to_an_initial_without_the_ticket_secret() -> None:
    pair = make_pair(seed=3)
    attacker = Connection(
        DataChannelConfig(),
        role=Role.CLIENT,
        ticket=SessionTicket(pair.ticket.ticket_id, bytes(32)),  # knows the id, not the secret
        rng=random.Random(9),
    )
    attacker.connect(SERVER, 0.0)
    forged = attacker.datagrams_to_send(0.0)
    assert wire.peek_ticket_id(forged[0][0]) == pair.ticket.ticket_id
    deliver(forged, pair.server, CLIENT, 0.01)
    assert not pair.server.authenticated
    assert pair.server.datagrams_to_send(0.02) == []
    assert pair.server.statistics().rejected_auth == 1
    # The genuine client still gets in afterwards.
    pair.client.connect(SERVER, 0.0)
    deliver(pair.client.datagrams_to_send(0.0), pair.server, CLIENT, 0.03)
    assert pair.server.authenticated
    assert len(pair.server.datagrams_to_send(0.03)) == 1


def test_short_initial_is_not_answered() -> None:
    pair = make_pair(seed=4)
    pair.client.connect(SERVER, 0.0)
    initial = pair.client.datagrams_to_send(0.0)[0][0]
    assert len(initial) >= wire.MIN_INITIAL_DATAGRAM_SIZE
    pair.server.receive_datagram(initial[:1100], CLIENT, 0.01)
    assert pair.server.datagrams_to_send(0.01) == []
    assert pair.server.statistics().packets_rejected == 1


def test_no_secret_in_reprs_or_statistics() -> None:
    pair, _ = established_pair()
    secret = pair.ticket.secret
    for text in (
        repr(pair.client),
        repr(pair.server),
        repr(pair.ticket),
        repr(pair.client.statistics()),
    ):
        assert secret.hex() not in text and repr(secret) not in text


def test_every_datagram_is_counted_while_closing() -> None:
    """A late or replayed INITIAL reaching a closing connection is dropped and counted
    (jetstream_datachannel_rejected_datagrams_total adds up to what arrived)."""
    pair = make_pair(seed=5)
    pair.client.connect(SERVER, 0.0)
    initial = pair.client.datagrams_to_send(0.0)[0][0]
    deliver([(initial, SERVER)], pair.server, CLIENT, 0.01)
    deliver(pair.server.datagrams_to_send(0.01), pair.client, SERVER, 0.02)
    deliver(pair.client.datagrams_to_send(0.02), pair.server, CLIENT, 0.03)
    pair.server.close()
    before = pair.server.statistics()
    pair.server.receive_datagram(initial, CLIENT, 0.04)
    after = pair.server.statistics()
    assert after.packets_rejected + after.packets_received == \
        before.packets_rejected + before.packets_received + 1
