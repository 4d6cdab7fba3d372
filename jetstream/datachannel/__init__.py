"""The data channel: a sans-IO, encrypted, loss-tolerant UDP transfer protocol.

See docs/protocol.md for the wire format and `connection.Connection` for the driver contract.
"""

from __future__ import annotations

from jetstream.datachannel.config import DataChannelConfig
from jetstream.datachannel.congestion import RatePolicy
from jetstream.datachannel.connection import Connection
from jetstream.datachannel.events import (
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    StreamAcknowledged,
    StreamDataReceived,
    StreamEnded,
)
from jetstream.datachannel.handshake import Role, SessionTicket
from jetstream.datachannel.stats import ConnectionStats
from jetstream.datachannel.wire import ErrorCode, peek_destination_cid, peek_ticket_id

__all__ = [
    "Connection",
    "ConnectionStats",
    "ConnectionTerminated",
    "DataChannelConfig",
    "ErrorCode",
    "Event",
    "HandshakeCompleted",
    "RatePolicy",
    "Role",
    "SessionTicket",
    "StreamAcknowledged",
    "StreamDataReceived",
    "StreamEnded",
    "peek_destination_cid",
    "peek_ticket_id",
]
