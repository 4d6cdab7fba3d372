"""Sent-packet tracking, RTT estimation, loss detection, PTO and delivery-rate samples.

Loss detection follows RFC 9002 (packet threshold 3, time threshold 9/8 RTT, probe timeout)
with one change of bookkeeping that keeps ACK processing proportional to what is new: the
packets below the largest acknowledged one that are still unacknowledged ("holes") are kept
in a sorted list. An ACK frame repeats old ranges, but only its part above the previous
largest acknowledged packet is walked packet by packet; the old part is checked against the
holes only. Delivery-rate samples follow draft-cheng-iccrg-delivery-rate-estimation.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import islice
from typing import NamedTuple

from jetstream.datachannel.congestion import AckSample
from jetstream.datachannel.wire import AckFrame

K_PACKET_THRESHOLD = 3
K_TIME_THRESHOLD = 9 / 8
K_GRANULARITY = 0.001
K_PERSISTENT_CONGESTION_PTOS = 3
"""This many consecutive probe timeouts without an ACK count as persistent congestion."""
K_MAX_PROBES = 2
MIN_RTT_SAMPLE = 1e-6
"""Samples are at least this (seconds): a zero one (both timestamps from one clock reading,
as a simulator or a coarse clock gives) would make the rate model divide by zero."""

StreamChunk = tuple[int, int, memoryview, bool]
"""(stream id, offset, data, fin): stream bytes queued, in flight or waiting to be resent."""


class SentPacket:
    """An ack-eliciting packet in flight: what to resend if it is lost, and rate state."""

    __slots__ = (
        "packet_number",
        "sent_time",
        "size",
        "chunks",
        "control",
        "delivered",
        "delivered_time",
        "first_sent_time",
        "app_limited",
        "tag",
    )

    def __init__(
        self,
        packet_number: int,
        sent_time: float,
        size: int,
        chunks: list[StreamChunk],
        control: int,
        tag: int,
        delivered: int = 0,
        delivered_time: float = 0.0,
        first_sent_time: float = 0.0,
        app_limited: bool = False,
    ) -> None:
        self.packet_number = packet_number
        self.sent_time = sent_time
        self.size = size
        self.chunks = chunks
        self.control = control
        """`control.CONTROL_*` bits: the control frames to rebuild if this packet is lost."""
        self.delivered = delivered
        self.delivered_time = delivered_time
        self.first_sent_time = first_sent_time
        self.app_limited = app_limited
        self.tag = tag
        """The controller's `send_tag` when the packet left."""


class RttEstimator:
    """RFC 9002 section 5: smoothed RTT, variation and minimum."""

    __slots__ = ("latest", "smoothed", "variance", "min", "has_sample")

    def __init__(self, initial_rtt: float) -> None:
        self.latest = 0.0
        self.smoothed = initial_rtt
        self.variance = initial_rtt / 2
        self.min = 0.0
        self.has_sample = False

    def update(self, sample: float, ack_delay: float) -> None:
        if sample < MIN_RTT_SAMPLE:  # a clock that did not move between send and answer
            sample = MIN_RTT_SAMPLE
        self.latest = sample
        if not self.has_sample:
            self.has_sample = True
            self.min = sample
            self.smoothed = sample
            self.variance = sample / 2
            return
        if sample < self.min:
            self.min = sample
        adjusted = sample - ack_delay if sample - ack_delay >= self.min else sample
        self.variance = 0.75 * self.variance + 0.25 * abs(self.smoothed - adjusted)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted

    def pto_interval(self, max_ack_delay: float) -> float:
        return self.smoothed + max(4 * self.variance, K_GRANULARITY) + max_ack_delay


def lost_sizes(lost: list[SentPacket]) -> tuple[int, int]:
    """Bytes of ``lost`` packets, and of those among them that carried a send tag."""
    total = tagged = 0
    for packet in lost:
        total += packet.size
        if packet.tag:
            tagged += packet.size
    return total, tagged


class AckOutcome(NamedTuple):
    acked: list[SentPacket]
    lost: list[SentPacket]
    sample: AckSample


