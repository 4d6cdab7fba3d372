"""The other end of a handshake, built from the public codecs and key schedule only.

A harness needs to hand a real `Connection` packets that authenticate but carry whatever
the fuzzer chose; a second `Connection` cannot do that (it only sends what it means).
These peers derive the same keys a genuine peer would, so anything they seal is accepted
as authentic and reaches the frame handlers.
"""

from __future__ import annotations

import random

from jetstream.datachannel import DataChannelConfig, SessionTicket, wire
from jetstream.datachannel.crypto import PacketProtection, initial_secrets, next_secret
from jetstream.datachannel.handshake import KeyExchange
from jetstream.datachannel.hello import HelloExchange
from jetstream.datachannel.wire import PacketType
from jetstream.errors import RemoteProtocolError

CONFIG = DataChannelConfig()
AEAD = CONFIG.aead
TICKET = SessionTicket(bytes(range(16)), bytes(range(32, 64)))
PARAMS = wire.TransportParameters(idle_timeout=CONFIG.idle_timeout,
                                  initial_max_data=CONFIG.flow_control_window,
                                  max_datagram_size=CONFIG.max_datagram_size,
                                  max_ack_delay=CONFIG.max_ack_delay)


class OneRtt:
    """1-RTT sealing of one direction, across key phases (phase 1 is the next secret)."""

    def __init__(self, secret: bytes, peer_cid: bytes) -> None:
        self.peer_cid = peer_cid
        self._phases = (PacketProtection(AEAD, secret),
                        PacketProtection(AEAD, next_secret(secret)))

    def seal(self, payload: bytes, packet_number: int, phase: int = 0) -> bytes:
        header = wire.encode_short_header(phase, self.peer_cid, packet_number)
        return header + self._phases[phase].seal(packet_number, header, payload)


class _Peer:
    """What both ends hold before the handshake: a connection id, an ephemeral key, its
    HELLO, and the ticket-derived keys of the handshake packets."""

    def __init__(self, seed: int, ticket: SessionTicket, *, client: bool) -> None:
        rng = random.Random(seed)
        self.ticket = ticket
        self.cid = rng.randbytes(wire.CID_LENGTH)
        self._kex = KeyExchange(ticket, rng.randbytes)
        self.hello = wire.encode_hello_frame(self._kex.public_key, PARAMS)
        c2s, s2c = initial_secrets(ticket.secret, ticket.ticket_id)
        ours, theirs = (c2s, s2c) if client else (s2c, c2s)
        self._send = PacketProtection(AEAD, ours)
        self._receive = PacketProtection(AEAD, theirs)

    def _open(self, datagram: bytes) -> tuple[wire.LongHeader, wire.HelloFrame] | None:
        """The header and HELLO of the other end's handshake packet (None if it is not
        one that carries a HELLO)."""
        try:
            header = wire.decode_long_header(datagram)
        except RemoteProtocolError:
            return None
        plaintext = self._receive.open(header.truncated_pn, datagram[:header.size],
                                       datagram[header.size:])
        if plaintext is None:
            return None
        hello = HelloExchange.read(plaintext)
        return (header, hello) if isinstance(hello, wire.HelloFrame) else None


class FakeClient(_Peer):
    """A client holding `TICKET`: seals INITIALs, then 1-RTT packets once the server's
    HANDSHAKE is read."""

    def __init__(self, seed: int = 1, ticket: SessionTicket = TICKET) -> None:
        super().__init__(seed, ticket, client=True)

    def initial(self, frames: bytes, packet_number: int, destination_cid: bytes, *,
                pad: bool = True, version: int | None = None,
                ticket_id: bytes | None = None) -> bytes:
        header = wire.encode_long_header(
            PacketType.INITIAL, self.ticket.version if version is None else version,
            destination_cid, self.cid, packet_number,
            self.ticket.ticket_id if ticket_id is None else ticket_id)
        if pad:
            room = wire.MIN_INITIAL_DATAGRAM_SIZE - len(header) - len(frames)
            frames += bytes(max(room - wire.AEAD_TAG_LENGTH, 0))
        return header + self._send.seal(packet_number, header, frames)

    def finish(self, handshake: bytes) -> OneRtt | None:
        """The client-to-server 1-RTT sealer, from the server's HANDSHAKE (None if it is
        not one that carries a HELLO)."""
        opened = self._open(handshake)
        if opened is None or opened[0].packet_type is not PacketType.HANDSHAKE:
            return None
        header, hello = opened
        server_hello = wire.encode_hello_frame(hello.public_key, hello.params)
        c2s, _s2c = self._kex.traffic_secrets(hello.public_key, self.cid, header.source_cid,
                                             self.hello, server_hello)
        return OneRtt(c2s, header.source_cid)


class FakeServer(_Peer):
    """A server that issued `TICKET`: reads a client's INITIAL and answers HANDSHAKEs."""

    def __init__(self, seed: int = 2, ticket: SessionTicket = TICKET) -> None:
        super().__init__(seed, ticket, client=False)
        self.client_cid = b""

    def accept(self, initial: bytes) -> OneRtt:
        """The server-to-client 1-RTT sealer, from the client's genuine INITIAL."""
        opened = self._open(initial)
        assert opened is not None, "not an INITIAL of this ticket"
        header, hello = opened
        self.client_cid = header.source_cid
        client_hello = wire.encode_hello_frame(hello.public_key, hello.params)
        _c2s, s2c = self._kex.traffic_secrets(hello.public_key, header.source_cid, self.cid,
                                             client_hello, self.hello)
        return OneRtt(s2c, header.source_cid)

    def handshake(self, frames: bytes, packet_number: int, *,
                  destination_cid: bytes | None = None, version: int | None = None) -> bytes:
        header = wire.encode_long_header(
            PacketType.HANDSHAKE, self.ticket.version if version is None else version,
            self.client_cid if destination_cid is None else destination_cid, self.cid,
            packet_number)
        return header + self._send.seal(packet_number, header, frames)
