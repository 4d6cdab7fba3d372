"""Control frames owed to the peer: MAX_DATA, DATA_BLOCKED, PING, and PTO probes.

They are never retransmitted as bytes. A packet remembers which of them it carried (the
`CONTROL_*` bits of `recovery.SentPacket.control`); when it is lost, the flag is raised
again and the frame is rebuilt with the values of that moment (the newest flow-control
limit, not the lost one).
"""

from __future__ import annotations

from jetstream.datachannel import wire
from jetstream.datachannel.acks import AckTracker
from jetstream.datachannel.flowcontrol import ReceiveWindow, SendCredit

CONTROL_PING = 1
CONTROL_MAX_DATA = 2
CONTROL_DATA_BLOCKED = 4


class ControlFrames:
    __slots__ = ("ping", "max_data", "data_blocked", "probes")

    def __init__(self) -> None:
        self.ping = False
        self.max_data = False
        self.data_blocked = False
        self.probes = 0
        """Packets still to send for a probe timeout, past the window and the pacer."""

    def pending(self) -> bool:
        return self.ping or self.max_data or self.data_blocked

    def build(
        self,
        now: float,
        acks: AckTracker,
        window: ReceiveWindow,
        credit: SendCredit,
        ping: bool,
    ) -> tuple[list[bytes | memoryview], int]:
        """The frames due now (an ACK whenever one is pending; a PING if ``ping``), and the
        `CONTROL_*` bits of those that must be rebuilt if the packet is lost."""
        parts: list[bytes | memoryview] = []
        control = 0
        if acks.deadline is not None:
            parts.append(acks.build(now))
        if self.max_data:
            parts.append(wire.encode_max_data_frame(window.advance()))
            control |= CONTROL_MAX_DATA
            self.max_data = False
        if self.data_blocked:
            parts.append(wire.encode_data_blocked_frame(credit.limit))
            credit.blocked_at = credit.limit
            control |= CONTROL_DATA_BLOCKED
            self.data_blocked = False
        if self.ping or ping:
            parts.append(wire.PING_FRAME)
            control |= CONTROL_PING
            self.ping = False
        return parts, control

    def on_lost(self, control: int, credit: SendCredit, confirming: bool) -> None:
        """A packet with these `CONTROL_*` bits was lost. A lost PING matters only while
        ``confirming``: the client still proves its keys to the server."""
        if control & CONTROL_MAX_DATA:
            self.max_data = True
        if control & CONTROL_DATA_BLOCKED:
            credit.blocked_at = -1
        if control & CONTROL_PING and confirming:
            self.ping = True
