"""Receiver side of acknowledgement: which packets arrived, replay detection, ACK timing.

ACKs are sent after `ack_every` ack-eliciting packets or `max_ack_delay` after the first
unacknowledged one, whichever comes first, and carry at most `max_ack_ranges` ranges, newest
first. A range drops out of ACK frames as newer ones appear; by then the sender has had
many ACKs covering it, and if all were lost it retransmits (the receiver drops the
duplicate data). Received ranges beyond `max_tracked_ranges` are forgotten from the bottom:
packets below the forgotten range count as replays, which bounds memory under any loss.
"""

from __future__ import annotations

from jetstream.datachannel.native import FAST
from jetstream.datachannel.rangeset import RangeSet
from jetstream.datachannel.wire import encode_ack_frame

_NATIVE_ACK = FAST is not None


class AckTracker:
    __slots__ = (
        "received",
        "largest",
        "_largest_time",
        "floor",
        "_unacked",
        "deadline",
        "_ack_every",
        "_max_ack_delay",
        "_max_ranges",
        "_max_tracked",
    )

    def __init__(
        self, *, ack_every: int, max_ack_delay: float, max_ranges: int, max_tracked: int
    ) -> None:
        self.received = RangeSet()
        self.largest = -1
        self._largest_time = 0.0
        self.floor = 0
        """Packet numbers below this are no longer tracked and count as replays."""
        self._unacked = 0
        """Ack-eliciting packets received since our last ACK."""
        self.deadline: float | None = None
        self._ack_every = ack_every
        self._max_ack_delay = max_ack_delay
        self._max_ranges = max_ranges
        self._max_tracked = max_tracked

    def is_duplicate(self, packet_number: int) -> bool:
        """Seen before, or too old to tell: drop it (checked before decryption, cheaply)."""
        if packet_number > self.largest:
            return False
        return packet_number < self.floor or packet_number in self.received

    def on_packet(self, packet_number: int, ack_eliciting: bool, now: float) -> None:
        """Record an authentic packet (after `is_duplicate` returned False)."""
        self.received.add_one(packet_number)
        self.on_run(packet_number, 1 if ack_eliciting else 0, now)

    def on_run(self, largest: int, ack_eliciting: int, now: float) -> None:
        """Account for authentic packets already added to `received` (a receive run):
        the largest of them and how many were ack-eliciting."""
        received = self.received
        while len(received) > self._max_tracked:
            self.floor = received.pop_first()[1]
        if largest > self.largest:
            self.largest = largest
            self._largest_time = now
        if ack_eliciting:
            self._unacked += ack_eliciting
            if self.deadline is None:
                self.deadline = now + self._max_ack_delay

    def ack_due(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and (self._unacked >= self._ack_every or now >= deadline)

    def has_unacked(self) -> bool:
        """Something ack-eliciting waits for an ACK (worth piggybacking one)."""
        return self.deadline is not None

    def build(self, now: float) -> bytes:
        """The ACK frame to send now; resets the ACK timer."""
        self._unacked = 0
        self.deadline = None
        delay = max(now - self._largest_time, 0.0)
        if _NATIVE_ACK:  # the same bytes as encode_ack_frame, straight from the ranges
            return self.received.encode_ack(self._max_ranges, int(delay * 1e6))  # type: ignore[attr-defined,no-any-return]
        return encode_ack_frame(self.received.descending(self._max_ranges), delay)