class Recovery:
    """Tracks our ack-eliciting 1-RTT packets until they are acknowledged or lost."""

    def __init__(self, rtt: RttEstimator, peer_max_ack_delay: float) -> None:
        self.rtt = rtt
        self.peer_max_ack_delay = peer_max_ack_delay
        self.sent: dict[int, SentPacket] = {}
        """In flight, oldest first (dicts keep insertion order)."""
        self.holes: list[int] = []
        """Unacknowledged packet numbers below `largest_acked`, ascending."""
        self.largest_acked = -1
        self.bytes_in_flight = 0
        self.last_ack_eliciting_time = 0.0
        self.pto_count = 0
        self.loss_time: float | None = None
        self.delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self.app_limited_until = 0
        """While nonzero, samples are app-limited; cleared once this much is delivered."""
        self.delivery_rate = 0.0

    def on_packet_sent(self, packet: SentPacket) -> None:
        now = packet.sent_time
        (packet.delivered, packet.delivered_time, packet.first_sent_time,
         packet.app_limited) = self._delivery_state(now)
        self.sent[packet.packet_number] = packet
        self.bytes_in_flight += packet.size
        self.last_ack_eliciting_time = now

    def on_burst_sent(self, first_pn: int, now: float, size: int,
                      chunks: list[StreamChunk], tag: int) -> None:
        """Packets ``first_pn`` onwards, sent together, of ``size`` bytes and one chunk each:
        `on_packet_sent` for each, with the delivery state (the same for all) read once."""
        delivered, delivered_time, first_sent_time, app_limited = self._delivery_state(now)
        sent = self.sent
        pn = first_pn
        for chunk in chunks:
            sent[pn] = SentPacket(pn, now, size, [chunk], 0, tag, delivered, delivered_time,
                                  first_sent_time, app_limited)
            pn += 1
        self.bytes_in_flight += size * len(chunks)
        self.last_ack_eliciting_time = now

    def _delivery_state(self, now: float) -> tuple[int, float, float, bool]:
        """What a packet sent at ``now`` records for its delivery-rate sample; a flight that
        starts with nothing in flight starts the sample's clocks."""
        if not self.bytes_in_flight:
            self._first_sent_time = self._delivered_time = now
        return (self.delivered, self._delivered_time, self._first_sent_time,
                self.app_limited_until > 0)

    def on_ack(self, ack: AckFrame, now: float) -> AckOutcome:
        """Process an ACK frame; the caller has checked it acknowledges only sent packets."""
        sent = self.sent
        previous = self.largest_acked
        floor = previous + 1
        acked: list[SentPacket] = []
        new_holes: list[int] = []
        above = ack.largest + 1  # low end of the range above the current one
        for low, high in ack.ranges:
            for pn in range(above - 1, max(high, floor) - 1, -1):  # the gap above, downwards
                if pn in sent:
                    new_holes.append(pn)
            if high > floor:
                for pn in range(max(low, floor), high):
                    packet = sent.pop(pn, None)
                    if packet is not None:
                        acked.append(packet)
            if low < floor and self.holes:
                self._ack_holes(low, min(high, floor), acked)
            above = low
        for pn in range(above - 1, floor - 1, -1):
            if pn in sent:
                new_holes.append(pn)
        new_holes.reverse()
        self.holes.extend(new_holes)
        rtt_sample: float | None = None
        if ack.largest > previous:
            self.largest_acked = ack.largest
        acked_bytes = tagged_acked = 0
        newest: SentPacket | None = None
        if acked:
            self.pto_count = 0
            delivered = self.delivered
            for packet in acked:
                acked_bytes += packet.size
                if packet.tag:
                    tagged_acked += packet.size
                if newest is None or packet.packet_number > newest.packet_number:
                    newest = packet
            assert newest is not None
            self.delivered = delivered + acked_bytes
            self._delivered_time = now
            self._first_sent_time = newest.sent_time
            self.bytes_in_flight -= acked_bytes
            if newest.packet_number == ack.largest:
                latest = now - newest.sent_time
                ack_delay = min(ack.delay, self.peer_max_ack_delay)
                self.rtt.update(latest, ack_delay)
                # The controller sees the path, not the peer's ACK timer.
                rtt_sample = max(latest - ack_delay, self.rtt.min)
        lost = self.detect_lost(now)
        lost_bytes, tagged_lost = lost_sizes(lost)
        sample = self._sample(
            newest, (acked_bytes, tagged_acked, lost_bytes, tagged_lost), rtt_sample
        )
        return AckOutcome(acked, lost, sample)

    def _ack_holes(self, low: int, high: int, acked: list[SentPacket]) -> None:
        holes = self.holes
        start = bisect_left(holes, low)
        end = bisect_left(holes, high, start)
        if start == end:
            return
        for pn in holes[start:end]:
            packet = self.sent.pop(pn, None)
            if packet is not None:
                acked.append(packet)
        del holes[start:end]

    def _sample(
        self, newest: SentPacket | None, sizes: tuple[int, int, int, int], rtt: float | None
    ) -> AckSample:
        """The controller's view of one ACK; ``sizes`` are (acked, tagged acked, lost, tagged
        lost) bytes."""
        rate = 0.0
        app_limited = False
        packet_delivered = -1
        if newest is not None:
            packet_delivered = newest.delivered
            app_limited = newest.app_limited
            interval = max(
                newest.sent_time - newest.first_sent_time,
                self._delivered_time - newest.delivered_time,
            )
            if interval >= self.rtt.min > 0:
                rate = (self.delivered - newest.delivered) / interval
                self.delivery_rate = rate
            if self.app_limited_until and self.delivered > self.app_limited_until:
                self.app_limited_until = 0
        return AckSample(
            acked_bytes=sizes[0],
            tagged_acked_bytes=sizes[1],
            lost_bytes=sizes[2],
            tagged_lost_bytes=sizes[3],
            delivered=self.delivered,
            delivery_rate=rate,
            app_limited=app_limited,
            packet_delivered=packet_delivered,
            rtt=rtt,
            min_rtt=self.rtt.min,
            smoothed_rtt=self.rtt.smoothed,
            bytes_in_flight=self.bytes_in_flight,
        )

    def detect_lost(self, now: float) -> list[SentPacket]:
        """Declare holes lost by packet or time threshold; arm `loss_time` for the rest."""
        holes = self.holes
        self.loss_time = None
        if not holes:
            return []
        rtt = self.rtt
        loss_delay = max(K_TIME_THRESHOLD * max(rtt.smoothed, rtt.latest), K_GRANULARITY)
        pn_threshold = self.largest_acked - K_PACKET_THRESHOLD
        sent = self.sent
        lost: list[SentPacket] = []
        count = 0
        for pn in holes:
            packet = sent[pn]
            deadline = packet.sent_time + loss_delay  # the same sum as the timer: no livelock
            if pn > pn_threshold and deadline > now:
                self.loss_time = deadline
                break
            lost.append(sent.pop(pn))
            count += 1
        del holes[:count]
        for packet in lost:
            self.bytes_in_flight -= packet.size
        return lost

    def timer(self) -> float | None:
        """When `on_timer` must run: the loss timer, else the probe timeout."""
        if self.loss_time is not None:
            return self.loss_time
        if not self.sent:
            return None
        interval = self.rtt.pto_interval(self.peer_max_ack_delay)
        return self.last_ack_eliciting_time + interval * (1 << self.pto_count)

    def on_pto(self) -> list[SentPacket]:
        """Probe timeout: give up on the oldest packets so that their data goes out again."""
        self.pto_count += 1
        probes: list[SentPacket] = []
        sent = self.sent
        for pn in list(islice(sent, K_MAX_PROBES)):
            packet = sent.pop(pn)
            self.bytes_in_flight -= packet.size
            probes.append(packet)
        if probes:
            self.holes = [pn for pn in self.holes if pn in sent]
        return probes

    @property
    def persistent_congestion(self) -> bool:
        return self.pto_count >= K_PERSISTENT_CONGESTION_PTOS
