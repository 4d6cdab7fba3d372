"""Batched UDP I/O over real loopback sockets, with and without GSO/GRO."""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetstream.datachannel.native import FAST
from jetstream.transport.udpio import MAX_GSO_BYTES, MAX_GSO_SEGMENTS, BatchSocket, _gso_groups


def pair() -> tuple[BatchSocket, BatchSocket, tuple[str, int]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    return BatchSocket(tx), BatchSocket(rx), rx.getsockname()


def payloads() -> list[bytes]:
    sizes = [1200] * 150 + [700] + [1200] * 20 + [33, 1400, 1400]
    return [bytes([i % 251]) * 4 + i.to_bytes(4, "big") + b"x" * (n - 8)
            for i, n in enumerate(sizes)]


def receive_all(rx: BatchSocket, count: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        got += [data for data, _addr in rx.receive()]
    return got


@pytest.mark.parametrize("batched", [True, False])
def test_datagrams_arrive_whole_and_in_order(batched):
    tx, rx, addr = pair()
    if not batched:
        tx.gso = False
        rx.gro = False
    data = payloads()
    assert tx.send(data, addr) == len(data)
    got = receive_all(rx, len(data))
    assert got == data
    if batched and tx.gso:
        assert tx.send_calls < len(data) / 10, "GSO should batch many datagrams per call"
    elif FAST is not None:  # sendmmsg: up to 64 messages per call even without GSO
        assert tx.send_calls == -(-len(data) // 64)
    else:
        assert tx.send_calls == len(data)
    tx.close()
    rx.close()


@given(st.lists(st.integers(min_value=1, max_value=1472), max_size=300))
def test_gso_groups_are_valid_kernel_batches(sizes):
    datagrams = [b"a" * n for n in sizes]
    groups = list(_gso_groups(datagrams))
    assert [d for g in groups for d in g] == datagrams
    for group in groups:
        assert 1 <= len(group) <= MAX_GSO_SEGMENTS
        assert sum(map(len, group)) <= MAX_GSO_BYTES or len(group) == 1
        head = len(group[0])
        assert all(len(d) == head for d in group[:-1])
        assert len(group[-1]) <= head
