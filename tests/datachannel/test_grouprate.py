"""One rate controller for a transfer's flows: N flows are as aggressive as one."""

from __future__ import annotations

import pytest

from jetstream.datachannel import DataChannelConfig, RatePolicy
from jetstream.datachannel.grouprate import (
    FOLLOW_INTERVAL,
    flow_count,
    follow,
    follower_config,
    leader_config,
)
from jetstream.datachannel.stats import ConnectionStats, combined
from jetstream.netsim import Flow, LinkConfig, Network, PatternContent, add_flow

RATE = 20e6
RTT = 0.04


def rate_between(flow: Flow, start: float, end: float) -> float:
    timeline = flow.receiver.timeline
    bucket = flow.receiver.bucket
    return sum(timeline[int(start / bucket) : int(end / bucket)]) * 8 / (end - start)


def step(network: Network, seconds: float, group: list[Flow]) -> None:
    """Run in virtual time, the followers following the leader as a driver makes them."""
    now = 0.0
    while now < seconds:
        now += FOLLOW_INTERVAL
        network.run(lambda: False, now)
        for follower in group[1:]:
            follow(group[0].client.conn, follower.client.conn)


def run_against_one_fair_flow(flows: int, grouped: bool, seconds: float = 8.0):
    """A transfer of `flows` flows and one ordinary flow share a bottleneck."""
    network = Network(seed=21)
    forward = network.link(LinkConfig(rate_bps=RATE, delay=RTT / 2,
                                      queue_bytes=int(RATE / 8 * RTT)))
    backward = network.link(LinkConfig(delay=RTT / 2))
    size = int(RATE / 8 * seconds)
    config = DataChannelConfig()
    group = []
    for i in range(flows):
        if grouped:
            own = leader_config(config, flows) if i == 0 else follower_config(config, flows)
        else:
            own = config
        group.append(add_flow(network, PatternContent({1: size}), forward=forward,
                              backward=backward, name=f"g{i}", client_config=own))
    other = add_flow(network, PatternContent({1: size}), forward=forward, backward=backward,
                     name="other")
    step(network, seconds, group if grouped else [])
    window = (3.0, seconds)
    return sum(rate_between(f, *window) for f in group), rate_between(other, *window)


def test_two_grouped_flows_take_one_share_where_two_independent_take_two() -> None:
    grouped, other = run_against_one_fair_flow(2, grouped=True)
    assert 0.6 < grouped / other < 1.6, (grouped, other)
    independent, other_alone = run_against_one_fair_flow(2, grouped=False)
    assert independent / other_alone > 1.6, (independent, other_alone)  # the control case
    assert grouped + other > 0.8 * RATE * 1428 / 1500  # and the link stays full


def test_grouped_flows_alone_fill_the_link() -> None:
    network = Network(seed=22)
    forward = network.link(LinkConfig(rate_bps=RATE, delay=RTT / 2,
                                      queue_bytes=int(RATE / 8 * RTT)))
    backward = network.link(LinkConfig(delay=RTT / 2))
    config = DataChannelConfig()
    size = int(RATE / 8 * 6)
    flows = [add_flow(network, PatternContent({1: size}), forward=forward, backward=backward,
                      name=f"g{i}",
                      client_config=(leader_config if i == 0 else follower_config)(config, 3))
             for i in range(3)]
    step(network, 6.0, flows)
    total = sum(rate_between(f, 2.0, 6.0) for f in flows)
    assert total > 0.85 * RATE * 1428 / 1500
    shares = [rate_between(f, 2.0, 6.0) / total for f in flows]
    assert max(shares) - min(shares) < 0.15  # the followers pace as the leader does


def test_limits_are_split_over_the_flows() -> None:
    config = DataChannelConfig(max_rate=900_000_000, min_rate=30_000_000, initial_rate=3 * 10**8)
    leader = leader_config(config, 3)
    assert (leader.max_rate, leader.min_rate, leader.initial_rate) == (3 * 10**8, 10**7, 10**8)
    follower = follower_config(config, 3)
    assert follower.rate_policy is RatePolicy.FIXED and follower.target_rate == 10**8
    fixed = DataChannelConfig(rate_policy=RatePolicy.FIXED, target_rate=600, max_rate=600)
    assert follower_config(fixed, 2).target_rate == leader_config(fixed, 2).target_rate == 300


@pytest.mark.parametrize(("cores", "expected", "requested", "flows"), [
    (2, None, 0, 1),            # nothing known about the path: one flow
    (1, 5e9, 0, 1),             # one core: one flow
    (2, 5e9, 0, 1),             # two cores: one for the flow, one for the rest
    (8, 900e6, 0, 1),           # a rate one flow carries
    (8, 2.5e9, 0, 3),
    (8, 40e9, 0, 7),
    (2, None, 4, 4),            # asked for: as asked
    (2, None, 99, 16),
])
def test_flow_count(cores, expected, requested, flows) -> None:
    assert flow_count(cores, expected, requested) == flows


def test_combined_statistics_add_counts_and_keep_the_leaders_path() -> None:
    first, second = (stats_with(bytes_sent=1000, stream_bytes_sent=900, smoothed_rtt=0.02,
                                pacing_rate=5e6, congestion_state="probe_bw"),
                     stats_with(bytes_sent=3000, stream_bytes_sent=2800, smoothed_rtt=0.5,
                                pacing_rate=5e6, congestion_state="fixed"))
    both = combined([first, second])
    assert (both.bytes_sent, both.stream_bytes_sent, both.pacing_rate) == (4000, 3700, 1e7)
    assert (both.smoothed_rtt, both.congestion_state) == (0.02, "probe_bw")
    assert combined([second]) is second


def stats_with(**fields: object) -> ConnectionStats:
    zero = {name: 0 for name in ConnectionStats._fields}
    return ConnectionStats(**{**zero, "congestion_state": "", **fields})
