"""Transfers over the simulated network: byte-identical under every impairment, in bounded
virtual time, and handshakes that survive the loss of any packet or time out cleanly."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from jetstream.datachannel import ConnectionTerminated, DataChannelConfig, ErrorCode
from jetstream.netsim import (
    GilbertElliott,
    LinkConfig,
    Network,
    PatternContent,
    add_flow,
    run_flows,
)
from tests.helpers.datachannel import assert_identical, transfer

RATE = 20e6
DELAY = 0.01  # one way: 20 ms RTT
QUEUE = int(RATE / 8 * 0.04)


def streams_for(seed: int) -> dict[int, bytes]:
    rng = random.Random(seed)
    return {1: rng.randbytes(300_000), 2: rng.randbytes(1), 3: b"", 4: rng.randbytes(40_000)}


IMPAIRMENTS: dict[str, tuple[dict[str, object], float]] = {
    # name: (link settings applied in both directions, virtual-time bound in seconds)
    "clean": ({}, 1.0),
    "loss-1%": ({"loss": 0.01}, 2.0),
    "loss-5%": ({"loss": 0.05}, 3.0),
    "loss-20%": ({"loss": 0.20}, 15.0),
    "bursty-loss": ({"loss": GilbertElliott(0.02, 0.25)}, 5.0),
    "reorder": ({"reorder": 0.1, "reorder_delay": 0.008}, 2.0),
    "duplicate": ({"duplicate": 0.1}, 1.0),
    "corrupt": ({"corrupt": 0.05}, 3.0),
    "everything": (
        {"loss": 0.05, "reorder": 0.05, "duplicate": 0.05, "corrupt": 0.02},
        5.0,
    ),
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(IMPAIRMENTS))
def test_delivery_is_byte_identical(name: str, seed: int) -> None:
    settings, bound = IMPAIRMENTS[name]
    forward = LinkConfig(rate_bps=RATE, delay=DELAY, queue_bytes=QUEUE, **settings)  # type: ignore[arg-type]
    backward = LinkConfig(delay=DELAY, **settings)  # type: ignore[arg-type]
    streams = streams_for(seed)
    network, flow, done = transfer(
        streams, seed=seed, forward=forward, backward=backward, max_time=bound
    )
    assert done, f"not finished after {bound} s of virtual time"
    assert_identical(flow, streams)
    rejected = flow.server.conn.statistics().packets_rejected
    if name in ("corrupt", "everything"):
        assert rejected > 0  # corruption was caught by the AEAD, not delivered
    if name == "duplicate":
        assert flow.server.conn.statistics().rejected_replay > 0


def drop_numbers(numbers: set[int]) -> Callable[[int, bytes], bool]:
    return lambda count, _: count in numbers


HANDSHAKE_CASES = [
    (forward, backward)
    for forward, backward in [
        (set(), set()),
        ({1}, set()),  # INITIAL
        ({2}, set()),  # the client's first 1-RTT packet
        ({1, 2}, set()),  # INITIAL and its retransmission
        (set(), {1}),  # HANDSHAKE
        (set(), {1, 2}),  # HANDSHAKE and its retransmission
        (set(), {2}),  # the server's first 1-RTT packet (an ACK)
        ({1}, {1}),
        ({2, 3}, {1, 2}),
    ]
]


@pytest.mark.parametrize(("forward", "backward"), HANDSHAKE_CASES)
def test_handshake_survives_losing_any_early_packet(forward: set[int], backward: set[int]) -> None:
    streams = {1: bytes(range(256)) * 100}
    network, flow, done = transfer(
        streams,
        seed=5,
        forward=LinkConfig(rate_bps=RATE, delay=DELAY, drop_if=drop_numbers(forward)),
        backward=LinkConfig(delay=DELAY, drop_if=drop_numbers(backward)),
        max_time=10.0,
    )
    assert done, (forward, backward)
    assert_identical(flow, streams)


@pytest.mark.parametrize("direction", ["forward", "backward", "both"])
def test_black_hole_ends_in_a_handshake_timeout(direction: str) -> None:
    network = Network(seed=6)
    black = LinkConfig(delay=DELAY, drop_if=lambda count, _: True)
    clear = LinkConfig(delay=DELAY)
    config = DataChannelConfig(handshake_timeout=3.0)
    flow = add_flow(
        network,
        PatternContent({1: 1000}),
        forward=network.link(black if direction in ("forward", "both") else clear),
        backward=network.link(black if direction in ("backward", "both") else clear),
        client_config=config,
        server_config=config,
    )
    finished = network.run(lambda: flow.client.conn.is_closed, max_time=60.0)
    assert finished and network.now <= 3.0 + 1e-9
    terminated = flow.sender.terminated
    assert isinstance(terminated, ConnectionTerminated)
    assert terminated.error_code == ErrorCode.HANDSHAKE_TIMEOUT and not terminated.by_peer
    if direction == "backward":  # the server got in and then heard nothing more
        network.run(lambda: flow.server.conn.is_closed, max_time=60.0)
        assert flow.server.conn.is_closed


def test_goodput_uses_the_link_despite_random_loss() -> None:
    """The controller treats random loss as noise: ~95% of a lossy link's capacity."""
    network = Network(seed=8)
    size = 5_000_000
    flow = add_flow(
        network,
        PatternContent({1: size}),
        forward=network.link(LinkConfig(rate_bps=RATE, delay=DELAY, queue_bytes=QUEUE, loss=0.05)),
        backward=network.link(LinkConfig(delay=DELAY)),
    )
    assert run_flows(network, [flow], max_time=30.0)
    assert flow.receiver.intact
    capacity = RATE / 8 * 1428 / 1500 * 0.95  # payload capacity after 5% loss
    assert size / network.now > 0.85 * capacity
