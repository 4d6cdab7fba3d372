"""Who holds which public port, re-registration, tunnel claims, and the link's backoff."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from jetstream.errors import AlreadyExists, NotFound, ResourceExhausted, Unauthenticated
from jetstream.relay.forwarding import Counters
from jetstream.relay.link import INITIAL_BACKOFF, MAX_BACKOFF, STABLE_AFTER, Backoff
from jetstream.relay.registry import Relay

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


@dataclass
class FakePort:
    port: int


def relay(*ports: int) -> Relay:
    made = Relay(frozenset({A, B, C}), 1 << 20, Counters())
    made.ports = {p: FakePort(p) for p in ports}  # type: ignore[misc]
    return made


def test_ports_requested_taken_and_remembered():
    async def main() -> None:
        r = relay(8886, 8896)
        assert r.register(A, "a", "", 8896).port.port == 8896
        with pytest.raises(NotFound, match="no public port 9000; it offers 8886, 8896"):
            r.register(B, "b", "", 9000)
        with pytest.raises(AlreadyExists, match="held by server a"):
            r.register(B, "b", "", 8896)
        b = r.register(B, "b", "", 0)
        assert b.port.port == 8886
        with pytest.raises(ResourceExhausted, match="add one with --recv-port"):
            r.register(C, "c", "", 0)
        r.unregister(b)
        assert r.register(A, "a", "", 0).port.port == 8896, "the port it held last"

    asyncio.run(main())


def test_registering_again_ends_the_earlier_registration():
    async def main() -> None:
        r = relay(8886)
        first = r.register(A, "a", "", 0)
        second = r.register(A, "a", "", 0)
        assert first.ended.is_set() and not second.ended.is_set()
        assert r.registrations == [second]
        r.unregister(first)  # the old Control call ending late must not free the new one
        assert r.registrations == [second]

    asyncio.run(main())


def test_claims_need_the_token_and_a_pending_connection():
    async def main() -> None:
        r = relay(8886)
        registration = r.register(A, "a", "", 0)
        with pytest.raises(Unauthenticated):
            r.claim(b"wrong" * 6, 1)
        with pytest.raises(NotFound, match="unknown, claimed or expired"):
            r.claim(registration.token, 1)

    asyncio.run(main())


def test_backoff_has_full_jitter_doubles_and_resets():
    draws = iter([1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.25])
    backoff = Backoff(lambda: next(draws))
    delays = [backoff.next(lasted=0.0) for _ in range(9)]
    assert delays[:3] == [INITIAL_BACKOFF, INITIAL_BACKOFF, 4 * INITIAL_BACKOFF]  # bound x2
    assert max(delays) == MAX_BACKOFF, "capped"
    assert backoff.next(lasted=STABLE_AFTER) == 0.25 * INITIAL_BACKOFF, "a stable link resets"
