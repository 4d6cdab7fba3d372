"""Hostile datagrams at a UDP port, sent in batches through the project's own batched I/O
(`BatchSocket`: runs of equal-sized datagrams leave as one GSO `sendmsg`).

Kinds, each a batch of datagrams built from one random choice:

* random: random bytes of one random size up to a path MTU (empty ones too);
* oversized: random bytes up to the largest UDP payload (65,507 bytes);
* bit-flipped: a genuine datagram of the live session with one bit flipped in each copy
  (4 copies of a loopback-sized one, 64 of others);
* truncated: genuine datagrams cut at random lengths (within a path MTU);
* short header + garbage: the live session's flags and connection id, a random packet
  number, random bytes after it;
* long header + garbage: an INITIAL header with the session's (spent) ticket id or a
  random one, random version and connection ids, random bytes to INITIAL size or more.

Sending waits while the target's socket is well filled (`procfs.wait_for_room`), so the
kernel drops nothing: the server has to look at every datagram.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence

from jetstream.datachannel import wire
from jetstream.transport.udpio import BatchSocket
from tests.hostile.procfs import wait_for_room

MAX_UDP_PAYLOAD = 65_507
PATH_MTU_PAYLOAD = 1472
BATCH = 64
KINDS = {  # kind -> share of the batches
    "random": 30,
    "oversized": 1,
    "bit-flipped": 25,
    "truncated": 15,
    "short header + garbage": 20,
    "long header + garbage": 9,
}


class Flood:
    def __init__(self, target: tuple[str, int], genuine: Callable[[], Sequence[bytes]],
                 spent_tickets: Sequence[bytes] = (), seed: int = 11) -> None:
        self.target = target
        self._genuine = genuine
        self._tickets = list(spent_tickets)
        self._rng = random.Random(seed)
        self._noise = self._rng.randbytes(1 << 22)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self._batch_socket = BatchSocket(self._sock)
        self.sent: Counter[str] = Counter()
        self.sent_bytes = 0

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def send(self, count: int) -> None:
        """Send at least `count` datagrams."""
        kinds, weights = list(KINDS), list(KINDS.values())
        target_port = self.target[1]
        while self.total < count:
            if self.total % (16 * BATCH) < BATCH:
                wait_for_room(target_port)
            kind = self._rng.choices(kinds, weights)[0]
            batch = self._build(kind)
            self._transmit(batch)
            self.sent[kind] += len(batch)
            self.sent_bytes += sum(map(len, batch))

    def replies(self) -> int:
        """Bytes that came back to the flood's socket (drained now)."""
        received = 0
        while True:
            try:
                received += len(self._sock.recv(65535))
            except BlockingIOError:
                return received
            except ConnectionRefusedError:
                continue  # an ICMP error from the kernel, not the server's answer

    def close(self) -> None:
        self._sock.close()

    def _transmit(self, batch: list[bytes]) -> None:
        if not all(batch):  # GSO cannot carry an empty datagram: it would vanish
            for datagram in batch:
                self._sock.sendto(datagram, self.target)
            return
        sent = 0
        while sent < len(batch):
            sent += self._batch_socket.send(batch[sent:], self.target)
            if sent < len(batch):
                time.sleep(0.0005)  # the socket's send buffer is full

    def _random(self, size: int) -> bytes:
        start = self._rng.randrange(len(self._noise) - size)
        return self._noise[start:start + size]

    def _build(self, kind: str) -> list[bytes]:
        rng = self._rng
        genuine = self._genuine()
        if kind == "random" or not genuine:
            size = rng.randrange(PATH_MTU_PAYLOAD + 1)
            return [self._random(size) for _ in range(BATCH)]
        if kind == "oversized":
            return [self._random(rng.randrange(PATH_MTU_PAYLOAD, MAX_UDP_PAYLOAD + 1))
                    for _ in range(8)]
        short = [g for g in genuine if not g[0] & wire.FLAG_LONG] or genuine
        if kind == "bit-flipped":
            original = rng.choice(short)
            out = []
            for _ in range(BATCH if len(original) <= PATH_MTU_PAYLOAD else 4):
                copy = bytearray(original)
                bit = rng.randrange(len(copy) * 8)
                copy[bit // 8] ^= 1 << (bit % 8)
                out.append(bytes(copy))
            return out
        if kind == "truncated":
            return [g[:rng.randrange(min(len(g), PATH_MTU_PAYLOAD))]
                    for g in rng.choices(genuine, k=BATCH)]
        if kind == "short header + garbage":
            original = rng.choice(short)
            size = rng.randrange(wire.AEAD_TAG_LENGTH, PATH_MTU_PAYLOAD)
            return [original[:1 + wire.CID_LENGTH] + rng.randbytes(4) + self._random(size)
                    for _ in range(BATCH)]
        size = rng.randrange(wire.MIN_INITIAL_DATAGRAM_SIZE, PATH_MTU_PAYLOAD)
        out = []
        for _ in range(BATCH):
            header = wire.encode_long_header(
                wire.PacketType.INITIAL, rng.choice((wire.VERSION_1, rng.getrandbits(32))),
                rng.randbytes(8), rng.randbytes(8), rng.getrandbits(32),
                rng.choice(self._tickets) if self._tickets and rng.random() < 0.5
                else rng.randbytes(16))
            out.append(header + self._random(size - len(header)))
        return out
