"""INITIAL and HANDSHAKE packets: their ticket-derived protection and the HELLO exchange.

The client's INITIAL and the server's HANDSHAKE each carry one HELLO frame (ephemeral
X25519 key and transport parameters), sealed with keys derived from the session ticket, so
that nobody without the ticket gets any answer. Each side resends its packet unchanged (new
packet number) until the handshake moves on; `Connection` decides when, from the table in
`handshake.py`.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from jetstream.datachannel import wire
from jetstream.datachannel.acks import AckTracker
from jetstream.datachannel.crypto import PacketProtection, initial_secrets
from jetstream.datachannel.handshake import KeyExchange, Role, SessionTicket
from jetstream.datachannel.stats import Rejection
from jetstream.datachannel.wire import ErrorCode, PacketType
from jetstream.errors import RemoteProtocolError

MAX_RETRY_BACKOFF = 1 << 6


class Opened(NamedTuple):
    header: wire.LongHeader
    packet_number: int
    plaintext: bytes


class HelloExchange:
    """Our side of the handshake packets; the secrets it derives go to `crypto.SendKeys`."""

    def __init__(
        self,
        *,
        aead: str,
        role: Role,
        ticket: SessionTicket,
        rng: random.Random,
        params: wire.TransportParameters,
    ) -> None:
        self._role = role
        self._ticket = ticket
        self.local_cid = rng.randbytes(wire.CID_LENGTH)
        self.peer_cid = rng.randbytes(wire.CID_LENGTH)
        """Random until the peer's first packet tells us its connection id."""
        self._kex = KeyExchange(ticket, rng.randbytes)
        self.hello = wire.encode_hello_frame(self._kex.public_key, params)
        self._peer_hello = b""
        c2s, s2c = initial_secrets(ticket.secret, ticket.ticket_id)
        ours, theirs = (c2s, s2c) if role is Role.CLIENT else (s2c, c2s)
        self._send: PacketProtection | None = PacketProtection(aead, ours)
        self._receive: PacketProtection | None = PacketProtection(aead, theirs)
        self._type = PacketType.INITIAL if role is Role.CLIENT else PacketType.HANDSHAKE
        self._peer_type = PacketType.HANDSHAKE if role is Role.CLIENT else PacketType.INITIAL
        self.sends = 0
        self.retry_at: float | None = None
        self.due = False
        """Our INITIAL/HANDSHAKE should go out with the next `datagrams_to_send`."""

    @property
    def can_send(self) -> bool:
        return self._send is not None

    def open(self, data: bytes | memoryview, acks: AckTracker) -> Opened | Rejection:
        """Authenticate a long-header packet of the peer (not yet recorded in ``acks``)."""
        protection = self._receive
        try:
            header = wire.decode_long_header(data)
        except RemoteProtocolError:
            return Rejection.MALFORMED
        if (
            protection is None
            or header.packet_type is not self._peer_type
            or header.version != self._ticket.version
            or (self._type is PacketType.HANDSHAKE and header.ticket_id != self._ticket.ticket_id)
            or (self._type is PacketType.HANDSHAKE and len(data) < wire.MIN_INITIAL_DATAGRAM_SIZE)
            or (self._type is PacketType.INITIAL and header.destination_cid != self.local_cid)
        ):
            return Rejection.MALFORMED
        pn = wire.decode_packet_number(header.truncated_pn, acks.largest)
        if acks.is_duplicate(pn):
            return Rejection.REPLAY
        view = memoryview(data)
        plaintext = protection.open(pn, view[: header.size], view[header.size :])
        if plaintext is None:
            return Rejection.AUTH
        return Opened(header, pn, plaintext)

    @staticmethod
    def read(plaintext: bytes) -> wire.HelloFrame | wire.CloseFrame:
        """The HELLO (or CLOSE) of an authentic handshake packet; anything else is an error."""
        hello: wire.HelloFrame | None = None
        for frame in wire.decode_frames(plaintext):
            if isinstance(frame, wire.CloseFrame):
                return frame
            if isinstance(frame, wire.HelloFrame) and hello is None:
                hello = frame
            elif not isinstance(frame, wire.PaddingFrame):
                break
        else:
            if hello is not None:
                return hello
        raise RemoteProtocolError(
            "a handshake packet carries one HELLO and padding",
            close_code=ErrorCode.PROTOCOL_VIOLATION,
        )

    def accept(self, header: wire.LongHeader, hello: wire.HelloFrame) -> tuple[bytes, bytes] | None:
        """(send, receive) 1-RTT secrets for the peer's first HELLO; None for any later one."""
        if self._peer_hello:
            return None
        raw = wire.encode_hello_frame(hello.public_key, hello.params)
        self._peer_hello = raw
        self.peer_cid = header.source_cid
        if self._role is Role.CLIENT:
            c2s, s2c = self._kex.traffic_secrets(
                hello.public_key, self.local_cid, self.peer_cid, self.hello, raw
            )
            return c2s, s2c
        c2s, s2c = self._kex.traffic_secrets(
            hello.public_key, self.peer_cid, self.local_cid, raw, self.hello
        )
        return s2c, c2s

    def is_repeat(self, hello: wire.HelloFrame) -> bool:
        """The peer resent the HELLO we accepted (not another attempt with the same ticket)."""
        return wire.encode_hello_frame(hello.public_key, hello.params) == self._peer_hello

    def seal(self, frames: bytes, packet_number: int) -> bytes:
        """A long-header packet of our type; an INITIAL is padded to 1200 bytes."""
        protection = self._send
        if protection is None:
            raise AssertionError("handshake keys were discarded")
        ticket_id = self._ticket.ticket_id if self._type is PacketType.INITIAL else b""
        header = wire.encode_long_header(
            self._type,
            self._ticket.version,
            self.peer_cid,
            self.local_cid,
            packet_number,
            ticket_id,
        )
        if self._type is PacketType.INITIAL:
            padding = wire.MIN_INITIAL_DATAGRAM_SIZE - len(header) - len(frames)
            frames += bytes(max(padding - wire.AEAD_TAG_LENGTH, 0))
        return header + protection.seal(packet_number, header, frames)

    def on_sent(self, now: float, pto: float) -> None:
        """Our INITIAL/HANDSHAKE left: resend it after a PTO, doubling each time."""
        self.sends += 1
        self.due = False
        self.retry_at = now + pto * min(1 << (self.sends - 1), MAX_RETRY_BACKOFF)

    def finish(self) -> None:
        """The handshake is over: stop resending, forget the ticket-derived keys."""
        self.due = False
        self.retry_at = None
        self._send = self._receive = None

    def __repr__(self) -> str:
        return f"HelloExchange({self._role.value}, sends={self.sends}, <keys>)"
