"""Fuzz target: the handshake (jetstream/datachannel/handshake.py, hello.py) of both roles.

The first input byte picks the role under test. A server-role `Connection` gets INITIALs
from a peer that holds the ticket: the genuine HELLO, HELLOs and other frames built from
the input (any key, including low-order points, any transport parameters), copies damaged
on the way, raw datagrams, and 1-RTT packets once its HANDSHAKE has been read. A client-role
one gets the same kinds of HANDSHAKE packets from a peer server. Neither may raise; the
server may send nothing before the peer proved it holds the ticket, and nothing beyond
three times what it received from an address not yet validated.
"""

from __future__ import annotations

import random

import atheris

from jetstream.datachannel import Connection, Role, wire
from jetstream.datachannel.handshake import State
from tests.fuzz.fakepeer import CONFIG, TICKET, FakeClient, FakeServer, OneRtt
from tests.fuzz.frames import damaged, fuzz_frames

PEER = ("192.0.2.1", 4000)
ELSEWHERE = ("192.0.2.2", 4001)
CLIENT_SEED = 3


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        _server_role(fdp)
    else:
        _client_role(fdp)


def _server_role(fdp: atheris.FuzzedDataProvider) -> None:
    server = Connection(CONFIG, role=Role.SERVER, ticket=TICKET,
                        rng=random.Random(fdp.ConsumeIntInRange(0, 3)))
    peer = FakeClient(seed=fdp.ConsumeIntInRange(0, 3))
    sealer: OneRtt | None = None
    sent: list[bytes] = []
    now = 0.0
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        op = fdp.ConsumeIntInRange(0, 5)
        datagram: bytes | None = None
        addr = ELSEWHERE if fdp.ConsumeIntInRange(0, 7) == 0 else PEER
        if op <= 1:
            frames = peer.hello if op == 0 else fuzz_frames(fdp)
            if op == 0 and fdp.ConsumeBool():
                frames += fuzz_frames(fdp)
            datagram = peer.initial(
                frames, fdp.ConsumeIntInRange(0, 8), fdp.ConsumeBytes(wire.CID_LENGTH).ljust(8),
                pad=fdp.ConsumeIntInRange(0, 7) != 0,
                version=None if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeInt(4) & 0xFFFFFFFF,
                ticket_id=None if fdp.ConsumeIntInRange(0, 15) else fdp.ConsumeBytes(16))
            sent.append(datagram)
        elif op == 2:
            if sealer is not None:
                datagram = sealer.seal(fuzz_frames(fdp), 1 + fdp.ConsumeIntInRange(0, 8))
        else:
            datagram, now = _either_role(fdp, op, server, sent, now)
        if datagram is not None:
            server.receive_datagram(datagram, addr, now)
        out = server.datagrams_to_send(now)
        assert not out or server.authenticated, "an answer before the ticket was proven"
        stats = server.statistics()
        if server.state is not State.ESTABLISHED:
            assert stats.bytes_sent <= 3 * stats.bytes_received, stats
        for reply, _addr in out:
            if sealer is None and reply[0] & wire.FLAG_LONG:
                sealer = peer.finish(reply)
        while server.next_event() is not None:
            pass


def _rehearse() -> tuple[bytes, OneRtt, FakeServer]:
    client = _client()
    initial = client.datagrams_to_send(0.0)[0][0]
    peer = FakeServer()
    return initial, peer.accept(initial), peer


def _client() -> Connection:
    client = Connection(CONFIG, role=Role.CLIENT, ticket=TICKET,
                        rng=random.Random(CLIENT_SEED))
    client.connect(PEER, 0.0)
    return client


INITIAL, TO_CLIENT, SERVER = _rehearse()


def _client_role(fdp: atheris.FuzzedDataProvider) -> None:
    client = _client()
    assert client.datagrams_to_send(0.0)[0][0] == INITIAL, "the rehearsal is deterministic"
    sent: list[bytes] = []
    now = 0.0
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        op = fdp.ConsumeIntInRange(0, 5)
        datagram: bytes | None = None
        if op <= 1:
            frames = SERVER.hello if op == 0 else fuzz_frames(fdp)
            if op == 0 and fdp.ConsumeBool():
                frames += fuzz_frames(fdp)
            datagram = SERVER.handshake(
                frames, fdp.ConsumeIntInRange(0, 8),
                destination_cid=None if fdp.ConsumeIntInRange(0, 7) else
                fdp.ConsumeBytes(wire.CID_LENGTH).ljust(8),
                version=None if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeInt(4) & 0xFFFFFFFF)
            sent.append(datagram)
        elif op == 2:
            datagram = TO_CLIENT.seal(fuzz_frames(fdp), 1 + fdp.ConsumeIntInRange(0, 8))
        else:
            datagram, now = _either_role(fdp, op, client, sent, now)
        if datagram is not None:
            client.receive_datagram(datagram, PEER, now)
        client.datagrams_to_send(now)
        while client.next_event() is not None:
            pass


def _either_role(fdp: atheris.FuzzedDataProvider, op: int, connection: Connection,
                 sent: list[bytes], now: float) -> tuple[bytes | None, float]:
    """The steps both roles share: a raw long-header datagram, a damaged copy of an earlier
    packet, or time passing (the datagram to deliver, and the time)."""
    if op == 3:
        return bytes([wire.FLAG_LONG | fdp.ConsumeIntInRange(0, 0x7F)]) + \
            fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1400)), now
    if op == 4:
        return damaged(fdp, sent), now
    now += fdp.ConsumeIntInRange(0, 15_000) / 1000
    if (timer := connection.get_timer()) is not None and timer <= now:
        connection.handle_timer(now)
    return None, now
