"""Packet protection, key schedule and key update."""

from __future__ import annotations

import random

import pytest

from jetstream.datachannel import crypto, wire
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


def test_the_vectors_in_the_specification() -> None:
    """docs/protocol.md section 18: a second implementation checks itself against these."""
    ticket = SessionTicket(bytes(range(16)), bytes(range(32, 64)))
    c2s, s2c = crypto.initial_secrets(ticket.secret, ticket.ticket_id)
    assert c2s.hex() == "7d1f665aa6857706152be5ec34481dc97419f2b753d9e96db5e184fd3c3664da"
    assert s2c.hex() == "4e1c72068b51c93185ef072f0e2097047844ec8bf7cfd3b6f983fa7675c70b22"
    header = wire.encode_short_header(0, bytes(8), 1)
    sealed = crypto.PacketProtection("AES-128-GCM", c2s).seal(1, header, wire.PING_FRAME)
    assert sealed.hex() == "bcb87f49d045a129f7afe52045d6dca9c8"
    client = KeyExchange(ticket, lambda n: bytes([1]) * n)
    server = KeyExchange(ticket, lambda n: bytes([2]) * n)
    params = wire.TransportParameters(30.0, 1 << 26, 1472, 0.005)
    hellos = (
        wire.encode_hello_frame(client.public_key, params),
        wire.encode_hello_frame(server.public_key, params),
    )
    c2s0, s2c0 = client.traffic_secrets(server.public_key, b"\xc1" * 8, b"\x5e" * 8, *hellos)
    assert c2s0.hex() == "5be0b85b9498be4d0c30bee9b68147e669544e85a4652238f062b9aa235e9a59"
    assert s2c0.hex() == "b0d31afb4108d3dcb134fe5fadf8b0d0ff8abaaf884f973941463c2435d1af1b"
    assert crypto.next_secret(c2s0).hex() == (
        "599025ce129c2e673fabbf330066583c61465d558593f64b268a71374d09d468"
    )
