"""Events a `Connection` reports through `next_event()` (immutable: frozen dataclasses, and
a named tuple for the per-packet `StreamDataReceived`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """1-RTT keys are in place: stream data may flow (client: HANDSHAKE received;
    server: the first authentic 1-RTT packet arrived)."""

    idle_timeout: float
    """The negotiated idle timeout in seconds."""


class StreamDataReceived(NamedTuple):
    """New bytes of a stream, each byte reported exactly once, in any order.

    Return the flow-control credit with `Connection.data_consumed(len(data))` once the bytes
    are written (or otherwise disposed of). One is made per data packet, or per run of
    packets that continue each other in one receive batch, so it is an (immutable) named
    tuple: building one costs half of a frozen dataclass.
    """

    stream_id: int
    offset: int
    data: bytes | memoryview
    """Immutable bytes, or a read-only view of them; valid after the event is dropped."""


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """Every byte of ``[0, final_size)`` of the stream has been reported (or was declared
    present with `Connection.resume_stream`); the stream is complete."""

    stream_id: int
    final_size: int


@dataclass(frozen=True, slots=True)
class StreamAcknowledged:
    """The peer acknowledged every byte queued for this stream and its end: the sender may
    release the file."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over. The driver keeps calling `datagrams_to_send` and `handle_timer`
    until `Connection.is_closed` (at most a few PTOs, to repeat our CLOSE)."""

    error_code: int
    """`wire.ErrorCode` (or an application code >= 0x100)."""
    reason: str
    by_peer: bool
    """True if the peer sent CLOSE; False for a local close, an error we detected or a timeout."""


Event = (
    HandshakeCompleted
    | StreamDataReceived
    | StreamEnded
    | StreamAcknowledged
    | ConnectionTerminated
)
