"""Fuzz target: the receive path of a connection (`Connection.receive_datagram` and
`Connection.receive_run` onwards, the compiled `open_run` included).

Each input is a script for a peer that holds the session ticket: it completes the handshake
with a real server-role `Connection` (the receive port's side), which then has data of its
own in flight, and then sends what the input says: authentic 1-RTT packets made of
fuzz-chosen frames (any packet number, either key phase), raw datagrams, damaged copies of
earlier packets, from the peer's address or another one, with time passing in between. The
input also chooses whether they arrive one by one or in receive batches of its choosing, as
the endpoint hands them over.
Whatever arrives, the connection must never raise, and it counts every datagram once, as
received or rejected: a protocol violation closes it with a CLOSE frame, anything else is
dropped and counted.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import atheris

from jetstream.datachannel import (
    Connection,
    ConnectionTerminated,
    Role,
    StreamDataReceived,
    wire,
)
from jetstream.datachannel.handshake import State
from tests.fuzz.fakepeer import CONFIG, TICKET, FakeClient, OneRtt
from tests.fuzz.frames import damaged, fuzz_frames

PEER = ("192.0.2.1", 4000)
ELSEWHERE = ("192.0.2.2", 4001)
SERVER_SEED = 0
OWN_STREAM = 3
OWN_DATA = bytes(range(256)) * 120
"""What the server sends before the script starts: some 20 packets for ACKs to hit."""


def _server() -> Connection:
    """Deterministic (seeded), so the handshake below is the same every time."""
    return Connection(CONFIG, role=Role.SERVER, ticket=TICKET, rng=random.Random(SERVER_SEED))


def _rehearse() -> tuple[bytes, bytes, OneRtt]:
    """The peer's INITIAL, the server's HANDSHAKE answer, and the peer's 1-RTT sealer."""
    client = FakeClient()
    initial = client.initial(client.hello, 0, bytes(wire.CID_LENGTH))
    server = _server()
    server.receive_datagram(initial, PEER, 0.0)
    (handshake, _addr), = server.datagrams_to_send(0.0)
    sealer = client.finish(handshake)
    assert sealer is not None
    return initial, handshake, sealer


INITIAL, HANDSHAKE, SEALER = _rehearse()


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    server = _server()
    now = 0.0
    server.receive_datagram(INITIAL, PEER, now)
    assert server.datagrams_to_send(now)[0][0] == HANDSHAKE, "the rehearsal is deterministic"
    now = 0.01
    server.receive_datagram(SEALER.seal(wire.PING_FRAME, 1), PEER, now)
    assert server.authenticated
    server.send_stream_data(OWN_STREAM, OWN_DATA, end_stream=True)
    _pump(server, now)
    next_pn = 2
    sent: list[bytes] = []
    fed = 2
    streams = itertools.count(OWN_STREAM + 1)
    batch_size = fdp.ConsumeIntInRange(0, 32)  # 0: one by one through receive_datagram
    batch: list[tuple[bytes, tuple[str, int]]] = []
    while fdp.remaining_bytes():
        op = fdp.ConsumeIntInRange(0, 9)
        if batch and (op >= 8 or len(batch) >= batch_size):
            fed += _receive_batch(server, batch, now)
            batch = []
        datagram: bytes | None = None
        addr = PEER
        if op <= 4:  # authentic: the interesting case, so the most likely
            pn = next_pn + fdp.ConsumeIntInRange(-3, 3) if op < 4 else \
                fdp.ConsumeIntInRange(0, (1 << 40))
            phase = fdp.ConsumeIntInRange(0, 1) if op == 3 else 0
            payload = fuzz_frames(fdp) if op < 3 else \
                fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1400))
            datagram = SEALER.seal(payload, max(pn, 0), phase)
            next_pn = max(next_pn, pn + 1)
            sent.append(datagram)
        elif op == 5:
            datagram = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1500))
        elif op == 6:
            datagram = damaged(fdp, sent)
        elif op == 7 and sent:  # the last authentic packet again, from elsewhere
            datagram, addr = sent[-1], ELSEWHERE if fdp.ConsumeBool() else PEER
        elif op == 8:
            now += fdp.ConsumeIntInRange(0, 5000) / 1000
        else:
            _application(server, fdp, streams)
        if datagram is not None and batch_size:
            batch.append((datagram, addr))
            continue
        if datagram is not None:
            fed += not server.is_closed  # a closed connection takes nothing: its driver counts
            server.receive_datagram(datagram, addr, now)
        _pump(server, now)
        _check_counts(server, fed)
    if batch:
        fed += _receive_batch(server, batch, now)
        _check_counts(server, fed)


def _receive_batch(server: Connection, batch: list[tuple[bytes, tuple[str, int]]],
                   now: float) -> int:
    """Hand a batch over as the endpoint does; how many datagrams the connection took."""
    index = 0
    while index < len(batch) and not server.is_closed:
        taken = server.receive_run(batch, index, now)
        assert index < taken <= len(batch), "a receive run that took nothing or too much"
        index = taken
    _pump(server, now)
    return index


def _check_counts(server: Connection, fed: int) -> None:
    stats = server.statistics()
    assert stats.packets_received + stats.packets_rejected == fed, "a datagram not counted"


def _application(server: Connection, fdp: atheris.FuzzedDataProvider,
                 streams: Iterator[int]) -> None:
    """What the application on the server may do meanwhile (never an error when open)."""
    if server.state in (State.CLOSING, State.CLOSED):
        return
    if fdp.ConsumeBool():  # a new stream each time: writing after an end is our own bug
        server.send_stream_data(next(streams), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000)),
                                end_stream=fdp.ConsumeBool())
    else:
        server.close(wire.ErrorCode.APPLICATION, "fuzz")


def _pump(server: Connection, now: float) -> None:
    """What the driver does after every input: events, sends, the timer."""
    for _ in range(4):
        while (event := server.next_event()) is not None:
            if isinstance(event, StreamDataReceived):
                server.data_consumed(len(event.data))
            elif isinstance(event, ConnectionTerminated):
                assert server.state in (State.CLOSING, State.CLOSED)
        if len(server.datagrams_to_send(now)) < CONFIG.max_batch:
            break
    timer = server.get_timer()
    if timer is not None and timer <= now:
        server.handle_timer(now)
