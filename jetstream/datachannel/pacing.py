"""Token-bucket pacer: spreads packets at the controller's rate without sleeping per packet.

The bucket holds at most one quantum (the driver's timer granularity, 1 ms by default) of
data, so a driver that wakes up late sends a small burst and never a flood, and a driver that
batches (GSO) gets batches of useful size (performance.md 2.4: pacing must not shrink
batches to one or two packets).
"""

from __future__ import annotations


class Pacer:
    __slots__ = ("rate", "_quantum", "_min_burst", "_capacity", "tokens", "_last")

    def __init__(self, quantum: float, max_datagram_size: int) -> None:
        self._quantum = quantum
        self._min_burst = 2 * max_datagram_size
        self.rate = 0.0
        self._capacity = float(self._min_burst)
        self.tokens = float(self._min_burst)
        self._last = 0.0

    def set_rate(self, rate: float) -> None:
        """Bytes per second; the burst allowance follows the rate."""
        self.rate = rate
        self._capacity = max(self._min_burst, rate * self._quantum)

    def refill(self, now: float) -> float:
        """Add the tokens earned since the last refill; return the bytes that may go now.

        A sender loop with one ``now`` refills once, then spends `tokens` itself (one byte
        of slack, ``tokens > -1.0``, absorbs float rounding).
        """
        tokens = self.tokens + (now - self._last) * self.rate
        self.tokens = tokens = tokens if tokens < self._capacity else self._capacity
        self._last = now
        return tokens

    def can_send(self, now: float) -> bool:
        return self.refill(now) > -1.0  # one byte of slack absorbs float rounding

    def on_sent(self, size: int) -> None:
        self.tokens -= size

    def next_send_time(self) -> float:
        """When the bucket is full again (valid right after `can_send` returned false).

        Waking up only then makes each wake-up release a quantum's worth of packets, one
        batch for the driver, instead of one packet per timer.
        """
        return self._last + (self._capacity - self.tokens) / self.rate
