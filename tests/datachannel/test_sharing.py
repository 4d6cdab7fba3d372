"""Flows sharing one bottleneck: fair flows split it evenly, a low-priority flow yields."""

from __future__ import annotations

from dataclasses import replace

from jetstream.datachannel import DataChannelConfig, RatePolicy
from jetstream.netsim import Flow, LinkConfig, Network, PatternContent, add_flow, run_flows

RATE = 20e6
RTT = 0.04


def bottleneck(network: Network) -> tuple[LinkConfig, LinkConfig]:
    return (
        LinkConfig(rate_bps=RATE, delay=RTT / 2, queue_bytes=int(RATE / 8 * RTT)),
        LinkConfig(delay=RTT / 2),
    )


def rate_between(flow: Flow, start: float, end: float) -> float:
    timeline = flow.receiver.timeline
    bucket = flow.receiver.bucket
    return sum(timeline[int(start / bucket) : int(end / bucket)]) * 8 / (end - start)


def jain(rates: list[float]) -> float:
    return sum(rates) ** 2 / (len(rates) * sum(r * r for r in rates))


def two_flows(
    second: DataChannelConfig | None, stagger: float, seconds: float
) -> tuple[Network, Flow, Flow]:
    network = Network(seed=11)
    forward_config, backward_config = bottleneck(network)
    forward, backward = network.link(forward_config), network.link(backward_config)
    size = int(RATE / 8 * seconds)
    first = add_flow(
        network, PatternContent({1: size}), forward=forward, backward=backward, name="a"
    )
    network.run(lambda: False, stagger)
    late = add_flow(
        network,
        PatternContent({1: size}),
        forward=forward,
        backward=backward,
        name="b",
        client_config=second,
    )
    return network, first, late


def test_two_fair_flows_share_evenly() -> None:
    network, a, b = two_flows(None, stagger=0.0, seconds=6.0)
    network.run(lambda: False, 6.0)
    rates = [rate_between(a, 2.0, 6.0), rate_between(b, 2.0, 6.0)]
    assert jain(rates) >= 0.95
    assert sum(rates) >= 0.85 * RATE * 1428 / 1500


def test_a_late_fair_flow_gets_its_share() -> None:
    network, a, b = two_flows(None, stagger=1.0, seconds=8.0)
    network.run(lambda: False, 9.0)
    assert jain([rate_between(a, 5.0, 9.0), rate_between(b, 5.0, 9.0)]) >= 0.9


def test_low_priority_yields_and_then_takes_the_spare_capacity() -> None:
    low = DataChannelConfig(rate_policy=RatePolicy.LOW_PRIORITY)
    network, fair, background = two_flows(low, stagger=1.0, seconds=6.0)
    run_flows(network, [fair], max_time=30.0)
    fair_done = network.now
    assert rate_between(background, 3.0, 6.0) < 0.15 * rate_between(fair, 3.0, 6.0)
    assert run_flows(network, [background], max_time=60.0)
    assert background.receiver.intact
    # Alone, the background flow fills most of the link again.
    assert rate_between(background, fair_done + 2.0, fair_done + 4.0) > 0.6 * RATE


def lone_flow(config: DataChannelConfig, loss: float, seconds: float) -> Flow:
    network = Network(seed=12)
    forward, backward = bottleneck(network)
    flow = add_flow(
        network,
        PatternContent({1: int(RATE / 8 * seconds)}),
        forward=network.link(replace(forward, loss=loss)),
        backward=network.link(backward),
        client_config=config,
    )
    network.run(lambda: False, seconds)
    return flow


def test_fixed_policy_sends_at_its_target_whatever_the_loss() -> None:
    target = 5e6
    flow = lone_flow(
        DataChannelConfig(rate_policy=RatePolicy.FIXED, target_rate=int(target)), 0.1, 4.0
    )
    goodput = rate_between(flow, 1.0, 4.0)
    payload_share = 1428 / 1472
    assert 0.8 * target * payload_share * 0.9 < goodput <= target * payload_share


def test_max_rate_caps_a_fair_flow() -> None:
    flow = lone_flow(DataChannelConfig(max_rate=int(4e6)), 0.0, 4.0)
    assert 3e6 < rate_between(flow, 1.0, 4.0) <= 4e6
