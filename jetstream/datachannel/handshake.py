"""The connection state machine and the ticket-bound X25519 key exchange.

Theory of operation (in the manner of h11's ``_state.py``):

* Rule 1: every state change of a connection is a row of `TRANSITIONS`; `Connection` never
  assigns a state itself, it reports a `Trigger` and gets the new state (or an error).
* Rule 2: this module does not send or receive; it only says where the connection is and
  computes the key material. Packet handling lives in `connection.py`.

Flow (docs/protocol.md section 5): the control plane gives the client a one-time
`SessionTicket` (id + secret) over TLS. The client sends INITIAL (ticket id in clear, HELLO
with its ephemeral X25519 key, sealed with keys derived from the ticket secret). The server
answers HANDSHAKE (its HELLO, sealed the same way) and both derive 1-RTT secrets. The client is
ESTABLISHED on HANDSHAKE; the server on the first authentic 1-RTT packet, which also proves
the client's address (it could only derive those keys by receiving the HANDSHAKE there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from jetstream.datachannel import crypto, wire
from jetstream.errors import LocalProtocolError, RemoteProtocolError


class Role(Enum):
    CLIENT = "client"
    """Holds a session ticket and starts the handshake (usually the sender of files)."""
    SERVER = "server"
    """Issued the ticket through its control API and answers on its UDP port."""


@dataclass(frozen=True)
class SessionTicket:
    """One-time credential the receiver's control API hands to the sender over TLS (gRPC)."""

    ticket_id: bytes
    secret: bytes = field(repr=False)
    version: int = wire.VERSION_1

    def __post_init__(self) -> None:
        if len(self.ticket_id) != wire.TICKET_ID_LENGTH or len(self.secret) != 32:
            raise ValueError("a session ticket has a 16-byte id and a 32-byte secret")

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes]) -> SessionTicket:
        """A fresh ticket; pass ``os.urandom`` (or a seeded source in tests)."""
        return cls(random_bytes(wire.TICKET_ID_LENGTH), random_bytes(32))


class State(Enum):
    START = "start"
    INITIAL_SENT = "initial-sent"
    HANDSHAKE_SENT = "handshake-sent"
    ESTABLISHED = "established"
    CLOSING = "closing"
    CLOSED = "closed"


class Trigger(Enum):
    CONNECT = "connect"
    RECEIVE_INITIAL = "receive-initial"
    RECEIVE_HANDSHAKE = "receive-handshake"
    RECEIVE_1RTT = "receive-1rtt"
    CLOSE = "close"
    PEER_CLOSED = "peer-closed"
    TIMEOUT = "timeout"
    CLOSING_DONE = "closing-done"


_C, _S = Role.CLIENT, Role.SERVER
TRANSITIONS: dict[tuple[Role, State, Trigger], State] = {
    (_C, State.START, Trigger.CONNECT): State.INITIAL_SENT,
    (_C, State.INITIAL_SENT, Trigger.RECEIVE_HANDSHAKE): State.ESTABLISHED,
    (_C, State.ESTABLISHED, Trigger.RECEIVE_HANDSHAKE): State.ESTABLISHED,  # a retransmission
    (_C, State.ESTABLISHED, Trigger.RECEIVE_1RTT): State.ESTABLISHED,
    (_S, State.START, Trigger.RECEIVE_INITIAL): State.HANDSHAKE_SENT,
    (_S, State.HANDSHAKE_SENT, Trigger.RECEIVE_INITIAL): State.HANDSHAKE_SENT,  # resend reply
    (_S, State.HANDSHAKE_SENT, Trigger.RECEIVE_1RTT): State.ESTABLISHED,
    (_S, State.ESTABLISHED, Trigger.RECEIVE_1RTT): State.ESTABLISHED,
    (_S, State.ESTABLISHED, Trigger.RECEIVE_INITIAL): State.ESTABLISHED,  # late duplicate
}
for _role in Role:
    for _state in (State.START, State.INITIAL_SENT, State.HANDSHAKE_SENT, State.ESTABLISHED):
        TRANSITIONS[(_role, _state, Trigger.CLOSE)] = State.CLOSING
        TRANSITIONS[(_role, _state, Trigger.PEER_CLOSED)] = State.CLOSED
        TRANSITIONS[(_role, _state, Trigger.TIMEOUT)] = State.CLOSED
    TRANSITIONS[(_role, State.CLOSING, Trigger.CLOSING_DONE)] = State.CLOSED
    TRANSITIONS[(_role, State.CLOSING, Trigger.PEER_CLOSED)] = State.CLOSED
    TRANSITIONS[(_role, State.CLOSING, Trigger.TIMEOUT)] = State.CLOSED

LOCAL_TRIGGERS = frozenset({Trigger.CONNECT, Trigger.CLOSE})
"""Triggers caused by our own API calls: an illegal one is our bug, not the peer's."""


def next_state(role: Role, state: State, trigger: Trigger) -> State:
    """The state after ``trigger``; raises the error that names who broke the protocol."""
    try:
        return TRANSITIONS[(role, state, trigger)]
    except KeyError:
        message = f"{trigger.value} is not allowed for a {role.value} in state {state.value}"
        if trigger in LOCAL_TRIGGERS:
            raise LocalProtocolError(message) from None
        raise RemoteProtocolError(message, close_code=wire.ErrorCode.PROTOCOL_VIOLATION) from None


class KeyExchange:
    """One side's ephemeral X25519 key and the transcript both HELLOs are bound into."""

    __slots__ = ("_private", "public_key", "_ticket")

    def __init__(self, ticket: SessionTicket, random_bytes: Callable[[int], bytes]) -> None:
        self._ticket = ticket
        self._private = X25519PrivateKey.from_private_bytes(random_bytes(32))
        self.public_key = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def traffic_secrets(
        self,
        peer_public_key: bytes,
        client_cid: bytes,
        server_cid: bytes,
        client_hello: bytes,
        server_hello: bytes,
    ) -> tuple[bytes, bytes]:
        """(client-to-server, server-to-client) 1-RTT secrets; fails on a low-order key."""
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
        except ValueError:  # all-zero shared secret: a low-order point
            raise RemoteProtocolError(
                "invalid X25519 public key", close_code=wire.ErrorCode.HANDSHAKE_FAILURE
            ) from None
        transcript = hashlib.sha256(
            b"".join(
                (
                    self._ticket.version.to_bytes(4, "big"),
                    self._ticket.ticket_id,
                    client_cid,
                    server_cid,
                    client_hello,
                    server_hello,
                )
            )
        ).digest()
        return crypto.traffic_secrets(self._ticket.secret, shared, transcript)

    def __repr__(self) -> str:
        return "KeyExchange(<private key>)"
