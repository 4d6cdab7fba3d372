"""One rate controller for the N flows of one transfer.

A transfer may run over several flows (connections, each with its own UDP socket) so that
several cores share its per-packet work. N independent controllers would be N times as
aggressive as one towards every other flow on the path, so only flow 0, the leader, runs the
configured controller, over its own packets; the other flows follow: they pace at the
leader's pacing rate (the FIXED controller, whose window is twice that rate times the RTT)
and change with it. All flows cross the same bottleneck, so the leader measures its own
1/N share of it (its delivery rate, RTT, loss) and the group sends N times that: what one
flow would, probing and backing off as one flow does. The transfer's rate limits are split
evenly over the flows. Sans-IO: the driver calls `follow` every `FOLLOW_INTERVAL`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.congestion import RateLimits, RatePolicy
from jetstream.datachannel.connection import Connection
from jetstream.errors import LocalProtocolError

FOLLOW_INTERVAL = 0.005
"""Seconds between two updates of the followers: a few per round trip on a WAN path."""
MAX_FLOWS = 16
"""The most flows one transfer may use (each a socket, a connection and a thread)."""
PER_FLOW_BPS = 1_000_000_000
"""Payload rate one flow (one core) carries with the compiled path and 1472-byte datagrams
on the machines measured (docs/performance.md): about 4-5 µs of CPU per packet per side."""


def flow_count(cores: int, expected_bps: float | None, requested: int = 0,
               per_flow_bps: float = PER_FLOW_BPS, limit: int = MAX_FLOWS) -> int:
    """How many flows a transfer uses: ``requested`` if given (bounded by ``limit``), else
    one per `per_flow_bps` of the rate the path delivered before, at most one per core but
    one (the other core keeps the disk, the event loop and the receiver's work)."""
    if requested > 0:
        return min(requested, limit)
    if not expected_bps or cores < 2:
        return 1
    return max(1, min(math.ceil(expected_bps / per_flow_bps), cores - 1, limit))


def split(value: int | None, flows: int) -> int | None:
    return None if value is None else max(value // flows, 1)


def leader_config(config: DataChannelConfig, flows: int) -> DataChannelConfig:
    """The leader runs the transfer's controller with an N-th of its limits."""
    return replace(config, min_rate=config.min_rate // flows,
                   target_rate=split(config.target_rate, flows),
                   max_rate=split(config.max_rate, flows),
                   initial_rate=split(config.initial_rate, flows))


def follower_config(config: DataChannelConfig, flows: int) -> DataChannelConfig:
    """A follower starts at the leader's first rate (its initial window over the initial
    RTT, or the remembered rate) and then moves with it (`follow`)."""
    leader = leader_config(config, flows)
    if leader.rate_policy is RatePolicy.FIXED:
        return leader
    start = leader.initial_rate or int(
        leader.initial_window * leader.max_datagram_size * 8 / leader.initial_rtt)
    if leader.max_rate is not None:
        start = min(start, leader.max_rate)
    return replace(leader, rate_policy=RatePolicy.FIXED, target_rate=start)


def follow(leader: Connection, follower: Connection) -> None:
    """Pace ``follower`` at the leader's current pacing rate (both established)."""
    if leader.is_closed or follower.is_closed:
        return
    rate = leader.statistics().pacing_rate
    if rate > 0:
        try:
            follower.set_rate_limits(RateLimits(policy=RatePolicy.FIXED, target_rate=rate))
        except LocalProtocolError:
            pass  # the follower's handshake has not ended yet: the next call catches up
