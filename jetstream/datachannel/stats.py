"""Counters the core bumps on the hot path, and the immutable snapshot it hands out.

The counters are plain attributes (one ``+=`` each); `ConnectionStats` is built only when
someone asks (a Prometheus scrape, a progress report), so observing costs nothing per packet.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

from jetstream.datachannel.congestion import CongestionController
from jetstream.datachannel.recovery import Recovery, RttEstimator


class Rejection(Enum):
    """Why a datagram was dropped without reply."""

    MALFORMED = "rejected_malformed"
    AUTH = "rejected_auth"
    REPLAY = "rejected_replay"


class Counters:
    """Mutable per-connection counters (internal)."""

    __slots__ = (
        "bytes_sent",
        "packets_sent",
        "bytes_received",
        "packets_received",
        "packets_lost",
        "bytes_lost",
        "packets_retransmitted",
        "bytes_retransmitted",
        "stream_bytes_sent",
        "stream_bytes_received",
        "rejected_malformed",
        "rejected_auth",
        "rejected_replay",
        "key_updates",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    bytes_sent: int
    packets_sent: int
    bytes_received: int
    packets_received: int
    packets_lost: int
    bytes_lost: int
    packets_retransmitted: int
    bytes_retransmitted: int
    stream_bytes_sent: int
    stream_bytes_received: int
    rejected_malformed: int
    rejected_auth: int
    rejected_replay: int
    key_updates: int

    def reject(self, reason: Rejection) -> None:
        name = reason.value
        setattr(self, name, getattr(self, name) + 1)


class ConnectionStats(NamedTuple):
    """A snapshot of one connection (`Connection.statistics()`); rates in bytes per second."""

    bytes_sent: int
    """UDP payload bytes sent, all packets."""
    packets_sent: int
    bytes_received: int
    """UDP payload bytes of authentic packets received."""
    packets_received: int
    packets_lost: int
    """Packets declared lost (including spurious declarations)."""
    bytes_lost: int
    packets_retransmitted: int
    """Packets that carried stream data sent before."""
    bytes_retransmitted: int
    """Stream bytes sent again."""
    stream_bytes_sent: int
    """Unique stream bytes sent (first transmissions)."""
    stream_bytes_received: int
    """Unique stream bytes delivered to the application."""
    packets_rejected: int
    """Datagrams dropped without reply: the sum of the three below."""
    rejected_malformed: int
    rejected_auth: int
    """Failed AEAD authentication: corruption, forgery, wrong keys."""
    rejected_replay: int
    """Duplicates, replays and packets older than the replay window."""
    key_updates: int
    smoothed_rtt: float
    min_rtt: float
    latest_rtt: float
    delivery_rate: float
    """Latest delivery-rate sample of the sender."""
    pacing_rate: float
    cwnd: int
    bytes_in_flight: int
    congestion_state: str


def snapshot(
    counters: Counters, rtt: RttEstimator, recovery: Recovery, cc: CongestionController | None
) -> ConnectionStats:
    c = counters
    return ConnectionStats(
        bytes_sent=c.bytes_sent,
        packets_sent=c.packets_sent,
        bytes_received=c.bytes_received,
        packets_received=c.packets_received,
        packets_lost=c.packets_lost,
        bytes_lost=c.bytes_lost,
        packets_retransmitted=c.packets_retransmitted,
        bytes_retransmitted=c.bytes_retransmitted,
        stream_bytes_sent=c.stream_bytes_sent,
        stream_bytes_received=c.stream_bytes_received,
        packets_rejected=c.rejected_malformed + c.rejected_auth + c.rejected_replay,
        rejected_malformed=c.rejected_malformed,
        rejected_auth=c.rejected_auth,
        rejected_replay=c.rejected_replay,
        key_updates=c.key_updates,
        smoothed_rtt=rtt.smoothed,
        min_rtt=rtt.min,
        latest_rtt=rtt.latest,
        delivery_rate=recovery.delivery_rate,
        pacing_rate=cc.pacing_rate if cc is not None else 0.0,
        cwnd=cc.cwnd if cc is not None else 0,
        bytes_in_flight=recovery.bytes_in_flight,
        congestion_state=cc.state if cc is not None else "handshake",
    )


_SUMMED = tuple(name for name in ConnectionStats._fields
                if name not in ("smoothed_rtt", "min_rtt", "latest_rtt", "congestion_state"))


def combined(flows: Sequence[ConnectionStats]) -> ConnectionStats:
    """The flows of one transfer as one connection: counts, rates and windows add up; the
    path's RTT and the controller's state are the first flow's (it leads the group)."""
    first = flows[0]
    if len(flows) == 1:
        return first
    return first._replace(**{name: sum(getattr(s, name) for s in flows) for name in _SUMMED})
