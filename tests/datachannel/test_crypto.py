"""Packet protection, key schedule and key update."""

from __future__ import annotations

import random

import pytest

from jetstream.datachannel import crypto
from jetstream.datachannel.handshake import KeyExchange, SessionTicket
from jetstream.errors import RemoteProtocolError

HEADER = b"\x40" + b"C" * 8 + b"\x00\x00\x00\x07"


def secret(seed: int) -> bytes:
    return random.Random(seed).randbytes(32)


@pytest.mark.parametrize("aead", sorted(crypto.AEAD_KEY_LENGTHS))
def test_seal_open_round_trip_and_rejections(aead: str) -> None:
    sender = crypto.PacketProtection(aead, secret(1))
    receiver = crypto.PacketProtection(aead, secret(1))
    sealed = sender.seal(7, HEADER, b"payload")
    assert len(sealed) == len(b"payload") + 16
    assert receiver.open(7, HEADER, sealed) == b"payload"
    assert receiver.open(8, HEADER, sealed) is None  # the nonce binds the packet number
    assert receiver.open(7, HEADER[:-1] + b"\x08", sealed) is None  # the header is authenticated
    assert crypto.PacketProtection(aead, secret(2)).open(7, HEADER, sealed) is None
    for bit in range(len(sealed) * 8):
        flipped = bytearray(sealed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert receiver.open(7, HEADER, bytes(flipped)) is None


def test_receive_keys_follow_key_updates_and_keep_late_packets() -> None:
    send = crypto.SendKeys("AES-128-GCM", secret(3))
    receive = crypto.ReceiveKeys("AES-128-GCM", secret(3))
    old = send.protection.seal(10, HEADER, b"old")
    send.update(next_packet_number=11)
    assert send.phase == 1 and send.phase_start_pn == 11
    new = send.protection.seal(11, HEADER, b"new")
    assert receive.open(11, 1, HEADER, new) == b"new"
    assert receive.phase == 1
    assert receive.open(10, 0, HEADER, old) == b"old"  # reordered from the previous phase
    forged = bytearray(new)
    forged[0] ^= 1
    assert receive.open(12, 0, HEADER, bytes(forged)) is None
    assert receive.phase == 1  # a forged phase bit does not move the keys


def test_both_sides_derive_the_same_traffic_secrets() -> None:
    rng = random.Random(4)
    ticket = SessionTicket.generate(rng.randbytes)
    client, server = KeyExchange(ticket, rng.randbytes), KeyExchange(ticket, rng.randbytes)
    args = (b"c" * 8, b"s" * 8, b"hello-c", b"hello-s")
    c2s, s2c = client.traffic_secrets(server.public_key, *args)
    assert (c2s, s2c) == server.traffic_secrets(client.public_key, *args)
    assert c2s != s2c
    other = SessionTicket(ticket.ticket_id, bytes(32))
    assert KeyExchange(other, random.Random(4).randbytes).traffic_secrets(
        server.public_key, *args
    ) != (c2s, s2c)


def test_low_order_public_key_is_a_handshake_failure() -> None:
    rng = random.Random(5)
    exchange = KeyExchange(SessionTicket.generate(rng.randbytes), rng.randbytes)
    with pytest.raises(RemoteProtocolError):
        exchange.traffic_secrets(bytes(32), b"c" * 8, b"s" * 8, b"", b"")


def test_no_key_material_in_reprs() -> None:
    rng = random.Random(6)
    ticket = SessionTicket.generate(rng.randbytes)
    objects = [
        ticket,
        crypto.PacketProtection("AES-128-GCM", ticket.secret),
        crypto.SendKeys("AES-128-GCM", ticket.secret),
        crypto.ReceiveKeys("AES-128-GCM", ticket.secret),
        KeyExchange(ticket, rng.randbytes),
    ]
    for obj in objects:
        text = repr(obj) + str(obj)
        assert ticket.secret.hex() not in text and repr(ticket.secret) not in text


def test_ticket_shape_is_checked() -> None:
    with pytest.raises(ValueError):
        SessionTicket(b"short", bytes(32))
