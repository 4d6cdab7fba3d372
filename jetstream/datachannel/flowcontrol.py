"""Connection-level flow control over unique stream bytes (docs/protocol.md section 10).

Credit counts each stream byte once, however it is ordered or retransmitted, so a lost packet
never blocks the window (there is no head-of-line blocking: the receiver hands every byte to
the application at once and the application returns credit when it has written it).
"""

from __future__ import annotations

from jetstream.datachannel.wire import ErrorCode
from jetstream.errors import RemoteProtocolError


class SendCredit:
    """How many new stream bytes the peer lets us send."""

    __slots__ = ("limit", "used", "blocked_at")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.blocked_at = -1
        """The limit we last reported in DATA_BLOCKED (report each limit once)."""

    def available(self) -> int:
        return self.limit - self.used

    def on_max_data(self, maximum: int) -> None:
        if maximum > self.limit:
            self.limit = maximum


class ReceiveWindow:
    """How many new stream bytes we let the peer send, moved forward as the app consumes."""

    __slots__ = ("window", "limit", "received", "consumed")

    def __init__(self, window: int) -> None:
        self.window = window
        self.limit = window
        self.received = 0
        self.consumed = 0

    def on_data(self, length: int) -> None:
        self.received += length
        if self.received > self.limit:
            raise RemoteProtocolError(
                "peer exceeded its flow-control credit", close_code=ErrorCode.FLOW_CONTROL_ERROR
            )

    def on_consumed(self, length: int) -> None:
        self.consumed = min(self.consumed + length, self.received)

    def update_due(self) -> bool:
        """A MAX_DATA is worth sending once a quarter of the window has been consumed."""
        return self.consumed + self.window - self.limit >= self.window // 4

    def advance(self) -> int:
        self.limit = self.consumed + self.window
        return self.limit
