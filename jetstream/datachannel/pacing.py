"""Token-bucket pacer: spreads packets at the controller's rate without sleeping per packet.

The driver is woken when one quantum (its timer granularity, 1 ms by default) of data is due,
so that a driver that batches (GSO) gets batches of useful size (performance.md 2.4: pacing
must not shrink batches to one or two packets). The bucket holds one quantum, plus what a
late wake-up missed: an event loop's timers fire up to a millisecond late (epoll rounds up,
other work runs first), and forfeiting that time would send below the rate. The catch-up is
bounded (`MAX_LATE_QUANTA`), so a driver that stalled never floods the path.
"""

from __future__ import annotations

MAX_LATE_QUANTA = 2


class Pacer:
    __slots__ = ("rate", "_quantum", "_min_burst", "_capacity", "tokens", "_last", "_due")

    def __init__(self, quantum: float, max_datagram_size: int) -> None:
        self._quantum = quantum
        self._min_burst = 2 * max_datagram_size
        self.rate = 0.0
        self._capacity = float(self._min_burst)
        self.tokens = float(self._min_burst)
        self._last = 0.0
        self._due: float | None = None
        """When the driver was asked to come back (`next_send_time`), until it came."""

    def set_rate(self, rate: float) -> None:
        """Bytes per second; the burst allowance follows the rate."""
        self.rate = rate
        self._capacity = max(self._min_burst, rate * self._quantum)

    def refill(self, now: float) -> float:
        """Add the tokens earned since the last refill; return the bytes that may go now.

        A sender loop with one ``now`` refills once, then spends `tokens` itself (one byte
        of slack, ``tokens > -1.0``, absorbs float rounding).
        """
        capacity = self._capacity
        if self._due is not None:
            late = now - self._due
            if late > 0:
                capacity += min(late, MAX_LATE_QUANTA * self._quantum) * self.rate
            self._due = None
        tokens = self.tokens
        if tokens < capacity:  # a late wake-up's grant is kept until spent
            tokens += (now - self._last) * self.rate
            self.tokens = tokens = tokens if tokens < capacity else capacity
        self._last = now
        return tokens

    def can_send(self, now: float) -> bool:
        return self.refill(now) > -1.0  # one byte of slack absorbs float rounding

    def on_sent(self, size: int) -> None:
        self.tokens -= size

    def next_send_time(self) -> float:
        """When a quantum is due (valid right after `can_send` returned false).

        Waking up only then makes each wake-up release a quantum's worth of packets, one
        batch for the driver, instead of one packet per timer.
        """
        self._due = due = self._last + (self._capacity - self.tokens) / self.rate
        return due
